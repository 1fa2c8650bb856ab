"""JSON encoding with orjson when it is installed (the ``fast`` extra), else the stdlib."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dumps", "loads"]

try:
    import orjson
except ImportError:  # pragma: no cover - depends on the installed extras
    orjson = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads_std(data: bytes | str) -> Any:
    return json.loads(data, parse_constant=_reject_constant)


def _dumps_std(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


if orjson is not None:
    # orjson rejects NaN/Infinity on input and writes null for them on output; callers
    # validate finiteness before encoding, so both encoders produce the same documents.
    loads = orjson.loads
    dumps = orjson.dumps
else:  # pragma: no cover - depends on the installed extras
    loads = _loads_std
    dumps = _dumps_std
