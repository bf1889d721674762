"""Demo datasets shaped like the seeds' systems, created in the embedded PostgreSQL."""

from . import telemetry

DATASETS = {"telemetry": telemetry}
