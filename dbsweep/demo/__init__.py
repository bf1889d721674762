"""Demo datasets shaped like the seeds' systems, created in the embedded PostgreSQL."""

from . import orders, telemetry

DATASETS = {"telemetry": telemetry, "orders": orders}
