"""``otelcost rollup``: cost records per second from Kafka into PostgreSQL rollups.

A private Tansu broker (``tests/_servers.py``) holds a topic filled with cost records of
6 services x 4 operations over 10 minutes, as the exporter writes them (schema 2: many
records of one service per message); a throwaway database on the machine's PostgreSQL
(``tests/_postgres.py``, dropped at the end) holds the rollup schema. Measured, each
round with a fresh consumer group so that the whole topic is read again:

1. rollup: ``Rollup.run(max_records=N)`` — consume, validate, sum per minute, upsert and
   store the offsets in one transaction per batch; records/s from the partition assignment
   to the last commit (leaving the group afterwards is not counted), and process CPU per
   record until then (the Python side only: PostgreSQL's own CPU is not in it);
2. baselines: a confluent-kafka consumer assigned the same partitions that only validates
   each message as the rollup does (``otelcost.stream._consume.decode_rows``): the floor for
   any consumer of this stream in Python; and the same consumer reading without validating.

Run ``python -m bench.bench_rollup [--quick]``; a full run rewrites the ``rollup`` section
of docs/performance.md.
"""

from __future__ import annotations

import logging
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bench._report import Metric, Result, command, environment, main_for, summary, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _postgres import TestDatabase
from _servers import KafkaBroker, find_tansu_binary

SERVICES = ("checkout", "payment-svc", "search", "cart", "auth", "llm-gateway")
OPERATIONS = ("GET /users/{id}", "POST /orders", "GET /search", "chat.completions")
T0 = 1_764_236_400_000
TARGET = 100_000  # records/s into PostgreSQL (the performance targets)
# Tansu joins a consumer group in ~3 s with these (see tests/_kafka.py).
FAST_GROUP = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 10000,
}


