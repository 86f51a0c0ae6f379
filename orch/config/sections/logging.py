"""The ``logging`` section: levels, format, the rotated log file and the audit trail's file."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from orch.config.levels import LOG_LEVELS
from orch.config.sections.base import Section, parse_size


class LoggingSettings(Section):
    """ORCH's logs: one logger setup for every process."""

    level: str = Field(default="INFO", description="Level of ORCH's loggers (ORCH_LOG_LEVEL or LOG_LEVEL "
                       "override it).")
    format: Literal["json", "text"] = Field(default="json", description="json: one JSON object per line; "
                                            "text: `time [LEVEL] logger: message`.")
    file: str | None = Field(default="logs/orch-next.log", description="Empty or null: no log file.")
    audit_file: str | None = Field(default="logs/audit.log", description="Audit trail as JSON lines "
                                   "(beside the database copy); empty or null: database only.")
    max_size: int = Field(default=100 * 1024**2, description="Bytes, or a string such as 100MB.")
    backup_count: int = Field(default=10, ge=0, description="Rotated files kept beside `file`.")
    console_level: str = Field(default="WARNING", description="Level of the stderr copy in a process that "
                               "also writes `file` (the API): a line per request is then written once, to "
                               "the rotated file, while the journal or orch up's api.log keep warnings and "
                               "errors. INFO copies every line to stderr too. Other processes log `level` "
                               "to stderr, their only output.")
    loggers: dict[str, str] = Field(default_factory=lambda: {"uvicorn": "WARNING"},
                                    description="Levels of single loggers by name, e.g. uvicorn.")

    @field_validator("level", "console_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = str(value).upper()
        if upper not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
        return upper

    @field_validator("loggers")
    @classmethod
    def _module_levels(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, level in value.items():
            upper = str(level).upper()
            if upper not in LOG_LEVELS:
                raise ValueError(f"{name}: must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
            out[name] = upper
        return out

    @field_validator("max_size", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)

    @field_validator("file", "audit_file")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None
