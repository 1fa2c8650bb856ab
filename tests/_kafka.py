"""Kafka helpers for tests: fast-joining consumer settings and an independent topic reader.

``read_all`` uses kafka-python (pure Python), which shares no code with librdkafka or with
otelcost, so what it returns is what really is on the broker.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition

from otelcost.record import CostRecord
from otelcost.stream._consume import decode
from otelcost.stream.schema2 import encode_messages

__all__ = ["Message", "consumer_config", "partly_bad_message", "read_all", "read_all_records"]


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
