"""CostRecord schema v1: round trips with both JSON encoders, and one rejection per rule.

Every test that decodes runs twice, with orjson and with the stdlib fallback of
``otelcost._json``, because a deployment without the ``fast`` extra must accept and reject
exactly the same records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelcost import _json
from otelcost.errors import InvalidRecordError
from otelcost.money import NANOS_PER_UNIT
from otelcost.record import MAX_RECORD_BYTES, CostRecord

MAX_COST = 2**53 / NANOS_PER_UNIT
VALID: dict[str, Any] = {
    "schema": 1,
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "span_id": "00f067aa0ba902b7",
    "service": "payment-svc",
    "operation": "POST /api/v2/users/*/orders/*",
    "cost_amount": 0.0000123,
    "currency": "USD",
    "duration_ms": 12.34,
    "timestamp": 1764236400123,
    "region": "us-east-1",
    "pricing_version": "2026-11-27.1",
    "usage": {"gen_ai.usage.input_tokens": 812},
    "error": None,
}
REQUIRED = list(VALID)
CODECS = {
    "orjson": (orjson.loads, orjson.dumps),
    "stdlib": (_json._loads_std, _json._dumps_std),
}


@pytest.fixture(scope="module", params=list(CODECS))
def codec(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with ``otelcost._json`` bound to one encoder."""
    loads, dumps = CODECS[request.param]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "loads", loads)
        patch.setattr(_json, "dumps", dumps)
        yield request.param


def doc(**changes: Any) -> dict[str, Any]:
    """The valid document with some fields replaced (or removed, with the value ``...``)."""
    result = {**VALID, **changes}
    return {k: v for k, v in result.items() if v is not ...}


def raw(document: Any, **tokens: str) -> bytes:
    """``document`` as JSON; each ``tokens`` field is written as that raw JSON token."""
    text = json.dumps({**document, **{name: f"@{name}@" for name in tokens}})
    for name, token in tokens.items():
        text = text.replace(f'"@{name}@"', token)
    return text.encode()


def rejects(data: Any, field: str) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        CostRecord.from_json(data)
    assert info.value.field == field, str(info.value)
    assert str(info.value).startswith(f"{field}: ")
    return info.value


# --- round trips ---------------------------------------------------------------------------

hex_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
span_ids = st.text("0123456789abcdef", min_size=16, max_size=16)
texts = st.text(min_size=1, max_size=40)  # no surrogates: st.text() excludes them
finite = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
usage_values = finite | st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def records(draw: st.DrawFn) -> CostRecord:
    error = draw(st.none() | texts)
    aggregate = draw(st.booleans())
    return CostRecord(
        trace_id=draw(hex_ids),
        span_id=draw(span_ids),
        service=draw(texts),
        operation=draw(texts),
        cost_amount=0.0 if error else draw(st.floats(min_value=0, max_value=MAX_COST)),
        currency=draw(texts),
        duration_ms=draw(finite),
        timestamp=draw(st.integers(min_value=10**12 + 1, max_value=10**13 - 1)),
        region=draw(st.none() | texts),
        pricing_version=draw(st.none() | texts),
        usage=draw(st.dictionaries(st.text(max_size=30), usage_values, max_size=4)),
        error=error,
        aggregate=aggregate,
        span_count=draw(st.integers(min_value=1, max_value=10**9)) if aggregate else 1,
    )


@given(record=records())
def test_round_trip(codec: str, record: CostRecord) -> None:
    encoded = record.to_json()
    assert isinstance(encoded, bytes)
    assert CostRecord.from_json(encoded) == record
    assert CostRecord.from_json(encoded.decode()) == record
    assert CostRecord.from_json(memoryview(bytearray(encoded))) == record


@given(record=records())
def test_encoders_write_the_same_document(record: CostRecord) -> None:
    by_orjson, by_stdlib = orjson.dumps(record.to_dict()), _json._dumps_std(record.to_dict())
    assert orjson.loads(by_stdlib) == orjson.loads(by_orjson)
    assert _json._loads_std(by_orjson) == _json._loads_std(by_stdlib) == record.to_dict()
    assert CostRecord.from_dict(_json._loads_std(by_orjson)) == record


