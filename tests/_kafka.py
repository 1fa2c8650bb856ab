"""Kafka helpers for tests: fast-joining consumer settings, an independent topic reader,
and what the tests of the stream's consumers (enforce, rollup) share.

``read_all`` uses kafka-python (pure Python), which shares no code with librdkafka or with
otelcost, so what it returns is what really is on the broker.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from _wait import wait_for
from otelcost.exporters import KafkaCostExporter
from otelcost.record import CostRecord

# The stream tests' one private import: the consumers' decoder, to read back what is on a
# topic as enforce and rollup read it.
from otelcost.stream._consume import decode
from otelcost.stream.schema2 import encode_messages

__all__ = [
    "FAST_GROUP",
    "Message",
    "assert_dead_lettered",
    "committed",
    "consumer_argv",
    "consumer_config",
    "decode",
    "ends",
    "invalid_messages",
    "new_group",
    "partly_bad_message",
    "produce",
    "produce_both_schemas",
    "produce_raw",
    "read_all",
    "read_all_records",
    "run_in_thread",
    "run_until_idle",
    "sigkill_twice",
    "sigterm_midway",
    "stop_all",
]


# Consumer group timings with which Tansu lets a member join in ~3 s instead of ~23 s.
FAST_GROUP = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 10000,
}


def new_group() -> str:
    """A consumer group name no test has used yet."""
    return f"otelcost-test-{uuid.uuid4().hex[:8]}"


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka consumer settings that join a Tansu group fast (``FAST_GROUP``).

    Starts from the earliest offset when the group has no committed offset. ``overrides``
    are applied last; pass dotted names as ``**{"enable.auto.commit": False}``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        **FAST_GROUP,
    }
    config.update(overrides)
    return config


class Message(NamedTuple):
    """One record as stored on the broker."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp: int


