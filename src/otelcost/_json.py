"""JSON encoding with orjson when it is installed (the ``fast`` extra), else the stdlib."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_INT_MIN = -(2**63)  # orjson keeps integers in [-2**63, 2**64) and parses others as doubles
_INT_END = 2**64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is infinity when parsed as a double")
    return value


def _parse_int(text: str) -> int | float:
    value = int(text)
    return value if _INT_MIN <= value < _INT_END else _parse_float(text)


def _loads_std(data: bytes | str) -> Any:
    """Parse like orjson: UTF-8 only, no NaN/Infinity, no lone surrogates, no overflow, and
    ValueError (never RecursionError) for deep nesting."""
    if isinstance(data, bytes):
        text = data.decode("utf-8")
    else:
        data.encode("utf-8")  # raises on a lone surrogate, as orjson does
        text = data
    try:
        obj = json.loads(
            text, parse_constant=_reject_constant, parse_float=_parse_float, parse_int=_parse_int
        )
    except RecursionError:
        # orjson refuses deep nesting with a ValueError; so must this, or a hostile message
        # escapes every caller's ``except ValueError`` (a poison pill for the enforcer).
        raise ValueError("JSON nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        # Paired escapes decode to one character; a lone one survives as a surrogate,
        # which no UTF-8 encoder accepts. Rare enough to check by re-encoding.
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    return obj


def _dumps_std(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


loads: Callable[[bytes | str], Any]
dumps: Callable[[Any], bytes]
try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    loads, dumps = _loads_std, _dumps_std
else:
    # orjson rejects NaN/Infinity on input; callers validate finiteness before encoding,
    # so both encoders produce the same documents.
    loads, dumps = orjson.loads, orjson.dumps