def _fill(bootstrap: str, topic: str, records: int) -> tuple[int, int]:
    """Produce ``records`` cost records (schema 2); their exact total in nanos, and the
    number of messages they took."""
    from otelcost.exporters import KafkaCostExporter
    from otelcost.money import from_nanos
    from otelcost.record import CostRecord

    rng = random.Random(3)
    exporter = KafkaCostExporter(bootstrap, topic)
    total = 0
    for start in range(0, records, 10_000):
        chunk = [
            CostRecord(
                trace_id=f"{i + 1:032x}",
                span_id=f"{i + 1:016x}",
                service=SERVICES[i % len(SERVICES)],
                operation=OPERATIONS[(i // len(SERVICES)) % len(OPERATIONS)],
                cost_amount=from_nanos(rng.randrange(1, 5_000_000)),
                currency="USD",
                duration_ms=12.5,
                timestamp=T0 + rng.randrange(0, 10 * 60_000),
            )
            for i in range(start, min(start + 10_000, records))
        ]
        total += sum(r.cost_nanos for r in chunk)
        exporter.export(chunk)
        exporter.force_flush(120_000)
    exporter.shutdown()
    stats = exporter.stats()
    if stats["delivered_spans"] != records:
        raise RuntimeError("could not fill the topic")
    return total, stats["delivered"]


def _rollup_once(
    bootstrap: str, topic: str, dsn: str, records: int, messages: int
) -> dict[str, float]:
    from otelcost.rollup import Rollup
    from otelcost.rollup._batch import RollupBatch

    assigned: list[float] = []
    committed: list[tuple[float, float]] = []  # (wall, process CPU) after each batch

    class OnAssign(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("assigned ") and not assigned:
                assigned.append(time.perf_counter())

    class Timed(Rollup):
        # Up to the last commit, as the baselines stop at their last message: leaving the
        # group in close() is not work per record.
        def _complete(self, batch: RollupBatch) -> None:
            super()._complete(batch)
            committed.append((time.perf_counter(), time.process_time()))

    log = logging.getLogger("otelcost.rollup")
    log.setLevel(logging.INFO)
    handler = OnAssign()
    log.addHandler(handler)
    try:
        rollup = Timed(
            bootstrap,
            dsn,
            topic=topic,
            group=f"bench-{uuid.uuid4().hex[:8]}",
            kafka_config=FAST_GROUP,
        )
        cpu = time.process_time()
        rollup.run(max_records=messages)
    finally:
        log.removeHandler(handler)
    end, cpu = committed[-1][0], committed[-1][1] - cpu
    return {"seconds": end - assigned[0], "cpu": cpu}


def _consume_once(bootstrap: str, topic: str, messages: int, decode: bool) -> dict[str, float]:
    """Read the whole topic with a bare consumer, validating each message (as the rollup
    does, without summing or storing) or not at all."""
    from confluent_kafka import Consumer, TopicPartition

    from otelcost.stream._consume import Headers, decode_rows

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    seen = 0
    began, cpu = time.perf_counter(), time.process_time()
    while seen < messages:
        # No more than what is left, as Rollup.run(max_records=...) asks: consume() returns
        # as soon as they are there instead of waiting for its timeout.
        for msg in consumer.consume(num_messages=messages - seen, timeout=1.0):
            if msg.error() is None:
                seen += 1
                if decode:
                    decode_rows(msg.key(), msg.value(), cast(Headers, msg.headers()))
    end, cpu = time.perf_counter(), time.process_time() - cpu
    consumer.close()
    return {"seconds": end - began, "cpu": cpu}


def _check_total(dsn: str, rounds: int, expected: int) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT sum(cost_nanos) FROM otelcost.cost_minute").fetchone()
    if row is None or int(row[0]) != rounds * expected:
        raise RuntimeError(f"rollup total {row} != {rounds} x {expected}")


def run(quick: bool) -> Result:
    """Start the broker and a scratch database, measure, drop them, return the section."""
    from otelcost.rollup import init_db

    rounds, records = (1, 30_000) if quick else (3, 200_000)
    results: dict[str, list[dict[str, float]]] = {
        "rollup": [],
        "consume + validate": [],
        "consume": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        broker = KafkaBroker(find_tansu_binary(), Path(tmp))
        database = TestDatabase()
        broker.start()
        database.create()
        try:
            init_db(database.dsn)
            topic = broker.create_topic(f"bench-rollup-{uuid.uuid4().hex[:8]}", partitions=3)
            expected, messages = _fill(broker.bootstrap, topic, records)
            bootstrap = broker.bootstrap
            for _ in range(rounds):  # interleaved, so machine load hits all alike
                results["consume"].append(_consume_once(bootstrap, topic, messages, False))
                results["consume + validate"].append(
                    _consume_once(bootstrap, topic, messages, True)
                )
                results["rollup"].append(
                    _rollup_once(bootstrap, topic, database.dsn, records, messages)
                )
            _check_total(database.dsn, rounds, expected)
        finally:
            broker.stop()
            database.drop()
    for samples in results.values():
        for sample in samples:
            sample["rate"] = records / sample["seconds"]
            sample["cpu_us"] = sample["cpu"] / records * 1e6

    rows = []
    for name, samples in results.items():
        rate, spread = summary([s["rate"] for s in samples])
        cpu, _ = summary([s["cpu_us"] for s in samples])
        rows.append(
            [name, f"{rate:,.0f}", f"±{spread / 2:,.0f}", f"{cpu:.2f}", f"{1e6 / cpu:,.0f}"]
        )
    rollup_rate = summary([s["rate"] for s in results["rollup"]])[0]
    floor_rate = summary([s["rate"] for s in results["consume + validate"]])[0]
    consume_rate = summary([s["rate"] for s in results["consume"]])[0]
    rollup_cpu = summary([s["cpu_us"] for s in results["rollup"]])[0]
    body = "\n".join(
        [
            "## `otelcost rollup` into PostgreSQL",
            "",
            f"{command('bench_rollup', quick)} — {environment()}.",
            f"Tansu broker (memory storage) and the machine's PostgreSQL on the same 2 CPUs "
            f"as the measured process (not pinned). Median of {rounds} run(s), ± half the "
            f"spread; {records:,} records per run (6 services x 4 operations over 10 minutes: "
            f"{6 * 4 * 10:,} minute rows), default batch of 5,000 (one transaction each). "
            "The totals in PostgreSQL are checked against the produced sum to the nano-unit.",
            "",
            table(
                [
                    "measurement",
                    "records/s",
                    "spread",
                    "CPU µs/record (Python)",
                    "one core (1e6/CPU µs)",
                ],
                rows,
            ),
            "",
            "- *rollup*: consume, validate, sum per minute, upsert, store offsets, commit; "
            "from partition assignment to the last commit;",
            "- *consume + validate*: a bare confluent-kafka consumer that only validates "
            "each message with the same code (`decode_rows`, no CostRecord built): the floor "
            "for a Python consumer of this stream;",
            "- *consume*: the same consumer without validating: what the broker and the "
            "client deliver.",
            "",
            f"The rollup runs at {rollup_rate / floor_rate:.0%} of the floor "
            f"(consume alone: {consume_rate:,.0f}/s): per batch it adds the per-minute sums "
            "and one round of upserts, whose size depends on the distinct "
            "(minute, service, operation) rows, not on the records. *One core* is the rate "
            "the consumer's own CPU time allows. The machine was shared with other work "
            "while this ran.",
        ]
    )
    metrics = [
        Metric(
            "otelcost rollup into PostgreSQL",
            rollup_rate,
            "records/s",
            target=TARGET,
            higher_is_better=True,
            vs_baseline=f"{rollup_rate / floor_rate:.0%} of consume + validate alone "
            f"({floor_rate:,.0f}/s); CPU allows "
            f"{1e6 / rollup_cpu:,.0f}/s per core",
        )
    ]
    return Result("rollup", body, metrics)


def main(argv: Sequence[str] | None = None) -> None:
    main_for(run, __doc__, argv)


if __name__ == "__main__":
    main()
