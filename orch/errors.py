"""The one base class for errors a user can cause and fix.

Every such error's ``str()`` is one line naming the cause, so entry points can print it as
``error: <line>`` and exit non-zero without importing the module that raised it (the CLI and the
stack supervisor stay light: catching a storage error must not cost importing SQLAlchemy).
"""


class OrchError(Exception):
    """A problem the operator can act on; never a bug in ORCH."""
