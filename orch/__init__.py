"""ORCH-Next: the domain core shared by the flows, the API and the ``orch`` CLI."""

__version__ = "0.1.0"
