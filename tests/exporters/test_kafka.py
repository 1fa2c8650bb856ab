"""KafkaCostExporter against the real broker fixture, read back with kafka-python (_kafka.py)."""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import itertools
import json
import logging
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiokafka
import confluent_kafka
import jsonschema
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2
from opentelemetry.proto.trace.v1 import trace_pb2

from _kafka import Message, decode, read_all
from _processes import in_forked_child
from _records import T0, cost_record
from _servers import KafkaBroker
from otelcost.costing.install import default_exporters
from otelcost.exporters import CostExportResult, KafkaCostExporter
from otelcost.exporters._overflow import OverflowAggregates
from otelcost.exporters.kafka import (
    BOOTSTRAP_ENV,
    CONFIG_ENV,
    ENCODING_ENV,
    SCHEMA_ENV,
    TOPIC_ENV,
    kafka_exporter_from_env,
)
from otelcost.money import NANOS_BOUND, ROUND_TRIP_BOUND, from_nanos
from otelcost.record import CostRecord
from otelcost.stream.schema2 import encode_messages, json_schema

_SERVICES = ("payment-svc", "llm-gateway", "search", "checkout", "ünïcode-svc", "auth", "cart")
SCHEMA_2 = json_schema()
# Reconnect fast after a broker restart (librdkafka backs off up to 10 s by default).
_FAST_RECONNECT = {"reconnect_backoff_max_ms": 200, "reconnect_backoff_ms": 50}


def _records(
    count: int, *, nanos: int | None = None, start: int = 0, seed: int = 5
) -> list[CostRecord]:
    rng = random.Random(seed + start)
    out = []
    for i in range(start, start + count):
        cost = nanos if nanos is not None else rng.randrange(1, 10_000_000)
        out.append(
            cost_record(
                i + 1,
                service=_SERVICES[i % len(_SERVICES)],
                operation=f"GET /api/v2/items/{i % 3}",
                cost_amount=from_nanos(cost),
                duration_ms=round(rng.uniform(0.1, 900.0), 3),
                timestamp=T0 + i,
                region="us-east-1",
                pricing_version="2026-11-27.1",
                usage={"gen_ai.usage.input_tokens": 812} if i % 5 == 0 else {},
            )
        )
    return out


def _decode(messages: Sequence[Message], schema: int = 2) -> list[CostRecord]:
    """Every record of every message, checking the wire contract on the way."""
    records = []
    for message in messages:
        assert dict(message.headers) == {"otelcost-schema": str(schema).encode()}
        assert message.value is not None
        if schema == 1:
            batch = [CostRecord.from_json(message.value)]
        else:
            jsonschema.validate(json.loads(message.value), SCHEMA_2)
            batch, bad = decode(message.key, message.value, message.headers)
            assert bad == []
        assert {message.key} == {r.service.encode("utf-8") for r in batch}
        records.extend(batch)
    return records


def _export_all(broker: KafkaBroker, topic: str, records: Sequence[CostRecord]) -> None:
    """``records`` through an exporter with the default settings, all flushed."""
    exporter = KafkaCostExporter(broker.bootstrap, topic)
    try:
        exporter.export(records)
        assert exporter.force_flush(30_000)
    finally:
        exporter.shutdown()


def _spans_and_nanos(records: Sequence[CostRecord]) -> tuple[int, int]:
    return sum(r.span_count for r in records), sum(r.cost_nanos for r in records)


@pytest.mark.parametrize("schema", [2, 1])
def test_records_land_keyed_by_service_in_order(
    kafka_broker: KafkaBroker, kafka_topic: str, schema: Literal[1, 2]
) -> None:
    records = _records(700)
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic, schema=schema)
    try:
        for start in range(0, len(records), 100):
            assert exporter.export(records[start : start + 100]) is CostExportResult.SUCCESS
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()

    messages = read_all(kafka_broker.bootstrap, kafka_topic)
    received = _decode(messages, schema)
    assert sorted(received, key=lambda r: r.span_id) == records
    partitions: dict[str, set[int]] = collections.defaultdict(set)
    order: dict[str, list[str]] = collections.defaultdict(list)
    for message in messages:  # by partition, offset
        for record in _decode([message], schema):
            partitions[record.service].add(message.partition)
            order[record.service].append(record.span_id)
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len(set().union(*partitions.values())) > 1  # several services, several partitions
    for service, span_ids in order.items():
        assert span_ids == [r.span_id for r in records if r.service == service]
    # Schema 2: one message per service and export call (7 services, 7 calls).
    assert len(messages) == (700 if schema == 1 else 7 * 7)
    assert stats["queued"] == stats["delivered"] == len(messages)
    assert stats["spans"] == stats["delivered_spans"] == 700
    assert stats["failed"] == stats["overflowed"] == stats["dropped_spans"] == 0


