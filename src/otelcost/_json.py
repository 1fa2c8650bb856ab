"""JSON encoding with orjson when it is installed (the ``fast`` extra), else the stdlib."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads_std(data: bytes | str) -> Any:
    return json.loads(data, parse_constant=_reject_constant)


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
