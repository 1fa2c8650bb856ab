"""Hostile input for every parser: only the documented exceptions escape, nothing is slow.

Complements the per-module properties (tests/test_record.py, tests/pricing/test_pricing.py,
tests/costing/test_normalize.py and test_operation.py) with what they do not cover: deep and
wide JSON under both JSON codecs, raw bytes into the pricing and budgets parsers, hostile span
data through the whole costing step, and a time bound per parser: a 100 KB input is handled
in under 50 ms (best of three runs, generous for a 2-core CI machine). Longer fuzzing runs:
``scripts/fuzz.py``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from otelcost import _json
from otelcost.budget.model import load_budgets
from otelcost.costing.coster import INVALID_SPAN, Coster
from otelcost.costing.normalize import normalize_path
from otelcost.costing.operation import derive_operation, service_name
from otelcost.errors import BudgetConfigError, InvalidRecordError, PricingError
from otelcost.pricing import PricingCache, PricingTable
from otelcost.pricing.sources import parse_bytes
from otelcost.record import CostRecord
from otelcost.stream._enforce_batch import Batch

KB100 = 100 * 1024
LIMIT_S = 0.05
# A valid 100 KB table is ~1,400 prices, each validated and compiled (5-10 us each since the
# parser's plain-entry path; 25-40 us before it): the bound still catches anything worse
# than linear, with room for a VM's stolen time, which this thread's CPU clock counts too
# (36 ms quiet, 67 ms once in CI on Python 3.10, before that path; 7.7 ms vs 14 ms after
# and before it on the development VM).
VALID_TABLE_LIMIT_S = 0.15

CODECS = {"orjson": _json.loads, "stdlib": _json._loads_std}


@pytest.fixture(params=sorted(CODECS))
def codec(request: pytest.FixtureRequest) -> Iterator[str]:
    """``otelcost._json.loads`` bound to one decoder (orjson is optional at runtime)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_json, "loads", CODECS[request.param])
        yield request.param


def best_of_3(parse: Callable[[], object], *documented: type[BaseException]) -> float:
    """CPU seconds of the fastest of three runs; a documented exception counts as handled.

    CPU time of this thread, not wall time: other processes on a shared CI machine must
    not make a linear parser look superlinear.
    """
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        with contextlib.suppress(*documented):
            parse()
        best = min(best, time.thread_time() - started)
    return best


def assert_fast(
    parse: Callable[[], object], *documented: type[BaseException], limit: float = LIMIT_S
) -> None:
    elapsed = best_of_3(parse, *documented)
    assert elapsed < limit, f"{elapsed * 1e3:.1f} ms for a 100 KB input"


# -- hostile JSON -------------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
)
JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=40,
)
# Text that is JSON-shaped but broken: deep nesting, NaN tokens, huge numbers, bad escapes.
HOSTILE_TEXT = st.one_of(
    JSON.map(json.dumps),
    st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n),
    st.sampled_from(["NaN", "-Infinity", "1e999", "1" * 5000, '"\\ud800"', '{"a":1,"a":2}']),
    st.text(st.characters(exclude_categories=()), max_size=200),
)


# -- CostRecord.from_json ------------------------------------------------------------------------


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(text=HOSTILE_TEXT)
def test_record_from_json_raises_only_invalid_record_error(codec: str, text: str) -> None:
    for data in (text, text.encode("utf-8", "surrogatepass")):
        try:
            record = CostRecord.from_json(data)
        except InvalidRecordError:
            continue
        assert CostRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize("depth", [1_000, 60_000])
def test_deeply_nested_json_is_an_invalid_record_with_either_codec(codec: str, depth: int) -> None:
    # Regression: the stdlib decoder raised RecursionError, which escaped from_json and
    # would have stopped `otelcost enforce` at every replay of such a message.
    with pytest.raises(InvalidRecordError, match="<record>: not valid JSON"):
        CostRecord.from_json(b"[" * depth)
    batch = Batch("t")
    batch.add(0, 7, b"svc", b'{"a":' * depth, [("otelcost-schema", b"1")])
    assert [letter.offset for letter in batch.dead] == [7]


