"""A gunicorn-style pre-fork app (the master installs otelcost, then forks workers) with a
worker SIGKILLed while it still holds spans, replaced, and the rest stopped gracefully.

A SIGKILLed process cannot count what it loses: the spans it had queued are gone. What
the test proves: every other process (the master's own spans still queued at fork time,
the surviving and the replacement workers) reconciles exactly in Kafka and Redis; what
the killed worker got out is a subset of what it priced; nothing is counted twice (a
child never re-sends the master's spans); the app's requests keep their latency.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from _stack import BUDGETS, FIGURES, SERVICE, Driver, assert_latency, get

from _kafka import read_all_records
from _servers import KafkaBroker, RedisServer
from _wait import wait_for
from otelcost.budget import RedisBudgetStore
from otelcost.reconcile import rolling_spend

_SCRIPT = Path(__file__).with_name("_prefork.py")


class Client(Driver):
    """Sequential requests to the pre-fork server; ``pause`` leaves none in flight."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.gate = threading.Lock()
        self.n = 0

    def request(self) -> float:
        with self.gate:
            self.n += 1
            started = time.perf_counter()
            status = get(f"{self.url}/orders/{self.n}")
            elapsed = time.perf_counter() - started
        assert status == 200, status
        return elapsed


def _ledger(path: Path) -> dict[str, int]:
    spans = {}
    for line in path.read_text().splitlines():
        span_id, nanos = line.split()
        spans[span_id] = int(nanos)
    return spans


def _master_state(directory: Path) -> dict[str, Any]:
    path = directory / "master.json"
    return json.loads(path.read_text()) if path.exists() else {"workers": []}


@pytest.mark.slow
def test_prefork_worker_killed_with_spans_in_flight(
    redis_server: RedisServer,
    redis_client: redis.Redis,
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    config = {
        "dir": str(tmp_path),
        "redis_url": redis_server.url,
        "bootstrap": kafka_broker.bootstrap,
        "topic": kafka_topic,
        "workers": 2,
        "prefork_spans": 50,
    }
    master = subprocess.Popen([sys.executable, str(_SCRIPT), json.dumps(config)])
    try:
        wait_for(lambda: len(_master_state(tmp_path)["workers"]) == 2, 30, "the workers")
        first = _master_state(tmp_path)
        client = Client(f"http://127.0.0.1:{first['port']}")
        baseline = client.drive(1.5)
        # Both workers have served (the kernel hands connections to either).
        wait_for(
            lambda: (
                all((tmp_path / f"{pid}.spans").exists() for pid in first["workers"])
                or client.drive(0.2) is None
            ),
            30,
            "both workers to serve",
        )
        with client.driving() as faulted:
            time.sleep(1.0)
            with client.gate:  # no request in flight: only spans are
                victim = first["workers"][0]
                os.kill(victim, signal.SIGKILL)
            wait_for(
                lambda: (
                    victim not in _master_state(tmp_path)["workers"]
                    and len(_master_state(tmp_path)["workers"]) == 2
                ),
                30,
                "the replacement",
            )
            time.sleep(1.0)
        master.send_signal(signal.SIGTERM)
        assert master.wait(60) == 0
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(10)
    assert_latency(baseline, faulted)

    ledgers = {int(p.stem): _ledger(p) for p in tmp_path.glob("*.spans")}
    counters = {int(p.stem): json.loads(p.read_text()) for p in tmp_path.glob("[0-9]*.json")}
    killed = ledgers.pop(victim)
    assert victim not in counters and set(counters) == set(ledgers)
    assert first["pid"] in ledgers and len(ledgers[first["pid"]]) == config["prefork_spans"]

    records = read_all_records(config["bootstrap"], kafka_topic)
    on_topic: dict[str, int] = {}
    for record in records:
        assert not record.aggregate
        assert record.span_id not in on_topic, "a span was counted twice"
        on_topic[record.span_id] = record.cost_nanos
    exact = {span: nanos for ledger in ledgers.values() for span, nanos in ledger.items()}
    got_out = {span: nanos for span, nanos in on_topic.items() if span in killed}
    # Every process stopped gracefully delivered exactly what it priced, once.
    assert {span: on_topic.get(span) for span in exact} == exact
    assert set(on_topic) == set(exact) | set(got_out)
    assert got_out.items() <= killed.items()
    assert len(got_out) < len(killed), "the killed worker had nothing in flight"
    FIGURES.update(
        spans=len(exact) + len(killed),
        killed_priced=len(killed),
        killed_delivered=len(got_out),
        topic_duplicates=0,
    )
    for pid, stats in counters.items():
        assert stats["processor"]["spans_dropped"] == stats["processor"]["records_dropped"] == 0
        assert stats["kafka"]["delivered_spans"] == len(ledgers[pid]), (pid, stats["kafka"])
        assert stats["kafka"]["dropped_spans"] == 0
        assert stats["redis"]["nanos_delivered"] == sum(ledgers[pid].values())
        assert stats["redis"]["nanos_dropped"] == 0
    # Redis holds the exact part plus whatever the killed worker had flushed, no more.
    spend = rolling_spend(RedisBudgetStore(config["redis_url"], BUDGETS), [SERVICE])
    assert sum(exact.values()) <= spend <= sum(exact.values()) + sum(killed.values())