def read_all(bootstrap: str, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every message in ``topic``, by partition then offset, read without a consumer group.

    Reads at least up to the end offsets at call time, then on until a poll comes back
    empty. (Tansu reports a partition's end as the *first* offset of its last batch + 1, so
    the end offsets alone would cut a final multi-record batch short.) Raises TimeoutError
    if the topic does not exist or cannot be read to its end within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=max(int(timeout * 1000), 5000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic!r} not found on {bootstrap}")
            time.sleep(0.1)
            consumer.cluster.request_update()
            partitions = consumer.partitions_for_topic(topic)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends: dict[TopicPartition, int] = consumer.end_offsets(assigned)
        messages: list[Message] = []
        drained = False
        while not drained:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                progress = {tp.partition: (consumer.position(tp), end) for tp, end in ends.items()}
                raise TimeoutError(
                    f"read {len(messages)} messages of {topic!r} in {timeout} s; "
                    f"partition: (position, end) = {progress}"
                )
            batches = consumer.poll(timeout_ms=int(min(remaining, 0.2) * 1000) + 1)
            for records in batches.values():
                messages.extend(
                    Message(
                        partition=r.partition,
                        offset=r.offset,
                        key=r.key,
                        value=r.value,
                        headers=tuple((k, v) for k, v in r.headers),
                        timestamp=r.timestamp,
                    )
                    for r in records
                )
            drained = not batches and all(consumer.position(tp) >= end for tp, end in ends.items())
        return sorted(messages, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


def read_all_records(bootstrap: str, topic: str, timeout: float = 10.0) -> list[CostRecord]:
    """Every record on ``topic`` (schema 1 or 2 messages), by partition, offset and index;
    AssertionError if a message or record is invalid."""
    records: list[CostRecord] = []
    for message in read_all(bootstrap, topic, timeout):
        good, bad = decode(message.key, message.value, message.headers)
        assert bad == [], bad
        records.extend(good)
    return records


def produce(
    bootstrap: str, topic: str, records: Sequence[CostRecord], *, schema: Literal[1, 2] = 1
) -> None:
    """Write ``records`` with KafkaCostExporter, every span delivered. Schema 1 by default:
    one message per record, so message counts are record counts (with a local queue large
    enough that nothing is folded into aggregates)."""
    exporter = KafkaCostExporter(
        bootstrap, topic, schema=schema, queue_buffering_max_messages=100_000
    )
    try:
        exporter.export(records)
        assert exporter.force_flush(30_000)
        assert exporter.stats()["delivered_spans"] == sum(r.span_count for r in records)
    finally:
        exporter.shutdown()


def produce_raw(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes | None, bytes]],
    *,
    schema: bytes = b"1",
) -> None:
    """Write ready (key, value) messages with the ``otelcost-schema`` header, all delivered."""
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000})
    delivered: list[Any] = []
    for key, value in messages:
        producer.produce(
            topic,
            value,
            key,
            headers=[("otelcost-schema", schema)],
            on_delivery=lambda err, _msg: delivered.append(err),
        )
    assert producer.flush(30) == 0
    assert delivered == [None] * len(messages)


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    """The group's offsets committed to Kafka, read with kafka-python (no code shared with
    ours)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        consumer.close()


def ends(messages: Sequence[Message]) -> dict[int, int]:
    """Per partition, the offset after its last message."""
    found: dict[int, int] = {}
    for message in messages:
        found[message.partition] = max(found.get(message.partition, 0), message.offset + 1)
    return found


def run_in_thread(consumer: Any, **kwargs: Any) -> tuple[threading.Thread, list[bool]]:
    """Start ``consumer.run(**kwargs)`` (an Enforcer or Rollup) on a thread; its outcome
    lands in the list."""
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(consumer.run(**kwargs)))
    thread.start()
    return thread, outcome


class PartlyBad(NamedTuple):
    """A schema-2 message with one invalid record, and what a consumer must make of it."""

    key: bytes
    value: bytes
    good: list[CostRecord]
    bad_index: int
    dead_value: bytes  # the one-record message holding the bad record's original line


def partly_bad_message(records: list[CostRecord], bad_index: int) -> PartlyBad:
    """``records`` (one service) as one schema-2 message whose record ``bad_index`` has its
    timestamp in seconds; the message stays valid JSON."""
    ((key, value, _members),) = encode_messages(records, 1_000_000)
    lines = value.split(b"\n")
    line = lines[bad_index + 1]
    ms = str(records[bad_index].timestamp).encode()
    lines[bad_index + 1] = line.replace(b"," + ms, b"," + ms[:-3])
    body = lines[bad_index + 1].rstrip(b",")
    good = [r for i, r in enumerate(records) if i != bad_index]
    return PartlyBad(
        key.encode(), b"\n".join(lines), good, bad_index, lines[0] + b"\n" + body + b"\n]}"
    )


def stop_all(*pairs: tuple[Any, threading.Thread]) -> None:
    """Stop each consumer (an Enforcer or Rollup) and join its thread, if it was started."""
    for consumer, _ in pairs:
        consumer.stop()
    for _, thread in pairs:
        if thread.ident is not None:
            thread.join(120)
            assert not thread.is_alive()


def invalid_messages(valid: CostRecord) -> dict[str, tuple[bytes | None, bytes]]:
    """(key, value) of one schema-1 message per way a record can be invalid, made from
    ``valid``, by name; ``assert_dead_lettered`` checks what a consumer makes of them."""
    fields = json.loads(valid.to_json())
    missing = dict(fields)
    del missing["currency"]
    seconds = dict(fields, timestamp=fields["timestamp"] // 1000)
    nan = re.sub(r'"cost_amount": [^,]+', '"cost_amount": NaN', json.dumps(fields))
    big = dict(fields, operation="x" * (1 << 20))
    return {
        "malformed": (b"payment-svc", b'{"schema": 1, "trace_id": '),
        "nan": (b"payment-svc", nan.encode()),
        "seconds": (b"payment-svc", json.dumps(seconds).encode()),
        "missing": (b"payment-svc", json.dumps(missing).encode()),
        "1mb": (b"payment-svc", json.dumps(big).encode()),
        "key": (b"\xff\xfepayment", json.dumps(fields).encode()),
    }


def assert_dead_lettered(
    bootstrap: str, topic: str, invalid: dict[str, tuple[bytes | None, bytes]]
) -> None:
    """``topic``'s DLQ holds exactly the ``invalid`` messages, byte for byte, with their
    original headers, where each came from and why it was rejected."""
    on_broker = read_all(bootstrap, topic)
    dead = read_all(bootstrap, f"{topic}.dlq")
    assert sorted((m.key, m.value) for m in dead) == sorted(invalid.values())
    errors = {}
    for message in dead:
        headers = dict(message.headers)
        assert headers["otelcost-schema"] == b"1"  # the original headers are kept
        source = next(m for m in on_broker if (m.key, m.value) == (message.key, message.value))
        assert headers["otelcost-source"] == (
            f"{topic}/{source.partition}/{source.offset}".encode()
        )
        name = next(n for n, kv in invalid.items() if kv == (message.key, message.value))
        errors[name] = headers["otelcost-error"].decode()
    assert errors["malformed"].startswith("<record>: not valid JSON")
    assert errors["nan"].startswith("<record>: not valid JSON")
    assert errors["seconds"].startswith("timestamp:")
    assert errors["missing"] == "currency: missing"
    assert errors["1mb"].startswith("<record>:") and "exceeds" in errors["1mb"]
    assert errors["key"] == "<key>: not valid UTF-8"


def produce_both_schemas(
    bootstrap: str, topic: str, records: Sequence[CostRecord], partly: PartlyBad
) -> int:
    """``records`` in thirds as schema 1, 2 and 2 with ``partly`` before the last third;
    returns the number of messages on ``topic``."""
    third = len(records) // 3
    produce(bootstrap, topic, records[:third], schema=1)
    produce(bootstrap, topic, records[third : 2 * third], schema=2)
    produce_raw(bootstrap, topic, [(partly.key, partly.value)], schema=b"2")
    produce(bootstrap, topic, records[2 * third :], schema=2)
    return len(read_all(bootstrap, topic))


# -- the consumer commands (otelcost enforce / rollup) as separate processes -----------------


def consumer_argv(
    command: str,
    bootstrap: str,
    topic: str,
    group: str,
    *options: str,
    batch_size: int = 100,
    kafka_config: dict[str, int] = FAST_GROUP,
) -> list[str]:
    """``python -m otelcost.cli <command> <options>`` reading ``topic`` as ``group``,
    joining the group fast."""
    return [
        sys.executable, "-m", "otelcost.cli", command,
        "--bootstrap-servers", bootstrap, "--topic", topic, "--group", group,
        "--batch-size", str(batch_size), *options,
        *(f"-X{k}={v}" for k, v in kafka_config.items()),
    ]  # fmt: skip


def sigkill_twice(
    argv: Sequence[str],
    processes: list[subprocess.Popen[bytes]],
    progress: Callable[[], int],
    below: int | None = None,
) -> None:
    """Start ``argv`` and SIGKILL it at a random point once ``progress()`` has grown, twice;
    after each kill some, and with ``below`` not all, of the work is done."""
    for _ in range(2):
        before = progress()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(proc)
        wait_for(lambda before=before: progress() > before, 60, "progress")
        time.sleep(random.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert progress() > 0
        if below is not None:
            assert progress() < below


def sigterm_midway(
    argv: Sequence[str], processes: list[subprocess.Popen[bytes]], progress: Callable[[], int]
) -> tuple[dict[str, int], bytes]:
    """Run ``argv --json``, SIGTERM it once ``progress()`` is positive: it exits 0; returns
    its stats and stderr."""
    proc = subprocess.Popen([*argv, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    processes.append(proc)
    wait_for(lambda: progress() > 0, 60, "progress")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
    stats: dict[str, int] = json.loads(out)
    return stats, err


def run_until_idle(argv: Sequence[str], idle: int = 20, timeout: float = 240) -> dict[str, int]:
    """Run ``argv`` until ``idle`` seconds without records: it exits 0; returns its stats."""
    result = subprocess.run(
        [*argv, "--idle-timeout", str(idle), "--json"],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    stats: dict[str, int] = json.loads(result.stdout)
    return stats
