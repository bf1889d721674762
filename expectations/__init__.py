"""Great Expectations suites (JSON, one pair per phase kind) and the runner that turns a
checkpoint result into a gate verdict. Imported lazily: GE takes seconds to import."""
