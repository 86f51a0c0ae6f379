"""Run the API under uvicorn with ORCH's logging: ``python -m orch.api.server``."""

from __future__ import annotations

import sys


def main() -> int:
    import uvicorn

    from orch.config.runtime import get_settings
    from orch.logging_config import configure_process_logging
    from orch.api.app import create_app

    settings = get_settings()
    configure_process_logging(settings, write_file=True)
    uvicorn.run(create_app(settings), host=settings.api.host, port=settings.api.port,
                log_config=None, server_header=False, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
