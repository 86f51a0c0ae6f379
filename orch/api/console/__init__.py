"""The operator's console at ``/ui/``: server-rendered pages over the JSON API (issue 16)."""
