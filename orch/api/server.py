"""Run the API under uvicorn with ORCH's logging: ``python -m orch.api.server``.

With ``api.tls_cert_file`` and ``api.tls_key_file`` it serves HTTPS with TLS 1.2 or newer and the
guide's cipher list; the context is adjusted after uvicorn builds it because uvicorn has no option
for the minimum protocol version.
"""

from __future__ import annotations

import logging
import ssl
import sys

TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"


def main() -> int:
    import uvicorn

    from orch.api.app import create_app
    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging

    settings = get_settings()
    configure_process_logging(settings, write_file=True)
    # The logging HOWTO's optimisation: no caller lookup (a stack walk per record) for fields that no
    # ORCH format prints; the API writes a line per request.
    logging._srcfile = None
    api = settings.api
    config = uvicorn.Config(create_app(settings), host=api.host, port=api.port, log_config=None,
                            server_header=False, timeout_graceful_shutdown=5, backlog=4096,
                            ssl_certfile=api.tls_cert_file, ssl_keyfile=api.tls_key_file,
                            ssl_ciphers=TLS_CIPHERS)
    config.load()
    if config.ssl is not None:
        config.ssl.minimum_version = ssl.TLSVersion.TLSv1_2
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
