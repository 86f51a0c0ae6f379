"""Command-line interface: ``orch``."""
