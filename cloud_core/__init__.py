"""The cloud core: device registry, telemetry ingest, time-series storage and the REST API."""
