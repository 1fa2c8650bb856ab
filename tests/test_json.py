"""otelcost._json: the stdlib fallback parses exactly what orjson parses, and nothing more."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelcost import _json


def _documents(numbers: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | numbers | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )


integers = st.integers(min_value=-(2**70), max_value=2**70)
values = _documents(integers | st.floats())
finite_values = _documents(integers | st.floats(allow_nan=False, allow_infinity=False))


def _parse(loads: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", loads(data)
    except ValueError:
        return "error", None


@given(value=values)
def test_stdlib_and_orjson_parse_the_same_documents(value: Any) -> None:
    text = json.dumps(value)  # may contain NaN/Infinity tokens and integers past 64 bits
    for data in (text, text.encode()):
        assert _parse(_json._loads_std, data) == _parse(orjson.loads, data)


@given(data=st.binary(max_size=64))
def test_stdlib_and_orjson_agree_on_arbitrary_bytes(data: bytes) -> None:
    std, fast = _parse(_json._loads_std, data), _parse(orjson.loads, data)
    assert std[0] == fast[0]
    if std[0] == "ok":  # NaN cannot appear: both reject the tokens
        assert std[1] == fast[1]


@given(value=finite_values)
def test_stdlib_encoder_round_trips_through_both_parsers(value: Any) -> None:
    encoded = _json._dumps_std(value)
    assert _json._loads_std(encoded) == orjson.loads(encoded)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, {"a": [math.nan]}])
def test_stdlib_encoder_refuses_non_finite_numbers(value: Any) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        _json._dumps_std(value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b'"\\ud83d\\ude00"', "\U0001f600", id="surrogate-pair-escape"),
        pytest.param('"caf\u00e9"'.encode(), "caf\u00e9", id="utf-8"),
        pytest.param(str(2**64 - 1).encode(), 2**64 - 1, id="largest-u64-stays-int"),
        pytest.param(str(-(2**63)).encode(), -(2**63), id="smallest-i64-stays-int"),
        pytest.param(str(2**64).encode(), float(2**64), id="past-u64-becomes-double"),
    ],
)
def test_stdlib_parser_values(data: bytes, expected: Any) -> None:
    value = _json._loads_std(data)
    assert value == expected
    assert type(value) is type(expected)