def test_design_example_is_valid(codec: str) -> None:
    record = CostRecord.from_json(raw(VALID))
    assert (record.service, record.timestamp, record.cost_nanos) == (
        "payment-svc",
        VALID["timestamp"],
        12_300,
    )
    assert record.usage == {"gen_ai.usage.input_tokens": 812}
    assert (record.aggregate, record.span_count) == (False, 1)
    assert json.loads(record.to_json()) == VALID


def test_aggregate_and_error_records_are_valid(codec: str) -> None:
    aggregate = CostRecord.from_json(raw(doc(aggregate=True, span_count=17)))
    assert (aggregate.aggregate, aggregate.span_count) == (True, 17)
    failed = CostRecord.from_json(raw(doc(cost_amount=0, error="PricingNotFoundError: x")))
    assert failed.error == "PricingNotFoundError: x"
    assert failed.usage == VALID["usage"]  # kept for re-pricing


def test_largest_cost_converts_exactly_to_nanos(codec: str) -> None:
    assert CostRecord.from_json(raw(doc(cost_amount=MAX_COST))).cost_nanos == 2**53


def test_record_of_exactly_64_kib_is_accepted(codec: str) -> None:
    data = raw(VALID)
    data += b" " * (MAX_RECORD_BYTES - len(data))  # insignificant whitespace
    assert CostRecord.from_json(data).service == "payment-svc"
    rejects(data + b" ", "<record>")


def test_timestamp_bounds_are_exclusive(codec: str) -> None:
    assert CostRecord.from_json(raw(doc(timestamp=10**12 + 1))).timestamp == 10**12 + 1
    assert CostRecord.from_json(raw(doc(timestamp=10**13 - 1))).timestamp == 10**13 - 1
    rejects(raw(doc(timestamp=10**12)), "timestamp")
    rejects(raw(doc(timestamp=10**13)), "timestamp")


# --- rejections: one per rule, each naming its field ---------------------------------------

