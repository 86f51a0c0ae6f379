"""Run the API under uvicorn with ORCH's logging: ``python -m orch.api.server``.

With ``api.tls_cert_file`` and ``api.tls_key_file`` it serves HTTPS with TLS 1.2 or newer and the
guide's cipher list; the context is adjusted after uvicorn builds it because uvicorn has no option
for the minimum protocol version.

With ``api.workers`` above 1 (the guide's ``uvicorn --workers``) this process binds the port and
supervises that many worker processes, each building the app with :func:`worker_app`; one Python
process serves about one core, so a host with more cores serves more with more workers. What the
workers share goes through the database and Redis (rate limit), Prometheus' multiprocess files
(``/metrics``) and one append-only log file.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import ssl
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from orch.api.protocol import DEFAULT_MAX_HEADERS, bounded_protocol

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orch.config.schema import Settings

TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"


class OrchUvicornConfig(uvicorn.Config):
    """uvicorn's configuration, plus the TLS floor and the header-count limit (read by
    :mod:`orch.api.protocol`), in this process or in every worker process."""

    def __init__(self, app: Any, *, max_headers: int = DEFAULT_MAX_HEADERS, **options: Any) -> None:
        super().__init__(app, **options)
        self.max_headers = max_headers

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


def _configure_logging(settings: Settings, shared_file: bool) -> None:
    from orch.logging_config import configure_process_logging

    configure_process_logging(settings, write_file=True, shared_file=shared_file)
    # The logging HOWTO's optimisation: no caller lookup (a stack walk per record) for fields that no
    # ORCH format prints; the API writes a line per request.
    logging._srcfile = None


def _built(settings: Settings) -> FastAPI:
    """The app, with everything imported and built so far moved out of the garbage collector's sight.

    The full collections a busy API triggers every few seconds otherwise walk the ~120,000 objects
    of FastAPI, pydantic and SQLAlchemy each time: measured, 105 ms pauses (every request waits)
    against 9 ms after :func:`gc.freeze`. Nothing built at start-up is garbage, so nothing is lost.
    """
    from orch.api.app import create_app

    app = create_app(settings)
    gc.collect()
    gc.freeze()
    return app


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls it in each worker when ``api.workers`` > 1)."""
    from orch.config.runtime import get_settings

    settings = get_settings()
    _configure_logging(settings, shared_file=True)
    return _built(settings)


def _multiprocess_dir(settings: Settings) -> str:
    """A fresh directory for the workers' Prometheus files: values left by an earlier run would be
    added to this one's."""
    path = Path(settings.data_dir) / "prometheus-multiproc" / str(settings.api.port)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options every ORCH API process runs with (the tests' real servers use them too).

    ``http`` is uvicorn's own protocol with a bound on the request head (:mod:`orch.api.protocol`).
    ``proxy_headers`` is off because the app itself applies ``api.forwarded_allow_ips``
    (:func:`orch.api.app.create_app`): uvicorn's default would trust ``X-Forwarded-For`` from
    127.0.0.1, i.e. from any local client, and the in-process test client would behave differently.
    """
    api = settings.api
    return dict(host=api.host, port=api.port, log_config=None, server_header=False,
                timeout_graceful_shutdown=5, backlog=4096, ssl_certfile=api.tls_cert_file,
                ssl_keyfile=api.tls_key_file, ssl_ciphers=TLS_CIPHERS, proxy_headers=False,
                http=bounded_protocol(), h11_max_incomplete_event_size=api.max_header_bytes,
                max_headers=api.max_headers)


def main() -> int:
    from orch.lean_imports import lean_process

    lean_process(prefect=False)
    from orch.api.metrics import MULTIPROC_ENV
    from orch.config.runtime import get_settings

    settings = get_settings()
    api = settings.api
    common = uvicorn_options(settings)
    if api.workers == 1:
        _configure_logging(settings, shared_file=False)
        uvicorn.Server(OrchUvicornConfig(_built(settings), **common)).run()
        return 0
    from uvicorn.supervisors import Multiprocess

    os.environ[MULTIPROC_ENV] = _multiprocess_dir(settings)  # inherited by every worker
    _configure_logging(settings, shared_file=True)
    config = OrchUvicornConfig("orch.api.server:worker_app", factory=True, workers=api.workers, **common)
    Multiprocess(config, sockets=[config.bind_socket()]).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
