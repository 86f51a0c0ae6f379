"""Code that applies ORCH's Prefect objects to a server: work pool, blocks and ``prefect.yaml``."""