BAD_DOCUMENTS = [
    # strings for numbers
    pytest.param(doc(cost_amount="0.0000123"), "cost_amount", id="cost-as-string"),
    pytest.param(doc(duration_ms="12.34"), "duration_ms", id="duration-as-string"),
    pytest.param(doc(timestamp="1764236400123"), "timestamp", id="timestamp-as-string"),
    pytest.param(doc(schema="1"), "schema", id="schema-as-string"),
    pytest.param(doc(usage={"tokens": "812"}), "usage.tokens", id="usage-as-string"),
    pytest.param(doc(aggregate=True, span_count="3"), "span_count", id="span-count-as-string"),
    # bool where a number is expected (bool is an int subclass in Python)
    pytest.param(doc(schema=True), "schema", id="schema-true"),
    pytest.param(doc(cost_amount=False), "cost_amount", id="cost-false"),
    pytest.param(doc(duration_ms=True), "duration_ms", id="duration-true"),
    pytest.param(doc(timestamp=True), "timestamp", id="timestamp-true"),
    pytest.param(doc(aggregate=True, span_count=True), "span_count", id="span-count-true"),
    pytest.param(doc(usage={"tokens": True}), "usage.tokens", id="usage-true"),
    pytest.param(doc(aggregate=1, span_count=2), "aggregate", id="aggregate-as-int"),
    # null where a number is expected
    pytest.param(doc(cost_amount=None), "cost_amount", id="cost-null"),
    pytest.param(doc(timestamp=None), "timestamp", id="timestamp-null"),
    # negative amounts
    pytest.param(doc(cost_amount=-0.01), "cost_amount", id="cost-negative"),
    pytest.param(doc(duration_ms=-1), "duration_ms", id="duration-negative"),
    pytest.param(doc(usage={"tokens": -5}), "usage.tokens", id="usage-negative"),
    # amounts that do not fit the stores' integer nano-units
    pytest.param(doc(cost_amount=MAX_COST * 1.01), "cost_amount", id="cost-above-2**53-nanos"),
    pytest.param(doc(cost_amount=1e300), "cost_amount", id="cost-1e300"),
    # an unpriced record carries no cost
    pytest.param(
        doc(cost_amount=0.5, error="PricingStaleError"), "cost_amount", id="cost-with-error"
    ),
    pytest.param(doc(cost_amount=0, error=""), "error", id="error-empty"),
    # timestamps that are not integer epoch milliseconds
    pytest.param(doc(timestamp=1764236400), "timestamp", id="timestamp-seconds"),
    pytest.param(doc(timestamp=1764236400123000), "timestamp", id="timestamp-microseconds"),
    pytest.param(doc(timestamp=1764236400123000000), "timestamp", id="timestamp-nanoseconds"),
    pytest.param(doc(timestamp=1764236400123.0), "timestamp", id="timestamp-float"),
    pytest.param(doc(timestamp=1764236400.123), "timestamp", id="timestamp-float-seconds"),
    pytest.param(doc(timestamp=-1764236400123), "timestamp", id="timestamp-negative"),
    pytest.param(doc(timestamp="2026-11-27T09:40:00.123Z"), "timestamp", id="timestamp-iso-utc"),
    pytest.param(doc(timestamp="2026-11-27T10:40:00+01:00"), "timestamp", id="timestamp-iso-tz"),
    # unknown fields (checked after the required ones are all present)
    pytest.param(doc(cost=0.1), "cost", id="unknown-field"),
    pytest.param(doc(Service="x"), "Service", id="unknown-field-case"),
    # another schema version: reported as the version, even with fields v1 does not know
    pytest.param(doc(schema=2), "schema", id="schema-2"),
    pytest.param(doc(schema=2, cost_micros=12, cost_amount=...), "schema", id="schema-2-shape"),
    pytest.param(doc(schema=1.0), "schema", id="schema-float"),
    # bad hex ids: 32 / 16 lowercase hex digits
    pytest.param(doc(trace_id="4bf92f3577b34da6a3ce929d0e0e473"), "trace_id", id="trace-31"),
    pytest.param(doc(trace_id="4bf92f3577b34da6a3ce929d0e0e47360"), "trace_id", id="trace-33"),
    pytest.param(doc(trace_id="4BF92F3577B34DA6A3CE929D0E0E4736"), "trace_id", id="trace-upper"),
    pytest.param(doc(trace_id="4bf92f3577b34da6a3ce929d0e0e473g"), "trace_id", id="trace-non-hex"),
    pytest.param(doc(trace_id="0x4bf92f3577b34da6a3ce929d0e0e47"), "trace_id", id="trace-0x"),
    pytest.param(doc(trace_id="4bf92f35-77b3-4da6-a3ce-929d0e0e"), "trace_id", id="trace-uuid"),
    pytest.param(doc(trace_id=""), "trace_id", id="trace-empty"),
    pytest.param(doc(trace_id=2**100), "trace_id", id="trace-int"),
    pytest.param(doc(span_id="00f067aa0ba902b"), "span_id", id="span-15"),
    pytest.param(doc(span_id="00f067aa0ba902b70"), "span_id", id="span-17"),
    pytest.param(doc(span_id="00F067AA0BA902B7"), "span_id", id="span-upper"),
    pytest.param(doc(span_id="00f067aa0ba902bz"), "span_id", id="span-non-hex"),
    pytest.param(doc(span_id=None), "span_id", id="span-null"),
    # text fields
    pytest.param(doc(service=""), "service", id="service-empty"),
    pytest.param(doc(service=42), "service", id="service-int"),
    pytest.param(doc(operation="x" * 4097), "operation", id="operation-too-long"),
    pytest.param(doc(currency=None), "currency", id="currency-null"),
    pytest.param(doc(region=5), "region", id="region-int"),
    pytest.param(doc(pricing_version=""), "pricing_version", id="pricing-version-empty"),
    pytest.param(doc(usage=[["tokens", 1]]), "usage", id="usage-list"),
    pytest.param(doc(usage={"tokens": {"n": 1}}), "usage.tokens", id="usage-nested"),
    # aggregates
    pytest.param(doc(aggregate=True, span_count=0), "span_count", id="span-count-0"),
    pytest.param(doc(span_count=5), "span_count", id="span-count-without-aggregate"),
]


@pytest.mark.parametrize(("document", "field"), BAD_DOCUMENTS)
def test_rejects_bad_document(codec: str, document: dict[str, Any], field: str) -> None:
    rejects(raw(document), field)


@pytest.mark.parametrize("field", REQUIRED)
def test_rejects_missing_field(codec: str, field: str) -> None:
    rejects(raw(doc(**{field: ...})), field)


