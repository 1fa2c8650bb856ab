"""Reconciliation: the same spans through every sink at once, totals compared to the nano-unit.

``reconcile()`` (the library side of ``otelcost reconcile``) prices synthetic spans with a
CostSpanProcessor that feeds, at the same time:

- the enriched spans' ``cost.amount`` attributes (the reference total),
- an InMemoryCostExporter,
- a KafkaCostExporter to a fresh topic, read back from its first offset afterwards,
- a RedisBudgetExporter (the *exporter path* of the budgets),

then runs an :class:`~otelcost.stream.enforce.Enforcer` over the topic into a second Redis
database (the *enforce path*), so that the two budget paths never add into the same
counters. All totals are integers in nano-units of the currency; the run agrees when all
five are equal and every sink counted the same number of records.

The synthetic services are named ``reconcile-<run id>-<i>``, so a run never mixes with real
services or with another run. Their Redis keys, and the topic the run created, are deleted
afterwards unless ``keep=True``.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from otelcost import _redis
from otelcost.budget import _keys
from otelcost.budget.model import Budget, BudgetSet
from otelcost.budget.redis_store import RedisBudgetStore
from otelcost.costing.processor import CostSpanProcessor
from otelcost.errors import InvalidRecordError
from otelcost.exporters import RedisBudgetExporter
from otelcost.exporters.kafka import KafkaCostExporter
from otelcost.exporters.memory import InMemoryCostExporter
from otelcost.money import from_nanos, to_nanos
from otelcost.stream._consume import decode
from otelcost.stream._kafka import client_config, import_confluent

__all__ = [
    "CostSumSpanExporter",
    "Reconciliation",
    "SinkTotal",
    "TopicTotals",
    "enforcer_url_for",
    "reconcile",
    "rolling_spend",
    "topic_totals",
]

_logger = logging.getLogger(__name__)

# A Tansu or Kafka group join takes seconds with librdkafka's defaults; a one-shot run
# wants it quick and has no long-lived membership to protect.
_FAST_GROUP: Final[Mapping[str, int]] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "max.poll.interval.ms": 30_000,
}
# Spans handed to the processor between two force_flush calls: below its span queue
# (16,384), so a run of any size never drops a span for want of room.
_CHUNK: Final = 4096
# After the expected number of spans arrived, keep reading this long for duplicates.
_EXTRA_READ_S: Final = 1.0
_TOKENS: Final = "gen_ai.usage.input_tokens"
_PERIOD: Final = "24h"


@dataclass(frozen=True, slots=True)
class SinkTotal:
    """What one sink holds: ``nanos`` in total over ``records`` records (None: unknown)."""

    sink: str
    nanos: int
    records: int | None


@dataclass(frozen=True)
class Reconciliation:
    """The outcome of one run. ``totals[0]`` is the reference (the spans' ``cost.amount``)."""

    run_id: str
    spans: int
    services: tuple[str, ...]
    topic: str
    currency: str
    totals: tuple[SinkTotal, ...]
    counters: Mapping[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def reference(self) -> SinkTotal:
        return self.totals[0]

    def differences(self) -> dict[str, int]:
        """Each sink's total minus the reference, in nano-units."""
        reference = self.reference.nanos
        return {total.sink: total.nanos - reference for total in self.totals[1:]}

    @property
    def ok(self) -> bool:
        """True when every sink holds the reference total over the same number of records."""
        reference = self.reference
        return not self.problems and all(
            total.nanos == reference.nanos and total.records in (None, reference.records)
            for total in self.totals[1:]
        )

    def table(self) -> str:
        """The totals, their differences and the counters, as aligned text."""
        rows = [("sink", "records", "total (nano-units)", "difference")]
        for i, total in enumerate(self.totals):
            delta = total.nanos - self.reference.nanos
            difference = "-" if i == 0 else f"{delta:+d}" if delta else "0"
            records = "?" if total.records is None else str(total.records)
            rows.append((total.sink, records, str(total.nanos), difference))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}".rstrip()
            for row in rows
        ]
        lines.append("")
        lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in self.counters.items()))
        lines.extend(f"problem: {problem}" for problem in self.problems)
        amount = f"{from_nanos(self.reference.nanos):.9f} {self.currency}"
        if self.ok:
            lines.append(f"OK: every sink holds {amount} over {self.reference.records} records")
        else:
            lines.append(f"MISMATCH: the sinks do not all hold {amount}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "run_id": self.run_id,
            "spans": self.spans,
            "topic": self.topic,
            "currency": self.currency,
            "services": list(self.services),
            "totals": [
                {"sink": t.sink, "records": t.records, "nanos": t.nanos} for t in self.totals
            ],
            "differences": self.differences(),
            "counters": dict(self.counters),
            "problems": list(self.problems),
        }