def test_full_queue_folds_into_exact_aggregates_without_blocking(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    records = _records(3003)
    # 25 messages fit the local queue and nothing leaves it within the export calls. Each
    # call holds one record of each of the 7 services: 7 messages.
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap,
        kafka_topic,
        queue_buffering_max_messages=25,
        linger_ms=2000,
    )
    try:
        for start in range(0, len(records), len(_SERVICES)):
            chunk = records[start : start + len(_SERVICES)]
            assert exporter.export(chunk) is CostExportResult.SUCCESS
        after_export = exporter.stats()
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()

    assert after_export["queued"] == 25
    assert after_export["overflowed"] == after_export["overflow_pending_spans"] == 3003 - 25
    received = _decode(read_all(kafka_broker.bootstrap, kafka_topic))
    aggregates = [r for r in received if r.aggregate]
    assert _spans_and_nanos(received) == _spans_and_nanos(records)  # exact, to the nano
    assert sorted(r.service for r in aggregates) == sorted(_SERVICES)
    for aggregate in aggregates:
        folded = [r for r in records[25:] if r.service == aggregate.service]
        assert (aggregate.span_count, aggregate.cost_nanos) == _spans_and_nanos(folded)
        assert aggregate.operation == "OTHER"
        assert aggregate.timestamp == max(r.timestamp for r in folded)
        assert aggregate.region == "us-east-1"
    assert len({(r.trace_id, r.span_id) for r in received}) == len(received)
    assert stats["delivered_spans"] == 3003
    assert stats["aggregates_delivered"] == len(_SERVICES)
    assert stats["overflow_pending_spans"] == stats["dropped_spans"] == 0


def test_folds_worth_millions_land_to_the_nano(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    # A full local queue through an expensive stretch: the folded records pass 2**53
    # nano-units in all, yet each aggregate is one every consumer accepts, and the sum of
    # what lands is exact.
    records = _large(20)
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap, kafka_topic, queue_buffering_max_messages=1, linger_ms=2000
    )
    try:
        for record in records:  # a message each: the first fills the queue
            assert exporter.export([record]) is CostExportResult.SUCCESS
        assert exporter.stats()["overflowed"] == 19
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()

    received = _decode(read_all(kafka_broker.bootstrap, kafka_topic))
    assert _spans_and_nanos(received) == _spans_and_nanos(records)
    aggregates = [r for r in received if r.aggregate]
    assert [r.span_count for r in aggregates] == [3] * 6 + [1]
    assert all(r.cost_nanos < ROUND_TRIP_BOUND for r in aggregates)
    assert stats["delivered_spans"] == 20
    assert stats["invalid_spans"] == stats["dropped_spans"] == stats["overflow_pending_spans"] == 0