@pytest.mark.parametrize(
    ("tokens", "field"),
    [
        pytest.param({"cost_amount": "NaN"}, "<record>", id="cost-NaN"),
        pytest.param({"cost_amount": "Infinity"}, "<record>", id="cost-Infinity"),
        pytest.param({"duration_ms": "-Infinity"}, "<record>", id="duration-minus-Infinity"),
        pytest.param({"usage": '{"tokens": NaN}'}, "<record>", id="usage-NaN"),
        pytest.param({"cost_amount": "1e400"}, "<record>", id="cost-float-overflow"),
        pytest.param({"duration_ms": "-1e400"}, "<record>", id="duration-float-overflow"),
        pytest.param({"cost_amount": "1" + "0" * 400}, "<record>", id="cost-int-overflow"),
        pytest.param({"usage": '{"t": 1' + "0" * 400 + "}"}, "<record>", id="usage-int-overflow"),
        # beyond 64-bit integers parse as doubles (as orjson does): no longer an int
        pytest.param({"timestamp": str(2**64)}, "timestamp", id="timestamp-past-u64"),
    ],
)
def test_rejects_non_finite_json_tokens(codec: str, tokens: dict[str, str], field: str) -> None:
    rejects(raw(VALID, **tokens), field)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"cost_amount": math.nan}, "cost_amount", id="cost-nan"),
        pytest.param({"cost_amount": math.inf}, "cost_amount", id="cost-inf"),
        pytest.param({"duration_ms": -math.inf}, "duration_ms", id="duration-minus-inf"),
        pytest.param({"cost_amount": 10**400}, "cost_amount", id="cost-huge-int"),
        pytest.param({"duration_ms": 10**400}, "duration_ms", id="duration-huge-int"),
        pytest.param({"usage": {"t": math.nan}}, "usage.t", id="usage-nan"),
        pytest.param({"usage": {"t": 10**400}}, "usage.t", id="usage-huge-int"),
        pytest.param({"timestamp": 10**400}, "timestamp", id="timestamp-huge-int"),
    ],
)
def test_from_dict_rejects_non_finite_python_values(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        CostRecord.from_dict(doc(**changes))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        pytest.param({"usage": {1: 2}}, "usage", id="usage-int-key"),
        pytest.param({"aggregate": True, "span_count": 2**63}, "span_count", id="span-count-2**63"),
    ],
)
def test_from_dict_rejects_what_json_cannot_carry(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRecordError) as info:
        CostRecord.from_dict(doc(**changes))
    assert info.value.field == field


def test_from_dict_turns_usage_ints_past_64_bits_into_doubles(codec: str) -> None:
    record = CostRecord.from_dict(doc(usage={"tokens": 10**30, "calls": 2**64 - 1}))
    assert record.usage == {"tokens": 1e30, "calls": 2**64 - 1}
    assert type(record.usage["tokens"]) is float
    assert CostRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[]", id="array"),
        pytest.param(b'"payment-svc"', id="string"),
        pytest.param(b"12.5", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"true", id="bool"),
        pytest.param(json.dumps([VALID]).encode(), id="array-of-record"),
    ],
)
def test_rejects_non_object_json(codec: str, data: bytes) -> None:
    rejects(data, "<record>")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(raw(VALID)[:-1], id="truncated"),
        pytest.param(raw(VALID) + b"}", id="trailing-garbage"),
        pytest.param(raw(VALID).replace(b'"schema"', b"schema"), id="unquoted-key"),
        pytest.param(raw(VALID).replace(b"}", b",}", 1), id="trailing-comma"),
    ],
)
def test_rejects_malformed_json(codec: str, data: bytes) -> None:
    rejects(data, "<record>")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw(VALID).replace(b"payment-svc", b"payment-\xff"), id="invalid-byte"),
        pytest.param(
            json.dumps(doc(service="café"), ensure_ascii=False).encode("latin-1"), id="latin-1"
        ),
        pytest.param(json.dumps(VALID).encode("utf-16"), id="utf-16"),
        pytest.param(json.dumps(VALID).encode("utf-32"), id="utf-32"),
        pytest.param(b"\xef\xbb\xbf" + raw(VALID), id="utf-8-bom"),
        pytest.param(
            raw(VALID).replace(b"payment-svc", b"payment-\xed\xa0\x80"), id="surrogate-bytes"
        ),
        pytest.param(raw(doc(service="payment-\ud800")), id="lone-surrogate-escape"),
        pytest.param(raw(doc(usage={"\udc00": 1})), id="lone-surrogate-key"),
    ],
)
def test_rejects_what_is_not_utf8(codec: str, data: bytes) -> None:
    rejects(data, "<record>")