class CostSumSpanExporter(SpanExporter):
    """A SpanExporter that sums the ``cost.amount`` of enriched spans exactly (in nanos).

    Feed it through a ``SimpleSpanProcessor`` in ``CostSpanProcessor(span_processors=...)``.
    ``priced`` counts spans with an amount, ``unpriced`` those with ``cost.error``.
    """

    def __init__(self) -> None:
        self.nanos = 0
        self.priced = 0
        self.unpriced = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            attributes = span.attributes or {}
            amount = attributes.get("cost.amount")
            if isinstance(amount, float | int):
                self.nanos += to_nanos(float(amount))
                self.priced += 1
            elif "cost.error" in attributes:
                self.unpriced += 1
        return SpanExportResult.SUCCESS


@dataclass(frozen=True, slots=True)
class TopicTotals:
    """What a topic holds: messages (schema 1 or 2), the spans they stand for (``unpriced``
    of them with ``error``), their cost, and the invalid messages and records (each invalid
    record of a schema-2 message counts one)."""

    messages: int
    spans: int
    unpriced: int
    nanos: int
    invalid: int


def topic_totals(
    bootstrap_servers: str,
    topic: str,
    *,
    expected_spans: int,
    kafka_config: Mapping[str, Any] | None = None,
    timeout: float = 60.0,
) -> TopicTotals:
    """Read ``topic`` from the first offset of every partition, without a consumer group.

    Reads until ``expected_spans`` spans arrived and then 1 s more (so that duplicates
    show), or until nothing arrived for ``timeout`` seconds. The end offsets are not the
    stop condition: some Kafka-protocol brokers report them one batch short.
    """
    confluent = import_confluent()
    config = client_config(
        {
            "group.id": f"otelcost-reconcile-reader-{secrets.token_hex(4)}",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "log_level": 2,
        },
        _shared(kafka_config or {}),
    )
    config["bootstrap.servers"] = bootstrap_servers
    consumer = confluent.Consumer(config)
    try:
        metadata = consumer.list_topics(topic, timeout=min(timeout, 10.0))
        partitions = metadata.topics[topic].partitions
        consumer.assign(
            [confluent.TopicPartition(topic, p, confluent.OFFSET_BEGINNING) for p in partitions]
        )
        messages = spans = unpriced = nanos = invalid = 0
        stop_at = time.monotonic() + timeout
        complete = False
        while time.monotonic() < stop_at:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            for message in batch:
                if message.error() is not None:
                    continue
                messages += 1
                try:
                    records, bad = decode(message.key(), message.value(), message.headers())
                except InvalidRecordError:
                    invalid += 1
                    continue
                invalid += len(bad)
                for record in records:
                    spans += record.span_count
                    unpriced += record.span_count if record.error is not None else 0
                    nanos += record.cost_nanos
            if not complete and spans >= expected_spans:
                complete = True
                stop_at = time.monotonic() + _EXTRA_READ_S
            elif batch and not complete:
                stop_at = time.monotonic() + timeout
        return TopicTotals(messages, spans, unpriced, nanos, invalid)
    finally:
        consumer.close()


def rolling_spend(store: RedisBudgetStore, services: Sequence[str]) -> int:
    """The rolling spend of ``services`` in ``store`` (first budget of each), summed."""
    total = 0
    for service in services:
        usages = store.status(service).budgets
        if usages:
            total += usages[0].spend_nanos
    return total


