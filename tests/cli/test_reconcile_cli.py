"""``otelcost reconcile`` against the fixtures' redis-server and broker."""

from __future__ import annotations

import json

import pytest
import redis
from _cli_support import exit_code

from _kafka import read_all_records
from _records import cost_record
from _servers import KafkaBroker, RedisServer, free_port
from otelcost.cli import main
from otelcost.exporters import KafkaCostExporter


def _argv(redis_server: RedisServer, kafka_broker: KafkaBroker, *extra: str) -> list[str]:
    return [
        "reconcile",
        "--bootstrap-servers",
        kafka_broker.bootstrap,
        "--redis-url",
        redis_server.url,
        "--spans",
        "3000",
        "--timeout",
        "60",
        *extra,
    ]


@pytest.mark.slow
def test_every_sink_agrees_and_the_run_cleans_up(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    kafka_broker: KafkaBroker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(_argv(redis_server, kafka_broker, "--json")) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is True and result["problems"] == []
    reference = result["totals"][0]
    assert reference["records"] == 3000 and reference["nanos"] > 0
    assert [t["nanos"] for t in result["totals"]] == [reference["nanos"]] * 5
    assert set(result["differences"].values()) == {0}
    # Schema 2: many records per message, every message consumed.
    assert 0 < result["counters"]["topic_messages"] == result["counters"]["enforce_consumed"]
    assert result["counters"]["topic_messages"] < 3000
    # Nothing of the run is left behind in either database, nor the topic.
    assert redis_client.keys("*reconcile-*") == []
    assert redis_server.client(db=1).keys("*reconcile-*") == []
    assert result["topic"] not in kafka_broker.admin().list_topics(timeout=10).topics


@pytest.mark.slow
def test_a_topic_holding_foreign_records_does_not_reconcile(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stray = cost_record(
        trace_id="1" * 32,
        span_id="2" * 16,
        service="someone-else",
        operation="GET /",
        cost_amount=0.5,
    )
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic)
    exporter.export([stray])
    assert exporter.force_flush(30_000)
    exporter.shutdown()
    assert main(_argv(redis_server, kafka_broker, "--topic", kafka_topic, "--keep")) == 1
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.startswith(f"Kafka topic {kafka_topic}"))
    assert line.split()[-1] == "+500000000"  # the stray record's 0.5 USD in nano-units
    assert "MISMATCH" in out
    assert len(read_all_records(kafka_broker.bootstrap, kafka_topic)) == 3001  # --keep


def test_unreachable_redis_exits_2_without_a_traceback(
    kafka_broker: KafkaBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    code = main(["reconcile", "--bootstrap-servers", kafka_broker.bootstrap, "--redis-url", url])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("otelcost reconcile: ConnectionError") and "s3cret" not in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--redis-url", "redis+cluster://127.0.0.1:7000"], "separate Redis for the enforce"),
        (["--redis-url", "redis://h/0", "--enforcer-redis-url", "redis://h/0"], "another Redis"),
        (["--redis-url", "redis://h/0", "-X", "novalue"], "-X expects KEY=VALUE"),
        (["--redis-url", "redis://h/0", "--timeout", "0"], "--timeout must be > 0"),
    ],
)
def test_bad_arguments_exit_2(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reconcile", "--bootstrap-servers", "127.0.0.1:9", *extra]) == 2
    assert message in capsys.readouterr().err


def test_help_names_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["reconcile", "--help"]) == 0
    assert "exit status: 0 when every sink agrees" in capsys.readouterr().out
