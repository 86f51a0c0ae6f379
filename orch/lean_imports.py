"""Optional parts of libraries that ORCH's processes never use, kept from loading.

Three libraries load, on import, an optional part that costs more than everything ORCH does with them:

- **jsonschema's RFC 3987 format checks.** When ``rfc3987_syntax`` is installed (cyclonedx-bom's
  validation extra installs it), importing jsonschema compiles the RFC 3987 grammar into an Earley
  parser: measured on this project's 2-core machine, 1.4-1.6 s of CPU and 17 MB in every process that
  imports Prefect, which imports jsonschema. ORCH's worker paid both on every start. The checks are
  only for the ``iri`` and ``iri-reference`` formats, which no Prefect schema uses and which ORCH's
  SBOM validation checks its own, faster way (:mod:`orch.supply_chain.schema_check`).
- **httpx's command-line client** (``httpx._main``: rich, pygments, click), which httpx imports with
  itself when they are installed (Prefect installs them): 4 MB in the API process, which never runs it.
- **PyJWT's asymmetric algorithms**, for which PyJWT imports cryptography when it is installed (ORCH's
  SBOM signing installs it): 7 MB in the API process. ORCH's tokens are HS256 only
  (:mod:`orch.security.tokens`), so PyJWT is loaded without them, which also leaves nothing in the
  process that could verify a token with a public key.

Each is kept out the way the libraries themselves allow: their import of the optional module is wrapped
in ``except ImportError``, and a ``None`` entry in :data:`sys.modules` makes that import fail. The
jsonschema and PyJWT marks are removed as soon as those libraries have loaded, so ORCH's exact fallback
for the rare URL its regular expression does not accept can still import ``rfc3987_syntax``, and the
SBOM signing code cryptography.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

IRI_GRAMMAR = "rfc3987_syntax"
HTTPX_CLI = "httpx._main"
CRYPTOGRAPHY = "cryptography"


def without_iri_grammar() -> None:
    """Import jsonschema's format checkers without compiling the RFC 3987 grammar (see above).

    For processes that import jsonschema anyway (any that imports Prefect); it imports jsonschema. A
    process that already loaded it (or the grammar) paid the cost already and is left alone.
    """
    if "jsonschema._format" not in sys.modules and IRI_GRAMMAR not in sys.modules:
        _import_without(IRI_GRAMMAR, "jsonschema._format")


def without_httpx_cli() -> None:
    """httpx without its command-line client; before httpx is first imported (later it is too late)."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault(HTTPX_CLI, None)  # type: ignore[arg-type]


def lean_process(*, prefect: bool) -> None:
    """What a long-running ORCH process calls first: ``prefect`` when it will import Prefect."""
    without_httpx_cli()
    if prefect:
        without_iri_grammar()


def jwt_without_cryptography() -> ModuleType:
    """PyJWT, loaded without cryptography unless something in the process already loaded either (see above)."""
    if "jwt" not in sys.modules and CRYPTOGRAPHY not in sys.modules:
        _import_without(CRYPTOGRAPHY, "jwt")
    return importlib.import_module("jwt")


def _import_without(optional: str, module: str) -> None:
    """Import ``module`` while ``optional`` is marked unimportable, then lift the mark: the library's own
    ``except ImportError`` skips its optional part, and later imports of ``optional`` work again."""
    sys.modules[optional] = None  # type: ignore[assignment]
    try:
        importlib.import_module(module)
    finally:
        del sys.modules[optional]
