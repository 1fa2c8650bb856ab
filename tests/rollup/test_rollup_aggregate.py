"""Per-minute sums and storable keys (pure Python, no database)."""

from __future__ import annotations

from otelcost.money import from_nanos
from otelcost.record import CostRecord
from otelcost.rollup._aggregate import (
    MAX_CURRENCY_BYTES,
    MAX_OPERATION_BYTES,
    MinuteRollup,
    bucket_start,
)
from otelcost.stream.schema2 import envelope_of, record_row

_T0 = 1_764_236_400_000  # a minute boundary


def _record(**overrides: object) -> CostRecord:
    fields: dict[str, object] = {
        "trace_id": "1" * 32,
        "span_id": "2" * 16,
        "service": "svc",
        "operation": "GET /x",
        "cost_amount": from_nanos(1_500),
        "currency": "USD",
        "duration_ms": 2.5,
        "timestamp": _T0,
    }
    fields.update(overrides)
    return CostRecord(**fields)  # type: ignore[arg-type]


def _add(rollup: MinuteRollup, *records: CostRecord) -> None:
    """Add ``records`` as one message of theirs would be added (they share the envelope)."""
    rollup.add_rows(envelope_of(records[0]), [record_row(r) for r in records])


def test_bucket_start_is_the_utc_minute() -> None:
    assert bucket_start(_T0) == _T0
    assert bucket_start(_T0 + 59_999) == _T0
    assert bucket_start(_T0 + 60_000) == _T0 + 60_000


def test_sums_per_minute_service_operation_currency() -> None:
    rollup = MinuteRollup()
    _add(rollup, _record())
    _add(rollup, _record(timestamp=_T0 + 59_999, cost_amount=from_nanos(2_500)))
    _add(rollup, _record(timestamp=_T0 + 60_000))
    _add(rollup, _record(currency="EUR"))
    _add(rollup, _record(error="PricingNotFoundError", cost_amount=0.0))
    _add(rollup, _record(operation="OTHER", aggregate=True, span_count=40, duration_ms=100.0))
    _add(rollup, _record(service_version="v2", environment="prod"))
    rows = {
        key: (t.cost_nanos, t.spans, t.records, t.unpriced_spans, t.duration_ms)
        for key, t in rollup.rows()
    }
    assert rows == {
        (_T0, "svc", "GET /x", "EUR", "", ""): (1_500, 1, 1, 0, 2.5),
        (_T0, "svc", "GET /x", "USD", "", ""): (4_000, 3, 3, 1, 7.5),
        (_T0, "svc", "GET /x", "USD", "v2", "prod"): (1_500, 1, 1, 0, 2.5),
        (_T0, "svc", "OTHER", "USD", "", ""): (1_500, 40, 1, 0, 100.0),
        (_T0 + 60_000, "svc", "GET /x", "USD", "", ""): (1_500, 1, 1, 0, 2.5),
    }
    assert list(dict(rollup.rows())) == sorted(rows)  # one global order: no deadlocks
    assert (rollup.records, rollup.sanitized, len(rollup)) == (7, 0, 5)


def test_sums_are_exact_past_64_bits() -> None:
    rollup = MinuteRollup()
    big = _record(cost_amount=from_nanos(2**53 - 2), aggregate=True, span_count=2**62)
    for _ in range(4096):
        _add(rollup, big)
    [(_, totals)] = list(rollup.rows())
    assert totals.cost_nanos == 4096 * big.cost_nanos > 2**64
    assert totals.spans == 4096 * 2**62


def test_unstorable_keys_are_cleaned_and_counted_money_kept() -> None:
    rollup = MinuteRollup()
    _add(rollup, _record(service="s\x00vc", operation="é" * 2000, currency="X" * 100))
    _add(rollup, _record(operation="fine"))
    rows = dict(rollup.rows())
    [(_, service, operation, currency, _, _)] = [k for k in rows if k[2] != "fine"]
    totals = rows[(_T0, service, operation, currency, "", "")]
    assert service == "s\ufffdvc"
    assert operation.endswith("…") and len(operation.encode()) <= MAX_OPERATION_BYTES
    assert operation.startswith("é" * 100)
    assert currency.endswith("…") and len(currency.encode()) <= MAX_CURRENCY_BYTES
    assert totals.cost_nanos == 1_500
    assert rollup.sanitized == 1


def test_a_message_sums_like_its_records_one_by_one_and_merges() -> None:
    """The usual records of a message are summed per (minute, operation) before they reach
    a row; the totals are those of adding each record alone."""
    records = [
        _record(
            operation=f"op{i % 3}",
            timestamp=_T0 + i * 7_001,
            cost_amount=from_nanos(1_000 + i),
            duration_ms=0.5 + i,
            usage={"tokens": i} if i % 5 == 0 else {},
            entry=i % 4 != 0,
        )
        for i in range(40)
    ]
    whole, alone, merged = MinuteRollup(), MinuteRollup(), MinuteRollup()
    _add(whole, *records)
    for record in records:
        _add(alone, record)
    merged.merge(whole)
    merged.merge(alone)
    assert list(whole.rows()) == list(alone.rows())
    assert (whole.records, alone.records, merged.records) == (40, 40, 80)
    (key, totals), *_ = merged.rows()
    assert totals.cost_nanos == 2 * dict(whole.rows())[key].cost_nanos
    assert sum(t.cost_nanos for _, t in whole.rows()) == sum(r.cost_nanos for r in records)