@pytest.mark.slow
def test_broker_outage_delivered_plus_aggregates_equal_produced(
    kafka_broker: KafkaBroker, kafka_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker dies while spans are produced and comes back: every span is delivered once.

    Tansu's memory storage loses what it held before the crash, so the total is checked
    with delivery reports and the money with what is on the broker after the restart. Each
    record costs the same, so the surviving money must be exactly spans x cost.

    The restarted Tansu has also forgotten the idempotent producer's id, and librdkafka
    retries such a batch forever ("Unknown Producer Id"); when the messages time out the
    exporter folds them into aggregates and starts a new producer. A short
    message.timeout.ms makes that happen within the test.
    """
    caplog.set_level(logging.INFO, logger="otelcost.kafka")
    cost = 1_234_567
    records = _records(4000, nanos=cost)
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap,
        kafka_topic,
        queue_buffering_max_messages=200,
        message_timeout_ms=5000,
        **_FAST_RECONNECT,
    )
    try:
        exporter.export(records[:500])
        assert exporter.force_flush(30_000)
        exporter.export(records[500:700])  # queued or in flight when the broker dies
        kafka_broker.stop()
        for start in range(700, 4000, 100):
            began = time.monotonic()
            assert exporter.export(records[start : start + 100]) is CostExportResult.SUCCESS
            # Never waits for the broker: a wait for room in the full local queue would
            # last until messages time out (message.timeout.ms, 5 s); half that is slack
            # enough for a loaded machine.
            assert time.monotonic() - began < 2.5
        assert not exporter.force_flush(300)  # serves reports of what was acked before
        before_restart = exporter.stats()
        kafka_broker.start()
        kafka_broker.create_topic(kafka_topic, partitions=3)
        assert exporter.force_flush(60_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()

    assert before_restart["overflowed"] > 0
    assert stats["spans"] == stats["delivered_spans"] == 4000
    assert stats["dropped_spans"] == stats["invalid_spans"] == 0
    assert stats["aggregates_delivered"] >= 1
    survived = _decode(read_all(kafka_broker.bootstrap, kafka_topic))
    spans, nanos = _spans_and_nanos(survived)
    assert spans == 4000 - before_restart["delivered_spans"]
    assert nanos == spans * cost
    # One warning per failure streak, each closed by a recovery line.
    lines = [r for r in caplog.records if r.name == "otelcost.kafka"]
    kinds = ["W" if r.levelno >= logging.WARNING else "R" for r in lines]
    assert kinds and kinds[-1] == "R"
    assert "".join(kinds) == "WR" * (len(kinds) // 2), [r.getMessage() for r in lines]


@pytest.mark.slow
def test_a_broker_outage_never_stalls_an_export(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """Every broker down for longer than message.timeout.ms while spans keep coming: no
    export call spends more than a few ms of CPU serving a mass of delivery reports, the
    local queue is folded into aggregates a slice per export, and after the restart every
    span is accounted for."""
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap, kafka_topic, message_timeout_ms=4000, **_FAST_RECONNECT
    )
    records = _records(60_000)
    try:
        exporter.export(records[:10_000])
        assert exporter.force_flush(30_000)
        kafka_broker.stop()
        times: list[float] = []
        overflowed: list[int] = []
        for start in range(10_000, 60_000, 125):  # 400 exports over ~12 s
            began = time.thread_time()
            assert exporter.export(records[start : start + 125]) is CostExportResult.SUCCESS
            times.append(time.thread_time() - began)
            overflowed.append(exporter.stats()["overflowed"])
            time.sleep(0.03)
        during = exporter.stats()
        kafka_broker.start()  # empty (memory storage): the topic is created again on use
        assert exporter.force_flush(60_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    # 125 records folded take well under a millisecond. Serving a queue's worth of delivery
    # reports at once (the stall this guards against) took seconds, and folding the purged
    # queue inside the purging export 0.04-0.2 s. Now that export only takes the reports
    # (~2,800 callbacks: a few ms) and each export folds ~1 ms of them: 3-5 ms at worst.
    worst = max(times)
    assert worst < 0.05, worst
    assert sorted(times)[-10] < 0.01, sorted(times)[-10:]
    # No export folds the purged queue at once: each folds its own 125 spans and ~1 ms of
    # failed messages (those of a few hundred records).
    steps = [after - before for before, after in itertools.pairwise(overflowed)]
    assert max(steps) < 5_000, max(steps)
    # The queue was folded after 10 s (of 2,800 messages produced in the outage): what is
    # left is a few probes and messages librdkafka had already handed to the connection.
    assert during["in_queue"] <= 100
    assert during["overflowed"] > 40_000  # most of the outage's spans were folded
    assert stats["spans"] == stats["delivered_spans"] == 60_000
    assert stats["dropped_spans"] == stats["invalid_spans"] == 0


def test_otlp_json_parses_as_traces_data(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    records = _records(40)
    records[3] = CostRecord(
        trace_id="ab" * 16,
        span_id="cd" * 8,
        service="payment-svc",
        operation="POST /pay",
        cost_amount=0.0,
        currency="USD",
        duration_ms=5.0,
        timestamp=T0,
        usage={"gen_ai.usage.output_tokens": 12.5},
        error="PricingNotFoundError: payment-svc:POST /pay",
    )
    records.append(
        CostRecord(
            trace_id="ef" * 16,
            span_id="01" * 8,
            service="search",
            operation="OTHER",
            cost_amount=from_nanos(99_000),
            currency="USD",
            duration_ms=400.0,
            timestamp=T0 + 5,
            aggregate=True,
            span_count=17,
        )
    )
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic, encoding="otlp_json")
    try:
        assert exporter.export(records) is CostExportResult.SUCCESS
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()

    by_id = {r.span_id: r for r in records}
    seen = set()
    messages = read_all(kafka_broker.bootstrap, kafka_topic)
    assert len(messages) == len({r.service for r in records})  # one message per service
    for message in messages:
        assert message.headers == ()  # a Collector's topic: no otelcost header
        assert message.value is not None
        _parse_like_pdata(message.value)
        # Strict parse: an unknown field or a wrongly typed value raises ParseError.
        json_format.Parse(message.value, trace_pb2.TracesData())
        # OTLP/JSON ids are hex, protobuf JSON's bytes are base64: convert, then compare.
        doc = json.loads(message.value)
        for span in doc["resourceSpans"][0]["scopeSpans"][0]["spans"]:
            for field in ("traceId", "spanId"):
                span[field] = base64.b64encode(bytes.fromhex(span[field])).decode()
        data = json_format.ParseDict(doc, trace_pb2.TracesData())
        (resource_spans,) = data.resource_spans
        service = _attributes(resource_spans.resource.attributes)["service.name"]
        assert message.key == service.encode()
        (scope_spans,) = resource_spans.scope_spans
        assert scope_spans.scope.name == "otelcost"
        for span in scope_spans.spans:
            record = by_id[span.span_id.hex()]
            seen.add(record.span_id)
            assert span.trace_id.hex() == record.trace_id
            assert record.service == service
            assert span.name == record.operation
            assert span.end_time_unix_nano == record.timestamp * 1_000_000
            attrs = _attributes(span.attributes)
            assert attrs["cost.currency"] == record.currency
            assert attrs["cost.duration_ms"] == record.duration_ms
            assert attrs["cost.source"] == "otelcost"
            for name, amount in record.usage.items():
                assert attrs[name] == amount
            if record.error is None:
                assert attrs["cost.amount"] == record.cost_amount
            else:
                assert "cost.amount" not in attrs
                assert attrs["cost.error"] == record.error
            if record.aggregate:
                assert attrs["cost.aggregate"] is True
                assert attrs["cost.span_count"] == record.span_count
                assert span.start_time_unix_nano == span.end_time_unix_nano
            else:
                assert "cost.aggregate" not in attrs
                duration_ns = round(record.duration_ms * 1_000_000)
                assert span.start_time_unix_nano == span.end_time_unix_nano - duration_ns
    assert seen == set(by_id)
    assert stats["delivered_spans"] == sum(r.span_count for r in records)


_INT64 = range(-(2**63), 2**63)


def _parse_like_pdata(value: bytes) -> int:
    """Read an OTLP/JSON TracesData value with the Collector's pdata rules; its span count.

    pdata (go.opentelemetry.io/collector/pdata, internal/data/bytesid.go and the JSON
    iterator of AnyValue) hex-decodes traceId/spanId into exactly 16/8 bytes and reads
    fixed64/int64 fields (times, intValue) as decimal strings that must fit the type.
    """
    doc = json.loads(value)
    spans = 0
    for resource_spans in doc["resourceSpans"]:
        for kv in resource_spans["resource"]["attributes"]:
            _check_any_value(kv["value"])
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                assert len(bytes.fromhex(span["traceId"])) == 16
                assert len(bytes.fromhex(span["spanId"])) == 8
                for field in ("startTimeUnixNano", "endTimeUnixNano"):
                    assert isinstance(span[field], str)
                    assert 0 <= int(span[field]) < 2**64
                for kv in span["attributes"]:
                    _check_any_value(kv["value"])
                spans += 1
    return spans


def _check_any_value(value: dict[str, Any]) -> None:
    ((kind, inner),) = value.items()
    if kind == "intValue":
        assert isinstance(inner, str) and int(inner) in _INT64, inner
    elif kind == "doubleValue":
        assert isinstance(inner, float | int) and not isinstance(inner, bool)
    elif kind == "boolValue":
        assert isinstance(inner, bool)
    else:
        assert kind == "stringValue" and isinstance(inner, str)


def test_otlp_json_is_split_by_bytes_and_typed_as_the_collector_reads_it(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """500 long operation names: several messages, none over message.max.bytes, none
    refused; token counts as int64 strings, an integer beyond int64 as a double."""
    records = [
        CostRecord(
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            service="llm-gateway",
            operation=f"POST /v1/chat/{'x' * 3000}/{i}",
            cost_amount=from_nanos(1000 + i),
            currency="USD",
            duration_ms=1.5,
            timestamp=T0 + i,
            usage={"gen_ai.usage.input_tokens": 812.0, "huge": float(2**70), "ratio": 0.5},
        )
        for i in range(500)
    ]
    max_bytes = 200_000
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap, kafka_topic, encoding="otlp_json", message_max_bytes=max_bytes
    )
    try:
        exporter.export(records)
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    messages = read_all(kafka_broker.bootstrap, kafka_topic)
    assert len(messages) > 1
    assert all(m.value is not None and len(m.value) <= max_bytes for m in messages)
    assert sum(_parse_like_pdata(m.value or b"") for m in messages) == 500
    assert stats["delivered_spans"] == 500
    assert stats["overflowed"] == stats["invalid_spans"] == 0
    span = json.loads(messages[0].value or b"")["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attrs = {kv["key"]: kv["value"] for kv in span["attributes"]}
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "812"}
    assert attrs["huge"] == {"doubleValue": float(2**70)}
    assert attrs["ratio"] == {"doubleValue": 0.5}


def test_schema_2_is_split_by_bytes_below_message_max_bytes(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    records = _records(2000)
    max_bytes = 8_000
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic, message_max_bytes=max_bytes)
    try:
        exporter.export(records)
        assert exporter.force_flush(30_000)
    finally:
        exporter.shutdown()
    messages = read_all(kafka_broker.bootstrap, kafka_topic)
    assert len(messages) > 2 * len(_SERVICES)
    assert all(m.value is not None and len(m.value) <= max_bytes for m in messages)
    assert sorted(_decode(messages), key=lambda r: r.span_id) == records


def test_keyed_messages_land_where_java_and_kafka_python_put_them(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """murmur2: the partition of each service is kafka-python's DefaultPartitioner's."""
    services = [f"svc-{i}" for i in range(40)]
    records = [
        CostRecord(
            trace_id=f"{i + 1:032x}",
            span_id=f"{i + 1:016x}",
            service=service,
            operation="op",
            cost_amount=0.0,
            currency="USD",
            duration_ms=1.0,
            timestamp=T0,
        )
        for i, service in enumerate(services)
    ]
    _export_all(kafka_broker, kafka_topic, records)
    landed = {m.key: m.partition for m in read_all(kafka_broker.bootstrap, kafka_topic)}
    assert len(set(landed.values())) == 3
    for key, partition in landed.items():
        assert key is not None
        assert (murmur2(key) & 0x7FFFFFFF) % 3 == partition, key


def test_aiokafka_reads_what_the_exporter_writes(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    """An asyncio client (zstd through cramjam) reads the same records back."""
    records = _records(300)
    _export_all(kafka_broker, kafka_topic, records)

    async def read() -> list[Message]:
        consumer = aiokafka.AIOKafkaConsumer(
            kafka_topic,
            bootstrap_servers=kafka_broker.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        got: list[Message] = []
        try:
            deadline = time.monotonic() + 30
            while sum(len(_decode([m])) for m in got) < len(records):
                assert time.monotonic() < deadline
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    got.extend(
                        Message(
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            tuple((k, bytes(v)) for k, v in r.headers),
                            r.timestamp,
                        )
                        for r in batch
                    )
        finally:
            await consumer.stop()
        return got

    received = _decode(asyncio.run(read()))
    assert sorted(received, key=lambda r: r.span_id) == records


def _attributes(key_values: Any) -> dict[str, Any]:
    out = {}
    for kv in key_values:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind)
    return out


def test_fork_child_gets_its_own_producer(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    """Exporter built and used before fork(): the child produces with a producer of its
    own and never re-sends what the parent still holds (queued messages, aggregates)."""
    parent_records, child_records = _records(50), _records(30, start=50)
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap, kafka_topic, queue_buffering_max_messages=5, linger_ms=1000
    )
    exporter.export(parent_records)
    # One message per service: the first 5 services fit the queue, the rest are folded.
    folded = [r for r in parent_records if r.service in _SERVICES[5:]]
    assert exporter.stats()["overflow_pending_spans"] == len(folded) > 0

    def child() -> str:
        exported = exporter.export(child_records) is CostExportResult.SUCCESS
        flushed = exporter.force_flush(20_000)
        stats = exporter.stats()
        return f"{exported} {flushed} {stats['spans']} {stats['delivered_spans']}"

    n = len(child_records)
    assert in_forked_child(child) == f"True True {n} {n}"
    try:
        assert exporter.force_flush(30_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown()
    assert stats["spans"] == stats["delivered_spans"] == len(parent_records)
    received = _decode(read_all(kafka_broker.bootstrap, kafka_topic))
    assert _spans_and_nanos(received) == _spans_and_nanos(parent_records + child_records)


def test_credentials_stay_out_of_repr_stats_and_logs(
    kafka_broker: KafkaBroker, kafka_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "hunter2-do-not-log"
    # The fixture broker does not speak SASL, so the handshake fails and errors are logged.
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap,
        kafka_topic,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="cost-writer",
        sasl_password=secret,
        message_timeout_ms=1500,
    )
    try:
        assert exporter.export(_records(5)) is CostExportResult.SUCCESS
        assert not exporter.force_flush(3_000)
        stats = exporter.stats()
    finally:
        exporter.shutdown(1_000)
    assert secret not in repr(exporter)
    assert secret not in str(stats)
    assert secret not in caplog.text
    assert stats["client_errors"] + stats["failed"] > 0
    assert exporter.stats()["dropped_spans"] == 5  # nothing delivered, everything counted


def test_export_after_shutdown_is_counted_not_raised(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    exporter = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic)
    exporter.export(_records(3))
    exporter.shutdown(10_000)
    assert exporter.export(_records(4)) is CostExportResult.FAILURE
    stats = exporter.stats()
    assert (stats["delivered_spans"], stats["dropped_spans"]) == (3, 4)
    assert exporter.force_flush(100)


@pytest.mark.slow
def test_shutdown_with_broker_down_returns_in_time_and_counts_drops(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    exporter = KafkaCostExporter(
        kafka_broker.bootstrap, kafka_topic, queue_buffering_max_messages=10
    )
    exporter.export(_records(1))
    assert exporter.force_flush(30_000)
    kafka_broker.stop()
    exporter.export(_records(100, start=1))
    began = time.monotonic()
    exporter.shutdown(1_000)
    assert time.monotonic() - began < 5.0  # generous: 1 s timeout on a busy machine
    stats = exporter.stats()
    assert stats["delivered_spans"] == 1
    assert stats["dropped_spans"] == 100
    assert stats["in_queue"] == stats["overflow_pending_spans"] == 0


def test_unusable_config_fails_open_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    exporter = KafkaCostExporter("127.0.0.1:9", lingr_ms=5)  # a typo librdkafka rejects
    assert exporter.export(_records(3)) is CostExportResult.FAILURE
    assert exporter.export(_records(2)) is CostExportResult.FAILURE
    assert exporter.stats()["dropped_spans"] == 5
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "lingr.ms" in errors[0].getMessage()
    assert exporter.force_flush(100)
    exporter.shutdown()


def test_config_spellings() -> None:
    with pytest.raises(ValueError, match="given twice"):
        KafkaCostExporter("b:9092", **{"linger.ms": 5, "linger_ms": 10})
    for owned in ("bootstrap.servers", "on_delivery"):
        with pytest.raises(ValueError, match="set by the exporter"):
            KafkaCostExporter("b:9092", **{owned: "x"})
    with pytest.raises(ValueError, match="encoding"):
        KafkaCostExporter("b:9092", encoding="json_v2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        KafkaCostExporter("")
    exporter = KafkaCostExporter("b:9092", "costs", sasl_password="s3cret")
    assert repr(exporter) == (
        "KafkaCostExporter(bootstrap_servers='b:9092', topic='costs', encoding='json', schema=2)"
    )


def test_importing_otelcost_does_not_need_confluent_kafka() -> None:
    script = """
import logging, sys
sys.modules["confluent_kafka"] = None  # as if not installed
import otelcost, otelcost.exporters
from otelcost.exporters import KafkaCostExporter
from otelcost.record import CostRecord
logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(message)s")
exporter = KafkaCostExporter("127.0.0.1:9")
record = CostRecord("a" * 32, "b" * 16, "s", "op", 0.0, "USD", 1.0, 1764236400000)
print(exporter.export([record]).name, exporter.stats()["dropped_spans"])
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'otelcost[kafka]'" in result.stdout
    assert result.stdout.rstrip().endswith("FAILURE 1")


def test_exporter_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kafka_exporter_from_env({}) is None
    properties = tmp_path / "client.properties"
    properties.write_text(
        "# the cost stream's credentials\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanism = SCRAM-SHA-512\n"
        "\n"
        "sasl.password=s3cret=with=equals\n"
    )
    env = {
        BOOTSTRAP_ENV: "k1:9092,k2:9092",
        TOPIC_ENV: "costs",
        ENCODING_ENV: "otlp_json",
        CONFIG_ENV: str(properties),
    }
    exporter = kafka_exporter_from_env(env)
    assert repr(exporter) == (
        "KafkaCostExporter(bootstrap_servers='k1:9092,k2:9092', topic='costs', "
        "encoding='otlp_json', schema=2)"
    )
    assert exporter is not None
    config = exporter._config  # the settings handed to librdkafka
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == "s3cret=with=equals"
    assert config["acks"] == "all"

    with pytest.raises(ValueError, match="OTELCOST_KAFKA_ENCODING"):
        kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", ENCODING_ENV: "avro"})
    with pytest.raises(ValueError, match="OTELCOST_KAFKA_SCHEMA"):
        kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", SCHEMA_ENV: "3"})
    v1 = kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", SCHEMA_ENV: "1"})
    assert "schema=1" in repr(v1)
    otlp = kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", ENCODING_ENV: "otlp_json"})
    assert "topic='otel-cost-spans-otlp'" in repr(otlp)  # never the cost stream's topic
    properties.write_text("security.protocol\n")
    with pytest.raises(ValueError, match=r"client\.properties:1: expected key=value"):
        kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", CONFIG_ENV: str(properties)})
    with pytest.raises(OSError):
        kafka_exporter_from_env({BOOTSTRAP_ENV: "k:9092", CONFIG_ENV: str(tmp_path / "none")})

    # install() without explicit exporters picks it up.
    monkeypatch.delenv("OTELCOST_BUDGETS", raising=False)
    monkeypatch.delenv(BOOTSTRAP_ENV, raising=False)
    assert not any(isinstance(e, KafkaCostExporter) for e in default_exporters())
    monkeypatch.setenv(BOOTSTRAP_ENV, "k:9092")
    (kafka,) = [e for e in default_exporters() if isinstance(e, KafkaCostExporter)]
    assert repr(kafka) == (
        "KafkaCostExporter(bootstrap_servers='k:9092', topic='otel-cost-spans', encoding='json', "
        "schema=2)"
    )


def test_failed_messages_wait_within_the_queue_bound_and_fold_exactly() -> None:
    # A delivery report of a failed message (a purge serves a whole queue's worth in one
    # poll) only keeps the message: exports fold them back ~1 ms at a time, force_flush all
    # of them. What waits is bounded by queue.buffering.max.kbytes; past it, a report folds
    # its message at once.
    exporter = KafkaCostExporter("127.0.0.1:1", "costs", queue_buffering_max_kbytes=8)
    records = _records(2000)
    messages = list(encode_messages(records, 2048))
    purged = confluent_kafka.KafkaError(confluent_kafka.KafkaError._PURGE_QUEUE)
    with exporter._lock:  # as when poll() serves the reports
        for key, value, members in messages:
            message = confluent_kafka.Message(topic="costs", key=key.encode(), value=value)
            exporter._on_delivery(exporter._unreported, len(members), 0, purged, message, kept=None)
            assert exporter._refold_bytes <= 8 * 1024
    reported = exporter.stats()
    assert reported["failed"] == len(messages) > 20
    assert reported["overflow_pending_spans"] == 2000
    assert 0 < reported["overflowed"] < 2000  # folded at once past the bound; the rest wait
    assert not exporter.force_flush(100)  # no producer yet: everything folded, nothing sent
    assert exporter.stats()["overflowed"] == exporter.stats()["overflow_pending_spans"] == 2000
    assert _spans_and_nanos(exporter._overflow.seal()) == _spans_and_nanos(records)


def test_overflow_aggregates_keep_the_deploy_apart() -> None:
    overflow = OverflowAggregates()
    for version in ("1.0", "1.0", "2.0"):
        overflow.add(dataclasses.replace(_records(1)[0], service_version=version))
    sealed = sorted(overflow.seal(), key=lambda r: r.service_version or "")
    assert [(r.service_version, r.span_count) for r in sealed] == [("1.0", 2), ("2.0", 1)]


def _large(count: int, *, seed: int = 9) -> list[CostRecord]:
    """Records of one service, each between a quarter and a third of ROUND_TRIP_BOUND
    nano-units (0.56-0.75 million currency units): three fit in an aggregate, four never do,
    and 16 pass 2**53."""
    rng = random.Random(seed)
    return [
        dataclasses.replace(
            record,
            service="payment-svc",
            cost_amount=from_nanos(rng.randrange(ROUND_TRIP_BOUND // 4, ROUND_TRIP_BOUND // 3)),
        )
        for record in _records(count, start=seed)
    ]


def test_overflow_aggregates_stay_exact_past_the_float_bound() -> None:
    # An aggregate's only exact form is its float amount. Summed into one, 20 such records
    # would pass 2**53 (a record every consumer refuses) and, from 2**51, round back to
    # another integer: each aggregate is set aside before a record takes it there.
    records = _large(20)
    overflow = OverflowAggregates()
    assert all(overflow.add(record) for record in records)
    assert overflow.pending_spans == 20
    sealed = overflow.seal()
    assert _spans_and_nanos(sealed) == _spans_and_nanos(records)
    assert sum(r.cost_nanos for r in records) >= 2**53
    assert [r.span_count for r in sealed] == [3] * 6 + [2]
    for aggregate in sealed:
        assert aggregate.cost_nanos < ROUND_TRIP_BOUND
        assert CostRecord.from_json(aggregate.to_json()).cost_nanos == aggregate.cost_nanos
    assert len({(r.trace_id, r.span_id) for r in sealed}) == len(sealed)
    assert not overflow and overflow.seal() == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, NANOS_BOUND - 1), min_size=1, max_size=40))
