"""Demo datasets shaped like the seeds' systems, created in the embedded PostgreSQL."""

from . import breezeway, folders, nes, orders, telemetry

DATASETS = {"telemetry": telemetry, "orders": orders, "nes": nes, "breezeway": breezeway, "folders": folders}