def _record_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": 1,
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "service": "svc",
        "operation": "GET /",
        "cost_amount": 0.001,
        "currency": "USD",
        "duration_ms": 1.0,
        "timestamp": 1_764_236_400_123,
        "region": None,
        "pricing_version": None,
        "usage": {},
        "error": None,
    }
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"[" * KB100, id="deep"),
        pytest.param(b" " * KB100, id="blank"),
        pytest.param(json.dumps(_record_doc(service="s" * KB100)).encode(), id="over-cap"),
        pytest.param(
            json.dumps(_record_doc(usage={f"u{i}": i for i in range(4_000)})).encode()[:65_000],
            id="wide-usage-truncated",
        ),
        pytest.param(
            json.dumps(_record_doc(usage={f"u{i}": i for i in range(3_500)})).encode(),
            id="wide-usage",
        ),
        pytest.param(json.dumps(_record_doc(operation="\\u00e9" * 5_000)).encode(), id="escapes"),
    ],
)
def test_record_from_json_of_100kb_is_fast(codec: str, data: bytes) -> None:
    assert_fast(lambda: CostRecord.from_json(data), InvalidRecordError)


# -- the pricing parser --------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300), HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_pricing_parser_raises_only_pricing_error(data: bytes) -> None:
    try:
        table = parse_bytes(data, "fuzz")
    except PricingError as exc:
        assert str(exc).startswith("fuzz: ")
    else:
        assert isinstance(table, PricingTable) and len(table) >= 1


def _big_pricing() -> bytes:
    prices: dict[str, Any] = {}
    i = 0
    while len(json.dumps(prices)) < KB100:
        prices[f"svc{i % 50}:GET /api/v{i}/*/items/*"] = {"per_ms": 1e-6, "per_request": 1e-7}
        prices[f"svc{i % 50}:POST /exact/{i}"] = {"per_unit": {"gen_ai.usage.input_tokens": 3e-6}}
        i += 1
    return json.dumps({"version": "big", "currency": "USD", "prices": prices}).encode()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_big_pricing(), id="valid-table"),
        pytest.param(b"[" * KB100, id="deep"),
        pytest.param(b'{"a:b": {"per_ms": 1' + b"0" * KB100 + b"}}", id="huge-number"),
        pytest.param(b'{"' + b"k" * KB100 + b':x": null}', id="huge-key"),
        pytest.param(b"\xff" * KB100, id="not-utf8"),
    ],
)
def test_pricing_parser_of_100kb_is_fast(data: bytes) -> None:
    valid = data.startswith(b'{"version": "big"')
    limit = VALID_TABLE_LIMIT_S if valid else LIMIT_S
    assert_fast(lambda: parse_bytes(data, "fuzz"), PricingError, limit=limit)


def test_resolving_against_adversarial_globs_is_fast() -> None:
    # Patterns that make a backtracking matcher explode against a long run of "a".
    prices: dict[str, Any] = {
        f"svc:{'*a' * (20 + i % 30)}*b{i}": {"per_ms": 1e-6} for i in range(1_500)
    }
    prices["*:*"] = None
    table = PricingTable.parse({"prices": prices})
    operation = "a" * 512  # the longest operation derive_operation returns
    assert_fast(lambda: PricingTable.resolve(table, "svc", operation))


# -- the budgets parser --------------------------------------------------------------------------