def test_overflow_aggregates_read_back_what_was_folded(costs: list[int]) -> None:
    # Whatever the costs (to the largest one record may carry), the aggregates read back,
    # as a consumer reads them, exactly the nano-units the records said. A record past
    # ROUND_TRIP_BOUND alone is an aggregate of one: its amount, rounded to nano-units and
    # back, rounds to the same integer again.
    records = [
        dataclasses.replace(record, service="payment-svc", cost_amount=from_nanos(nanos))
        for record, nanos in zip(_records(len(costs)), costs, strict=True)
    ]
    overflow = OverflowAggregates()
    assert all(overflow.add(record) for record in records)
    sealed = overflow.seal()
    assert _spans_and_nanos(sealed) == _spans_and_nanos(records)
    for aggregate in sealed:
        assert aggregate.span_count == 1 or aggregate.cost_nanos < ROUND_TRIP_BOUND
        assert CostRecord.from_json(aggregate.to_json()).cost_nanos == aggregate.cost_nanos


def test_overflow_aggregates_set_aside_count_towards_max_keys() -> None:
    overflow = OverflowAggregates(max_keys=2)
    records = _large(7, seed=3)
    assert all(overflow.add(record) for record in records[:6])
    # The seventh would start a third aggregate: refused, and what was kept is whole.
    assert not overflow.add(records[6])
    assert overflow.pending_spans == 6
    sealed = overflow.seal()
    assert [r.span_count for r in sealed] == [3, 3]
    assert _spans_and_nanos(sealed) == _spans_and_nanos(records[:6])


