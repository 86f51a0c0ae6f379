"""ORCH's Prefect flows, one module per flow; each is a deployment entrypoint in ``prefect.yaml``."""
