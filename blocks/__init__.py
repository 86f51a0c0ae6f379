"""Prefect blocks ORCH creates on its server, and their registration (:mod:`.register`)."""
