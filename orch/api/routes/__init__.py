"""One router module per resource; ``orch.api.app`` includes them."""
