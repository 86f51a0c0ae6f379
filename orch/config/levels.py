"""The log level names configuration accepts, in a module without pydantic: the logger setup imports them in
processes that must stay light."""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