@pytest.mark.parametrize("queue", ["roomy", "full"])
def test_the_processor_streams_what_its_records_say(
    kafka_broker: KafkaBroker, kafka_topic: str, queue: str
) -> None:
    # The export worker hands the Kafka exporter its per-span cost tuples (no CostRecord
    # each); what lands is what the record path gives every other exporter, to the nano.
    # A full local queue folds the tuples into aggregates, exact as well.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from otelcost import CostSpanProcessor
    from otelcost.exporters import InMemoryCostExporter

    config: dict[str, Any] = {"queue_buffering_max_messages": 3} if queue == "full" else {}
    kafka = KafkaCostExporter(kafka_broker.bootstrap, kafka_topic, linger_ms=5, **config)
    memory = InMemoryCostExporter(max_records=None)
    pricing = {
        "version": "v1",
        "prices": {"checkout:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6}},
    }
    processor = CostSpanProcessor(pricing, [kafka, memory], max_export_batch_size=64)
    tracers = []
    for service in ("checkout", "search", "ünïcode-svc"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(processor)
        tracers.append(provider.get_tracer("test"))
    route = {"http.request.method": "GET", "http.route": "/users/{id}"}
    for i in range(900):
        tracer = tracers[i % 3]
        with tracer.start_as_current_span("GET /users/{id}", attributes=route):
            if i % 4 == 0:
                tracer.start_span("db query").end()  # nested: entry false
    assert processor.force_flush(30_000)
    stats, kafka_stats = processor.stats(), kafka.stats()
    processor.shutdown()

    received = _decode(read_all(kafka_broker.bootstrap, kafka_topic))
    records = memory.records
    assert len(records) == 900 + 225
    assert _spans_and_nanos(received) == _spans_and_nanos(records)
    assert stats["exporters"]["KafkaCostExporter"] == {"exported": 1125, "failed": 0}
    assert kafka_stats["delivered_spans"] == kafka_stats["spans"] == 1125
    if queue == "roomy":
        assert sorted(received, key=lambda r: r.span_id) == sorted(records, key=lambda r: r.span_id)
        assert any(not r.entry for r in received) and any(r.error for r in received)
    else:
        assert kafka_stats["overflowed"] > 0 and kafka_stats["aggregates_delivered"] > 0


def test_a_subclass_that_overrides_export_sees_every_record() -> None:
    from otelcost import CostSpanProcessor
    from otelcost.costing.processor import _export_costs_of

    seen: list[CostRecord] = []

    class Audited(KafkaCostExporter):
        def export(self, records: Sequence[CostRecord]) -> CostExportResult:
            seen.extend(records)
            return super().export(records)

    class Plain(KafkaCostExporter):
        pass

    assert _export_costs_of(Plain("127.0.0.1:9")) is not None
    assert _export_costs_of(Audited("127.0.0.1:9")) is None
    processor = CostSpanProcessor({"version": "v", "prices": {}}, [Audited("127.0.0.1:9")])
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("x").end()
    assert processor.force_flush(500) is False  # no broker: never delivered
    processor.shutdown(100)
    assert len(seen) == 1 and seen[0].operation == "x"
