"""Kafka helpers for tests: fast-joining consumer settings and an independent topic reader.

``read_all`` uses kafka-python (pure Python), which shares no code with librdkafka or with
otelcost, so what it returns is what really is on the broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from confluent_kafka import Producer
from kafka import KafkaConsumer, TopicPartition

from otelcost.exporters import KafkaCostExporter
from otelcost.record import CostRecord
from otelcost.stream._consume import decode
from otelcost.stream.schema2 import encode_messages

__all__ = [
    "Message",
    "committed",
    "consumer_config",
    "ends",
    "partly_bad_message",
    "produce",
    "produce_raw",
    "read_all",
    "read_all_records",
    "run_in_thread",
    "wait_for",
]


def consumer_config(bootstrap: str, group: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka consumer settings that join a Tansu group in ~3 s instead of ~23 s.

    Starts from the earliest offset when the group has no committed offset. ``overrides``
    are applied last; pass dotted names as ``**{"enable.auto.commit": False}``.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "max.poll.interval.ms": 10000,
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


def wait_for(condition: Callable[..., object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


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
