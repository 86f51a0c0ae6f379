"""ORCH's thin HTTP API (FastAPI). Prefect's own API and UI stay Prefect's."""