_BUDGET_VALUE = st.one_of(
    _SCALARS,
    st.integers(min_value=10**300, max_value=10**310),
    st.sampled_from(["24h", "1h", "7d", "30d", "60s", "1m", "1" * 500 + "s", "-1s", "1e999"]),
    st.floats(),
    JSON,
)
_BUDGET_KEYS = [
    "service", "limit", "period", "window", "ema_alpha", "consecutive", "release_ratio",
    "release_windows", "hard_cap", "bogus",
]  # fmt: skip
_BUDGET_ENTRY = st.dictionaries(st.sampled_from(_BUDGET_KEYS), _BUDGET_VALUE)
BUDGET_DOCS = st.one_of(
    JSON,
    st.builds(lambda entries: {"budgets": entries}, st.lists(_BUDGET_ENTRY, max_size=4)),
    st.lists(_BUDGET_ENTRY, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), JSON, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(doc=BUDGET_DOCS)
def test_budgets_parser_raises_only_budget_config_error(doc: Any) -> None:
    try:
        budgets = load_budgets(doc)
    except BudgetConfigError as exc:
        assert len(str(exc)) < 2_000  # a hostile value never floods the message
    else:
        for budget in budgets.budgets:
            assert budget.limit_nanos >= 1 and 1_000 <= budget.window_ms <= budget.spec.ms


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.one_of(
        st.binary(max_size=200), HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))
    )
)
def test_budgets_files_raise_only_budget_config_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "budgets.json"
    path.write_bytes(data)
    with contextlib.suppress(BudgetConfigError):
        load_budgets(path)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("budgets\x00.json", id="nul-in-path"),
        pytest.param({"budgets": [{"service": "a", "limit": 10**5000}]}, id="int-of-5000-digits"),
        pytest.param({"budgets": [{"service": 10**5000, "limit": 1}]}, id="service-int"),
        pytest.param({"budgets": [{"service": "a", "limit": 1, "window": "9" * 400 + "s"}]}),
        pytest.param({"budgets": [{"service": "a", "limit": 1, "window": 10**400}]}),
        pytest.param({"budgets": [{"service": "a", "limit": 1, 1: 2, "x": 3}]}, id="mixed-keys"),
        pytest.param({"budgets": [], 1: 2, "x": 3}, id="mixed-keys-top"),
    ],
)
def test_budgets_regressions_are_config_errors(source: Any) -> None:
    # Each of these escaped as ValueError, OverflowError or TypeError before.
    with pytest.raises(BudgetConfigError):
        load_budgets(source)