def enforcer_url_for(redis_url: str) -> str:
    """``redis_url`` with the next database number: where the enforce path is kept apart.

    Only ``redis://`` and ``rediss://`` URLs have databases; for others (cluster, sentinel,
    unix) pass a separate Redis explicitly. Raises ValueError.
    """
    parts = urlsplit(redis_url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise ValueError(
            f"cannot derive a second database from {_redis.redact(redis_url)!r}: pass a "
            "separate Redis for the enforce path"
        )
    return urlunsplit(parts._replace(path=f"/{_redis.database(redis_url) + 1}", query=""))


def _ping_enforce_path(setup: _Setup, *, derived: bool) -> None:
    import redis

    try:
        setup.enforcer_store.client.ping()
    except redis.ResponseError as exc:
        if not derived:
            raise
        # A server with 16 databases refuses the one after 15: say where it came from.
        raise ValueError(
            f"the enforce path uses {_redis.redact(setup.enforcer_url)!r}, the database after "
            f"the one of --redis-url, and the server refuses it ({exc}): pass "
            "--enforcer-redis-url with a database or Redis of its own"
        ) from None


def reconcile(
    bootstrap_servers: str,
    redis_url: str,
    *,
    spans: int = 10_000,
    services: int = 5,
    enforcer_redis_url: str | None = None,
    topic: str | None = None,
    partitions: int = 3,
    kafka_config: Mapping[str, Any] | None = None,
    timeout: float = 120.0,
    keep: bool = False,
    seed: int | None = None,
) -> Reconciliation:
    """Send ``spans`` synthetic spans through every sink at once and compare the totals.

    ``redis_url`` receives the exporter path; ``enforcer_redis_url`` (default: the next
    database of ``redis_url``) the enforce path. ``topic`` defaults to a new topic
    ``otelcost-reconcile-<run id>`` with ``partitions`` partitions. ``kafka_config`` holds
    librdkafka settings for every Kafka client (SASL, SSL...). ``timeout`` bounds each
    step (flush, read-back, enforce). Raises ValueError for bad arguments and the clients'
    errors (redis.RedisError, KafkaException) when a server cannot be reached at all.
    """
    if spans < 1 or services < 1:
        raise ValueError("spans and services must be >= 1")
    enforcer_url = enforcer_redis_url or enforcer_url_for(redis_url)
    if enforcer_url == redis_url:
        raise ValueError("the enforce path needs another Redis or database than the exporter's")
    run_id = secrets.token_hex(4)
    budgets = BudgetSet([Budget("*", limit=1e9, period=_PERIOD)])
    setup = _Setup(
        run_id=run_id,
        services=tuple(f"reconcile-{run_id}-{i}" for i in range(services)),
        topic=topic or f"otelcost-reconcile-{run_id}",
        bootstrap=bootstrap_servers,
        kafka_config=dict(kafka_config or {}),
        budgets=budgets,
        redis_url=redis_url,
        enforcer_url=enforcer_url,
        exporter_store=RedisBudgetStore(redis_url, budgets),
        enforcer_store=RedisBudgetStore(enforcer_url, budgets),
        timeout=timeout,
    )
    setup.exporter_store.client.ping()
    _ping_enforce_path(setup, derived=enforcer_redis_url is None)
    if topic is None:
        _create_topic(setup, partitions)
    try:
        sent = _send_spans(setup, spans, seed)
        return _compare(setup, spans, sent, _enforce(setup, sent.on_topic.messages))
    finally:
        if not keep:
            for store in (setup.exporter_store, setup.enforcer_store):
                _delete_keys(store, setup.services)
            if topic is None:
                _delete_topic(setup)


@dataclass(frozen=True)
class _Setup:
    run_id: str
    services: tuple[str, ...]
    topic: str
    bootstrap: str
    kafka_config: Mapping[str, Any]
    budgets: BudgetSet
    redis_url: str
    enforcer_url: str
    exporter_store: RedisBudgetStore
    enforcer_store: RedisBudgetStore
    timeout: float


@dataclass(frozen=True)
class _Sent:
    """What the processor and its exporters report once the spans went through."""

    reference: CostSumSpanExporter
    memory: InMemoryCostExporter
    processor: Mapping[str, Any]
    kafka: Mapping[str, int]
    redis: Mapping[str, int | float]
    on_topic: TopicTotals
    problems: tuple[str, ...]


def _send_spans(setup: _Setup, spans: int, seed: int | None) -> _Sent:
    pricing = {
        "version": f"reconcile-{setup.run_id}",
        "currency": "USD",
        "prices": {
            "*:*": {"per_ms": 3.3e-7, "per_request": 1.1e-7, "per_unit": {_TOKENS: 3e-6}},
        },
    }
    memory = InMemoryCostExporter(max_records=0)
    kafka = KafkaCostExporter(setup.bootstrap, setup.topic, **setup.kafka_config)
    redis_exporter = RedisBudgetExporter(setup.exporter_store.client, setup.budgets)
    reference = CostSumSpanExporter()
    processor = CostSpanProcessor(
        pricing,
        [memory, kafka, redis_exporter],
        span_processors=[SimpleSpanProcessor(reference)],
    )
    problems: list[str] = []
    timeout_ms = int(setup.timeout * 1000)
    try:
        batch = _spans(setup.services, spans, random.Random(seed))
        for start in range(0, len(batch), _CHUNK):
            for span in batch[start : start + _CHUNK]:
                processor.on_end(span)
            if not processor.force_flush(timeout_ms):
                problems.append(f"force_flush did not finish within {setup.timeout:g} s")
                break
    finally:
        processor.shutdown(timeout_ms)
    kafka_stats = kafka.stats()
    on_topic = topic_totals(
        setup.bootstrap,
        setup.topic,
        expected_spans=kafka_stats["delivered_spans"],
        kafka_config=setup.kafka_config,
        timeout=setup.timeout,
    )
    return _Sent(
        reference,
        memory,
        processor.stats(),
        kafka_stats,
        redis_exporter.stats(),
        on_topic,
        tuple(problems),
    )


def _enforce(setup: _Setup, messages: int) -> Mapping[str, int]:
    """Run an Enforcer over the topic into the enforce path's store; its counters."""
    from otelcost.stream.enforce import Enforcer

    enforcer = Enforcer(
        setup.bootstrap,
        setup.enforcer_store,
        topic=setup.topic,
        group=f"otelcost-reconcile-{setup.run_id}",
        kafka_config={**_FAST_GROUP, **_shared(setup.kafka_config)},
        batch_timeout=0.2,
    )
    enforcer.run(max_records=messages, idle_timeout=min(setup.timeout, 15.0))
    return enforcer.stats()


def _compare(setup: _Setup, spans: int, sent: _Sent, enforced: Mapping[str, int]) -> Reconciliation:
    memory_totals = sent.memory.totals().values()
    on_topic = sent.on_topic
    totals = (
        SinkTotal("span attributes (cost.amount)", sent.reference.nanos, sent.reference.priced),
        SinkTotal(
            "in-memory exporter",
            sum(t.nanos for t in memory_totals),
            sum(t.spans - t.unpriced for t in memory_totals),
        ),
        SinkTotal(f"Kafka topic {setup.topic}", on_topic.nanos, on_topic.spans - on_topic.unpriced),
        SinkTotal(
            f"Redis exporter path ({_redis.redact(setup.redis_url)})",
            rolling_spend(setup.exporter_store, setup.services),
            int(sent.redis["records_delivered"] - sent.redis["records_unpriced"]),
        ),
        SinkTotal(
            f"Redis enforce path ({_redis.redact(setup.enforcer_url)})",
            rolling_spend(setup.enforcer_store, setup.services),
            enforced["applied"],
        ),
    )
    counters = {
        "spans_dropped": sent.processor["spans_dropped"],
        "spans_unpriced": sent.processor["spans_unpriced"],
        "records_dropped": sent.processor["records_dropped"],
        "export_failures": sent.processor["export_failures"],
        "kafka_dropped_spans": sent.kafka["dropped_spans"],
        "kafka_invalid_spans": sent.kafka["invalid_spans"],
        "redis_nanos_dropped": int(sent.redis["nanos_dropped"]),
        "topic_messages": on_topic.messages,
        "topic_invalid": on_topic.invalid,
        "enforce_consumed": enforced["consumed"],
        "enforce_duplicates": enforced["duplicates"],
        "enforce_dlq": enforced["dlq"],
    }
    problems = list(sent.problems)
    problems.extend(
        f"{name} = {counters[name]}"
        for name in (
            "spans_dropped",
            "spans_unpriced",
            "records_dropped",
            "export_failures",
            "kafka_dropped_spans",
            "kafka_invalid_spans",
            "redis_nanos_dropped",
            "topic_invalid",
            "enforce_dlq",
        )
        if counters[name]
    )
    if enforced["consumed"] != on_topic.messages:
        problems.append(
            f"enforce consumed {enforced['consumed']} of the {on_topic.messages} messages"
        )
    return Reconciliation(
        run_id=setup.run_id,
        spans=spans,
        services=setup.services,
        topic=setup.topic,
        currency="USD",
        totals=totals,
        counters=counters,
        problems=tuple(problems),
    )


def _spans(services: Sequence[str], count: int, rng: random.Random) -> list[ReadableSpan]:
    """Server spans of ``services`` with varied durations, some with token usage."""
    resources = [Resource.create({"service.name": name}) for name in services]
    sampled = TraceFlags(TraceFlags.SAMPLED)
    end = time.time_ns()
    spans = []
    for i in range(count):
        attributes: dict[str, str | int] = {
            "http.request.method": "GET",
            "http.route": f"/items/{{id}}/part{i % 7}",
        }
        if i % 3 == 0:
            attributes[_TOKENS] = rng.randrange(1, 5000)
        spans.append(
            ReadableSpan(
                name="GET /items/{id}",
                context=SpanContext(
                    rng.getrandbits(128) | 1, rng.getrandbits(64) | 1, False, sampled
                ),
                resource=resources[i % len(resources)],
                attributes=attributes,
                kind=SpanKind.SERVER,
                start_time=end - rng.randrange(10_000, 800_000_000),
                end_time=end,
            )
        )
    return spans


def _shared(config: Mapping[str, Any]) -> dict[str, Any]:
    """The user's settings without producer-only ones, for a consumer."""
    producer_only = ("acks", "enable.idempotence", "linger.", "compression.", "queue.buffering.")
    named = client_config({}, config)
    return {k: v for k, v in named.items() if not k.startswith(producer_only)}


def _create_topic(setup: _Setup, partitions: int) -> None:
    confluent = import_confluent()  # first: without the kafka extra, it says what to install
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    wait = min(setup.timeout, 30.0)
    admin = _admin(setup, AdminClient)  # referenced until the future resolves
    futures = admin.create_topics(
        [NewTopic(setup.topic, num_partitions=partitions, replication_factor=-1)],
        operation_timeout=wait,
        request_timeout=wait,
    )
    try:
        futures[setup.topic].result(wait)
    except confluent.KafkaException as exc:
        raise confluent.KafkaException(f"cannot create topic {setup.topic!r}: {exc}") from exc


def _delete_topic(setup: _Setup) -> None:
    from confluent_kafka.admin import AdminClient

    admin = _admin(setup, AdminClient)
    try:
        admin.delete_topics([setup.topic], operation_timeout=10)[setup.topic].result(15)
    except Exception as exc:  # best effort: the run's verdict stands either way
        _logger.warning("could not delete the reconcile topic %s: %s", setup.topic, exc)


def _admin(setup: _Setup, admin_class: Any) -> Any:
    settings = _shared(setup.kafka_config)
    settings["bootstrap.servers"] = setup.bootstrap
    return admin_class(settings)


def _delete_keys(store: RedisBudgetStore, services: Sequence[str]) -> None:
    client = store.client
    try:
        for service in services:
            fences = list(client.scan_iter(match=f"{_keys.FENCE_PREFIX}{service}}}:*"))
            client.delete(_keys.budget_key(service, _PERIOD), _keys.flag_key(service), *fences)
    except Exception as exc:  # best effort, like the topic
        _logger.warning("could not delete the reconcile keys in Redis: %s", exc)
