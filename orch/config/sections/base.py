"""What every section shares: unknown keys are errors, and the value types several sections use."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, model_validator

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3,
               "GB": 1024**3, "T": 1024**4, "TB": 1024**4}
MIN_SECRET_LENGTH = 16


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        """``${VAR:-}`` yields ``""``; for an optional key that means "not configured", not "empty"."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                if data.get(name) == "" and field.default is None:
                    data = {**data, name: None}
        return data


def parse_size(value: int | str) -> int:
    """Turn ``"100MB"``/``"10 KB"``/``1048576`` into bytes; the guide writes sizes as strings."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 100MB")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"must be a size such as 100MB, got {value!r}")
    number, unit = match.groups()
    size = int(float(number) * _SIZE_UNITS[unit.upper()])
    if size <= 0:
        raise ValueError("must be greater than 0")
    return size


def _long_enough(value: SecretStr) -> SecretStr:
    """A short secret is guessable; the message never repeats it."""
    if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
        raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
    return value


StrongSecret = Annotated[SecretStr, AfterValidator(_long_enough)]
"""A secret of at least 16 characters: JWT and webhook secrets, tokens, Prefect's auth string."""