def _big_budgets() -> dict[str, Any]:
    entries = []
    while len(json.dumps(entries)) < KB100:
        n = len(entries)
        entries.append({"service": f"service-{n}", "limit": 10 + n, "period": "24h"})
    return {"budgets": entries}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(json.dumps(_big_budgets()).encode(), id="valid"),
        pytest.param(b"[" * KB100, id="deep"),
        pytest.param(
            json.dumps({"budgets": [{"service": "a", "limit": 1, "window": "1" * KB100}]}).encode(),
            id="huge-window",
        ),
        pytest.param(b"\x00" * KB100, id="binary"),
    ],
)
def test_budgets_parser_of_100kb_is_fast(codec: str, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "budgets.json"
    path.write_bytes(data)
    assert_fast(lambda: load_budgets(path), BudgetConfigError)


# -- normalize_path and the operation deriver ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/" + "1" * KB100, id="digits"),
        pytest.param("/a" * (KB100 // 2), id="many-segments"),
        pytest.param("/" + "%2F" * (KB100 // 3), id="percent"),
        pytest.param("/" + "aB3-_" * (KB100 // 5), id="token"),
        pytest.param("/" + "0123456789abcdef" * (KB100 // 16), id="hex"),
        pytest.param("/x-" * (KB100 // 3), id="dashes"),
        pytest.param("/é\u202e\x00" * (KB100 // 3), id="unicode-controls"),
        pytest.param("/" + "a@b." * (KB100 // 4), id="email-ish"),
        pytest.param("?" + "a" * KB100, id="query-only"),
    ],
)
def test_normalize_path_of_100kb_is_fast(path: str) -> None:
    assert_fast(lambda: normalize_path(path + str(time.perf_counter())))  # never memoised


_HOSTILE_VALUES = [
    "GET",
    "/users/" + "9" * KB100,
    "x" * KB100,
    "\x00\u202e" * (KB100 // 2),
    b"\xff" * 100,
    10**400,
    float("nan"),
    -1,
    True,
    ("a", "b"),
    None,
]
_KEYS = ["http.request.method", "http.method", "http.route", "rpc.service", "rpc.method",
         "url.path", "http.target", "service.name", "gen_ai.usage.input_tokens"]  # fmt: skip


def test_operation_deriver_of_100kb_attributes_is_fast() -> None:
    attributes = dict.fromkeys(_KEYS, "/orders/" + "7" * KB100)
    assert_fast(lambda: derive_operation("n" * KB100, attributes))
    assert_fast(lambda: service_name(attributes, attributes))


def _coster() -> Coster:
    cache = PricingCache(
        {
            "prices": {
                "*:*": {
                    "per_ms": 1e-6,
                    "per_request": 1e-7,
                    "per_unit": {"gen_ai.usage.input_tokens": 3e-6},
                }
            }
        }
    )
    cache.refresh()
    return Coster(
        cache, currency="USD", region=None, max_operations_per_service=50, normalizer=None
    )


_TIMES = st.one_of(
    st.integers(min_value=0, max_value=2**64),
    st.sampled_from([0, 5, 1_700_000_000, 1_764_236_400_000_000_000, 10**19]),
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(st.characters(exclude_categories=()), max_size=50),
    attributes=st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_HOSTILE_VALUES)),
    resource=st.dictionaries(st.sampled_from(_KEYS), st.sampled_from(_HOSTILE_VALUES)),
    start=_TIMES,
    end=_TIMES,
)
# Found in CI: a span of 285 years cost just over 2**53 nano-units, which pricing allowed and
# every consumer rejects.
@example(name="", attributes={}, resource={}, start=0, end=9_007_199_254_740_893_184)
def test_hostile_spans_always_make_valid_records(
    name: str, attributes: dict[str, Any], resource: dict[str, Any], start: int, end: int
) -> None:
    """Whatever a span holds, its record passes the consumers' validation (a record the
    enforcer would dead-letter is money the two budget paths disagree on)."""
    coster = _coster()
    span = ReadableSpan(
        name=name,
        context=SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED)),
        attributes=attributes,
        resource=Resource(resource),
        start_time=start,
        end_time=end,
    )
    cost = coster.cost(span, coster.snapshot())
    record = cost.record(1, 2)
    assert CostRecord.from_json(record.to_json()) == record
    amount = cost.attributes().get("cost.amount")
    assert (amount is None) == (cost.error is not None)
    assert amount is None or (isinstance(amount, float) and 0 <= amount < 1e10)


@pytest.mark.parametrize("end", [0, 5, 1_700_000_000, 10**19])
def test_a_span_ended_off_the_epoch_is_invalid_not_an_invalid_record(end: int) -> None:
    # Regression: the record carried end // 1e6 as its timestamp (0, 1700...), which the
    # enforcer dead-letters while the Redis exporter applied the same spend.
    coster = _coster()
    span = ReadableSpan(name="x", resource=Resource({}), start_time=0, end_time=end)
    cost = coster.cost(span, coster.snapshot())
    assert cost.reason == INVALID_SPAN and cost.nanos == 0
    record = cost.record(1, 2)
    assert abs(record.timestamp - time.time() * 1000) < 60_000
    assert CostRecord.from_json(record.to_json()) == record


def test_an_unpriced_span_with_an_enormous_usage_value_keeps_its_record() -> None:
    # Regression: the fallback usage of an unpriced span raised OverflowError on an int
    # beyond a double, so the span lost its record (counted only as a processor error).
    coster = _coster()
    span = ReadableSpan(
        name="x",
        attributes={"gen_ai.usage.input_tokens": 10**400, "gen_ai.usage.output_tokens": 7},
        resource=Resource({}),
        start_time=0,
        end_time=0,
    )
    cost = coster.cost(span, coster.snapshot())
    assert cost.reason == INVALID_SPAN
    assert dict(cost.usage) == {"gen_ai.usage.output_tokens": 7.0}
