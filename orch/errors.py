"""The one exception tree: every error a user can cause and fix, each class with the HTTP status it answers.

Every such error's ``str()`` is one line naming the cause, so entry points can print it as
``error: <line>`` and exit non-zero without importing the module that raised it (the CLI and the
stack supervisor stay light: catching a storage error must not cost importing SQLAlchemy, so this
module imports nothing of ORCH's). The API answers one with its class's ``status_code``, ``{"detail":
<the line>}`` (:meth:`OrchError.http_body`) and its headers (:meth:`OrchError.http_headers`: a
``Retry-After`` when ``retry_after`` is set, a 401's ``WWW-Authenticate``); ``orch/api/errors.py`` reads
nothing else, so a route raises the domain's own exception and never chooses a status itself.

The tree, each class with its status and the module that defines it (a test keeps this list and the
classes in step). A status only matters where the API can meet the error; CLI-only errors inherit theirs.

* OrchError 400 (orch.errors; also raised bare, e.g. maintenance mode's over-long reason)
  * ConfigError 400 (orch.config.errors)
  * StorageError 503, Retry-After 5, detail "database unavailable: ..." (orch.storage.engine)
    * DatabaseCorrupt 503, Retry-After 300: it waits for an operator's restore, not a busy moment
  * DispatchError 400 (orch.dispatch.errors)
    * InvalidRequest 422, body adds ``errors``: one line per problem, with its field
      * InvalidTask 422
    * QueueFull 429, Retry-After ``dispatch.retry_after_seconds``
    * TaskNotFound 404
    * InvalidTransition 409
      * NotReserved 409 (orch.dispatch.reservations)
    * UnknownCore 404 (orch.dispatch.reservations)
    * IsolationNeedsAdmin 403 (orch.dispatch.reservations)
    * LockTimeout 409 (orch.dispatch.locks)
    * LockNotHeld 409 (orch.dispatch.locks)
  * ActionFailed 502: a task's action ran and failed (orch.dispatch.actions)
  * NotPermitted 403 (orch.security.flow_access)
  * UserError 422, also a ValueError (orch.security.users)
    * UserExists 409 (orch.security.users)
    * UnknownUser 404 (orch.security.user_changes)
  * TokenError 401, WWW-Authenticate (orch.security.tokens)
  * LoginFailed 401, WWW-Authenticate (orch.security.login)
  * LoginThrottled 429, Retry-After: this address's wait (orch.security.login)
  * SignatureError 401 (orch.security.webhook_signature)
  * PrefectUnavailable 503 (orch.prefect_api)
  * UnknownTarget 404 (orch.monitoring.targets)
  * TargetActionFailed 502: a healing action could not be carried out (orch.monitoring.target_actions)
  * SilenceError 422 (orch.monitoring.silences)
    * SilenceNotFound 404
  * HealRunNotFound 404 (orch.monitoring.healing)
  * NotAwaitingApproval 409 (orch.monitoring.healing)
  * ForcedByEnvironment 409 (orch.maintenance_mode)
  * BackupError 409 (orch.backup.files)
    * BackupVerificationFailed 409: a verdict on the file (orch.backup.files)
    * LockUnavailable 503 (orch.backup.guard)
    * InvalidBackupName 422 (orch.backup.catalog_view)
    * BackupNotFound 404 (orch.backup.catalog_view)
  * SupplyChainError 400 (orch.supply_chain.errors)
    * VerificationFailed 400: the SBOM does not match its signature
  * LogSourceError 400 (orch.analysis.jsonlogs)
    * LogPathRefused 400
  * PreflightError 400 (orch.stack.preflight)
  * StackError 400 (orch.stack.up)
  * RefusedEntrypoint 400 (orch.stack.inprocess)
  * TemplateUnusable 400 (orch.stack.prefect_template)

Not in the tree, on purpose: the console's control flow (``LoginRedirect``, ``PageRefused``,
``CsrfRefused``: a redirect or an HTML page, not an error body), the flows' own failures (``flows/``:
they fail a Prefect run) and bugs (anything else answers 500 and is logged with its traceback).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class OrchError(Exception):
    """A problem the operator or caller can act on; never a bug in ORCH."""

    status_code: ClassVar[int] = 400
    headers: ClassVar[Mapping[str, str]] = {}  # sent with every answer of the class (a 401's challenge)
    retry_after: int | None = None  # seconds: sent as Retry-After; a class's default or one instance's wait

    def http_body(self) -> dict[str, Any]:
        """The API's JSON body: the one line as ``detail``; a subclass adds what a client acts on."""
        return {"detail": str(self)}

    def http_headers(self) -> dict[str, str]:
        """The API's headers for this error: the class's own, and ``Retry-After`` when there is a wait."""
        if self.retry_after is None:
            return dict(self.headers)
        return {**self.headers, "Retry-After": str(self.retry_after)}
