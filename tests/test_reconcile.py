"""otelcost.reconcile: the verdict, the table and the enforce path's database.

The end-to-end runs against real servers are in tests/cli/test_reconcile_cli.py.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from _servers import RedisServer
from otelcost.reconcile import (
    CostSumSpanExporter,
    Reconciliation,
    SinkTotal,
    enforcer_url_for,
    reconcile,
)


def _result(*totals: tuple[int, int | None], problems: tuple[str, ...] = ()) -> Reconciliation:
    return Reconciliation(
        run_id="r",
        spans=10,
        services=("a",),
        topic="t",
        currency="USD",
        totals=tuple(SinkTotal(f"sink{i}", n, r) for i, (n, r) in enumerate(totals)),
        counters={"spans_dropped": 0},
        problems=problems,
    )


def test_agreement_needs_equal_totals_and_equal_record_counts() -> None:
    assert _result((7, 10), (7, 10), (7, None)).ok
    assert not _result((7, 10), (8, 10)).ok
    assert not _result((7, 10), (7, 9)).ok  # same money over fewer records: not the same spans
    assert not _result((7, 10), (7, 10), problems=("kafka_dropped_spans = 1",)).ok


def test_the_table_shows_every_difference_signed() -> None:
    result = _result((1_000, 10), (1_000, 10), (995, 9))
    assert result.differences() == {"sink1": 0, "sink2": -5}
    lines = result.table().splitlines()
    assert lines[0].split() == ["sink", "records", "total", "(nano-units)", "difference"]
    assert lines[1].split() == ["sink0", "10", "1000", "-"]
    assert lines[2].split() == ["sink1", "10", "1000", "0"]
    assert lines[3].split() == ["sink2", "9", "995", "-5"]
    assert lines[-1] == "MISMATCH: the sinks do not all hold 0.000001000 USD"
    assert (
        _result((1_000, 10), (1_000, 10))
        .table()
        .endswith("OK: every sink holds 0.000001000 USD over 10 records")
    )
    assert result.to_dict()["differences"] == {"sink1": 0, "sink2": -5}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6379/0", "redis://h:6379/1"),
        ("redis://h:6379", "redis://h:6379/1"),
        ("rediss://:pw@h:6380/4", "rediss://:pw@h:6380/5"),
    ],
)
def test_the_enforce_path_uses_the_next_database(url: str, expected: str) -> None:
    assert enforcer_url_for(url) == expected


@pytest.mark.parametrize("url", ["redis+cluster://h:7000", "unix:///tmp/r.sock", "redis://h/x"])
def test_no_database_to_derive_is_an_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"separate Redis|database number"):
        enforcer_url_for(url)


def test_the_reference_sums_amounts_exactly_and_counts_errors() -> None:
    exporter = CostSumSpanExporter()
    spans = [
        ReadableSpan(name="a", attributes={"cost.amount": 0.1}),
        ReadableSpan(name="b", attributes={"cost.amount": 0.2}),
        ReadableSpan(name="c", attributes={"cost.error": "pricing_stale: x"}),
        ReadableSpan(name="d", attributes={}),
    ]
    exporter.export(spans)
    assert (exporter.nanos, exporter.priced, exporter.unpriced) == (300_000_000, 2, 1)


@pytest.mark.integration
def test_a_derived_database_the_server_refuses_is_named_with_the_way_out(
    redis_server: RedisServer,
) -> None:
    # Database 15 is the last of the default 16: the derived 16 is refused at the first PING.
    url = redis_server.url.rsplit("/", 1)[0] + "/15"
    with pytest.raises(ValueError, match=r"/16'.*--enforcer-redis-url"):
        reconcile("127.0.0.1:1", url, spans=1, services=1, timeout=2)
