"""How JSON columns are written: orjson, and the standard library where orjson cannot say it exactly.

Accepting a batch of 100 tasks writes four JSON values per task (params, metadata, locks, the event's
data) and an audit entry holding them all; with the standard library's encoder that was about a
twentieth of the API's CPU for the batch. orjson writes the same JSON for what ORCH stores, compactly.
Where it refuses (an integer beyond 64 bits, which JSON allows and the standard library writes
exactly) the standard library writes it instead, so nothing a caller sent is changed or refused.

Reading stays with the standard library: orjson reads such an integer as a float, silently.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS  # as the standard library, a key 1 is written "1"


def dumps(value: Any) -> str:
    """``value`` as JSON text, for the engine's ``json_serializer``."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, a type neither writes
        return json.dumps(value)
