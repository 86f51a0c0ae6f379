"""The two work pools ORCH's worker process serves (names only: the supervisor imports this).

- ``orch-process``: Prefect's process worker, a new Python process per flow run (backups, scans,
  reports: long, heavy or rare runs that should not share the worker's memory).
- ``orch-inprocess``: ORCH's in-process worker (:mod:`orch.stack.inprocess`), a thread of the worker
  process per flow run (the monitoring sweep every interval, and self-healing, where a process start
  per run would cost more than the run).
"""

PROCESS_POOL = "orch-process"
INPROCESS_POOL = "orch-inprocess"
