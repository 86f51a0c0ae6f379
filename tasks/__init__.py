"""The retryable Prefect tasks ORCH's flows are made of, one module per subject."""