def test_rejects_str_with_lone_surrogate(codec: str) -> None:
    text = raw(VALID).decode().replace("payment-svc", "payment-\ud800")
    rejects(text, "<record>")


def test_size_limit_counts_utf8_bytes_not_characters(codec: str) -> None:
    document = doc(usage={"é" * 33_000: 1})  # 33,000 characters, 66,000 bytes
    data = json.dumps(document, ensure_ascii=False)
    assert len(data) < MAX_RECORD_BYTES < len(data.encode())
    error = rejects(data, "<record>")
    assert str(MAX_RECORD_BYTES) in str(error)
    rejects(data.encode(), "<record>")


def test_rejection_is_a_value_error_naming_the_field(codec: str) -> None:
    error = rejects(raw(doc(timestamp=1764236400)), "timestamp")
    assert isinstance(error, ValueError)
    assert "1764236400" in str(error)
    assert "milliseconds" in str(error)


# --- nothing but InvalidRecordError escapes, whatever the input -----------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_are_a_record_or_invalid(codec: str, data: bytes) -> None:
    with contextlib.suppress(InvalidRecordError):
        CostRecord.from_json(data)


@given(field=st.sampled_from([*REQUIRED, "aggregate", "span_count"]), value=json_values)
def test_any_value_in_any_field_is_a_record_or_invalid(codec: str, field: str, value: Any) -> None:
    document = doc(**{field: value})
    # A changed error also trips the cost rule; usage errors name the offending key.
    allowed = {field, "<record>"} | ({"cost_amount"} if field == "error" else set())
    for decode in (
        lambda: CostRecord.from_json(json.dumps(document).encode()),  # NaN/Infinity as tokens
        lambda: CostRecord.from_dict(document),
    ):
        try:
            record = decode()
        except InvalidRecordError as exc:
            assert exc.field in allowed or exc.field.startswith(f"{field}."), str(exc)
        else:
            assert CostRecord.from_json(record.to_json()) == record


TRUSTED_ARGS: tuple[Any, ...] = (
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7",
    "checkout",
    "GET /cart",
    1.23e-5,
    "USD",
    12.5,
    1_764_236_400_123,
    "us-east-1",
    "v1",
    {"gen_ai.usage.input_tokens": 812},
    None,
    False,
    "1.4.2",
    "prod",
)


def test_trusted_builds_the_record_the_constructor_builds() -> None:
    names = [
        "trace_id",
        "span_id",
        "service",
        "operation",
        "cost_amount",
        "currency",
        "duration_ms",
        "timestamp",
        "region",
        "pricing_version",
        "usage",
        "error",
        "entry",
        "service_version",
        "environment",
    ]
    expected = CostRecord(**dict(zip(names, TRUSTED_ARGS, strict=True)))
    for built in (CostRecord.trusted(*TRUSTED_ARGS), CostRecord.trusted(*TRUSTED_ARGS[:13])):
        assert type(built) is CostRecord  # not the builder class
        assert not built.aggregate
        assert built.span_count == 1
        for field in dataclasses.fields(CostRecord):  # every slot set
            getattr(built, field.name)
    assert CostRecord.trusted(*TRUSTED_ARGS) == expected
    assert CostRecord.trusted(*TRUSTED_ARGS[:13]) == dataclasses.replace(
        expected, service_version=None, environment=None
    )
    assert CostRecord.from_json(expected.to_json()) == CostRecord.trusted(*TRUSTED_ARGS)


def test_a_trusted_record_is_frozen() -> None:
    record = CostRecord.trusted(*TRUSTED_ARGS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.operation = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del record.operation  # type: ignore[misc]


def test_trusted_on_a_subclass_builds_the_subclass() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Tagged(CostRecord):
        tag: str = "t"

    built = Tagged.trusted(*TRUSTED_ARGS)
    assert type(built) is Tagged
    assert built.operation == "GET /cart"
    assert built.entry is False
