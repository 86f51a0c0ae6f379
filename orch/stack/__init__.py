"""The one-command local stack (``orch up``): Prefect server, worker, deployments and the ORCH API."""
