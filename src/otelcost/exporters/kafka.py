"""KafkaCostExporter: the cost stream, many CostRecords of one service per Kafka message.

The message key is the service (UTF-8) and the partitioner is murmur2, as in the Java and
kafka-python clients, so every producer puts a service in the same partition and
``otelcost enforce`` sees its records in order. The value is schema 2 (``stream.schema2``:
records of one service, split by bytes below ``message.max.bytes``) with the header
``otelcost-schema: 2``; ``schema=1`` writes one schema-1 record per message instead (for
consumers older than schema 2). ``encoding="otlp_json"`` writes OTLP/JSON ``TracesData``
for a Collector (``_otlp``) to its own topic, without the otelcost header.

Nothing here blocks or raises into the pipeline: when librdkafka's bounded local queue is
full, or every broker is down, records are folded into one overflow aggregate per service
and sent when the queue drains; a message whose delivery finally fails is folded back the
same way. Every record is accounted for in ``stats()``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from operator import attrgetter
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, cast

from otelcost import _json, environment
from otelcost.exporters._otlp import encode_otlp_messages
from otelcost.exporters._overflow import OverflowAggregates
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.record import CostRecord
from otelcost.stream._costs import cost_records, encode_cost_messages
from otelcost.stream._kafka import (
    DEFAULT_OTLP_TOPIC,
    DEFAULT_TOPIC,
    SCHEMA_HEADER,
    client_config,
    import_confluent,
    read_properties,
)
from otelcost.stream.schema2 import decode_message, encode_messages

if TYPE_CHECKING:
    from otelcost.costing.coster import CostFields

__all__ = [
    "BOOTSTRAP_ENV",
    "CONFIG_ENV",
    "DEFAULT_OTLP_TOPIC",
    "DEFAULT_TOPIC",
    "ENCODING_ENV",
    "SCHEMA_ENV",
    "TOPIC_ENV",
    "KafkaCostExporter",
    "kafka_exporter_from_env",
]

_logger = logging.getLogger("otelcost.kafka")  # documented: docs/runbook.md "Loggers"

Encoding = Literal["json", "otlp_json"]
# key (service), value, what it holds: CostRecords, or the processor's cost tuples
Message = tuple[str, bytes, list[Any]]

BOOTSTRAP_ENV = environment.KAFKA_BOOTSTRAP
TOPIC_ENV = environment.KAFKA_TOPIC
ENCODING_ENV = environment.KAFKA_ENCODING
SCHEMA_ENV = environment.KAFKA_SCHEMA
CONFIG_ENV = environment.KAFKA_CONFIG

# Durable and ordered (acks=all + idempotence), cheap on the wire (linger + zstd), keyed
# messages placed as Java/kafka-python place them (murmur2), and a local queue bounded in
# messages and bytes so memory does not grow with an outage (a message holds many records).
_PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 50,
    "compression.type": "zstd",
    # Level 1, not zstd's default 3: on schema-2 messages (random hex ids dominate) it
    # takes 0.19 instead of 0.33 us of CPU per record and compresses as well (34% vs 36%).
    "compression.level": 1,
    "partitioner": "murmur2_random",
    "queue.buffering.max.messages": 10_000,
    "queue.buffering.max.kbytes": 16 * 1024,
    "client.id": "otelcost",
    # librdkafka logs every failed reconnect; error_cb reports the same errors, and the
    # exporter logs one line per failure streak. Raise log_level (and set debug) to see
    # librdkafka's own lines, which go to the Python logger "otelcost.kafka.librdkafka".
    "log_level": 2,
    "logger": logging.getLogger("otelcost.kafka.librdkafka"),
}
_HEADERS: Mapping[int, list[tuple[str, bytes]]] = {
    1: [(SCHEMA_HEADER, b"1")],
    2: [(SCHEMA_HEADER, b"2")],
}
# librdkafka's default message.max.bytes; what is left for the value after key, headers
# and the record framing is kept as headroom.
_MESSAGE_MAX_BYTES = 1_000_000
_HEADROOM = 1024
_FLUSH_SLICE_S = 0.1
# Once every broker has been down for _FOLD_AFTER_S (a blip keeps its records whole),
# records are folded at once (no queueing), the overflow is offered to librdkafka at most
# every _PROBE_EVERY_S (it reconnects meanwhile), and after _PURGE_AFTER_S the local queue
# is folded into aggregates too, so memory does not hold an outage's worth of messages.
_FOLD_AFTER_S = 3.0
_PROBE_EVERY_S = 1.0
_PURGE_AFTER_S = 10.0
# Failed messages are folded back a slice of about this long per export (decoding one of
# 16 records takes ~50 us): a purged queue of 10,000 messages folded inside one poll() held
# the GIL for up to half a second. force_flush folds them all.
_REFOLD_SLICE_S = 0.001
# Replaced producers kept until they have reported every purged message (normally
# within milliseconds); past this many, the oldest one's unreported spans count as dropped.
_MAX_RETIRED = 4


class _Unreported:
    """Spans in one producer's messages whose delivery report is still to be served."""

    __slots__ = ("spans",)

    def __init__(self) -> None:
        self.spans = 0


_SPAN_COUNT = attrgetter("span_count")
_AGGREGATE = attrgetter("aggregate")

# Producers inherited over fork(): kept referenced and never used, because destroying one
# would wait for librdkafka threads that do not exist in the child.
_INHERITED_PRODUCERS: list[Any] = []


class KafkaCostExporter(CostExporter):
    """Produce CostRecords to ``topic`` with confluent-kafka (the ``kafka`` extra).

    ``topic`` defaults to ``otel-cost-spans`` (``otel-cost-spans-otlp`` with
    ``encoding="otlp_json"``). ``schema`` (2 by default) is the CostRecord stream schema;
    1 is for consumers that predate schema 2 (upgrade consumers first).

    ``producer_config`` entries are librdkafka settings and override the defaults (acks=all,
    idempotence, linger.ms=50, zstd level 1, murmur2 partitioning, a queue of at most 10,000
    messages / 16 MiB); SASL and SSL settings pass through unchanged. Keys may use
    underscores for dots (``sasl_password=...``). An ``error_cb`` is called after the
    exporter's own. Messages are split so that none exceeds ``message.max.bytes``.

    confluent-kafka is imported here; the producer is created at the first export in each
    process, so an exporter built before ``fork()`` works in the children; a child starts
    with empty counters and never re-sends the parent's pending aggregates.

    ``max_overflow_services`` bounds the overflow aggregates (one per service, currency and
    deploy, and another each time one reaches ``money.ROUND_TRIP_BOUND`` nano-units); spans
    that would need a further one are dropped and counted while the queue is full.

    A message librdkafka gives up on (after ``message.timeout.ms``, 5 minutes by default)
    is folded into an aggregate and sent again, on a new producer. Should the broker have
    written it after all (librdkafka cannot always tell), it is counted twice: the
    stream errs towards over-counting spend, never towards losing it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str | None = None,
        *,
        encoding: Encoding = "json",
        schema: Literal[1, 2] = 2,
        max_overflow_services: int = 10_000,
        **producer_config: Any,
    ) -> None:
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers is empty")
        if encoding not in ("json", "otlp_json"):
            raise ValueError(f"encoding must be 'json' or 'otlp_json', not {encoding!r}")
        if schema not in (1, 2):
            raise ValueError(f"schema must be 1 or 2, not {schema!r}")
        config = client_config(_PRODUCER_DEFAULTS, producer_config)
        for owned in ("bootstrap.servers", "on_delivery"):
            if owned in config:
                raise ValueError(f"{owned!r} is set by the exporter, not in producer_config")
        self._user_error_cb: Callable[[Any], None] | None = config.pop("error_cb", None)
        config["bootstrap.servers"] = bootstrap_servers
        config["error_cb"] = self._on_client_error
        self._config = config
        self._bootstrap = bootstrap_servers
        self._topic = topic or (DEFAULT_OTLP_TOPIC if encoding == "otlp_json" else DEFAULT_TOPIC)
        self._encoding: Encoding = encoding
        self._schema = schema
        self._headers = None if encoding == "otlp_json" else _HEADERS[schema]
        self._max_value = int(config.get("message.max.bytes", _MESSAGE_MAX_BYTES)) - _HEADROOM
        self._max_overflow_services = max_overflow_services
        self._max_refold_bytes = int(config["queue.buffering.max.kbytes"]) * 1024  # a default
        self._closed = False
        # confluent_kafka now, at startup: importing it takes 40-200 ms of CPU (asyncio and
        # more come with it), which the first export would spend on the export worker,
        # contending for the GIL with the application. Only the producer waits for the
        # first export (its threads do not survive fork). Without the extra, the first
        # export logs what to install, as before.
        self._confluent: ModuleType | None
        try:
            self._confluent = import_confluent()
        except ImportError:
            self._confluent = None
        self._reset_process_state()

    def __repr__(self) -> str:
        return (
            f"KafkaCostExporter(bootstrap_servers={self._bootstrap!r}, "
            f"topic={self._topic!r}, encoding={self._encoding!r}, schema={self._schema})"
        )

    def _reset_process_state(self) -> None:
        # Everything librdkafka- or process-specific: a forked child starts from scratch.
        inherited = getattr(self, "_producer", None)
        if inherited is not None:
            _INHERITED_PRODUCERS.append(inherited)
        _INHERITED_PRODUCERS.extend(producer for producer, _ in getattr(self, "_retired", ()))
        self._pid = os.getpid()
        # Guards the producer, the overflow and the counters. Delivery callbacks run inside
        # poll()/flush(), which are only called with the lock held.
        self._lock = threading.Lock()
        self._producer: Any = None
        self._unreported = _Unreported()  # the live producer's
        # Replaced producers whose delivery reports librdkafka has not handed over yet:
        # dropping one then would lose its messages from every counter.
        self._retired: list[tuple[Any, _Unreported]] = []
        self._kafka_error: type[Exception] = Exception  # KafkaException once imported
        self._replace = False
        self._timed_out: int | None = None  # KafkaError._MSG_TIMED_OUT once imported
        self._all_brokers_down: int | None = None  # KafkaError._ALL_BROKERS_DOWN
        self._down_since: float | None = None  # every broker down since (monotonic)
        self._probe_at = 0.0
        self._purged = False
        self._unusable: str | None = None
        self._overflow = OverflowAggregates(self._max_overflow_services)
        # Failed messages waiting to be folded back, oldest first: (value, spans, the OTLP
        # records kept), bounded in bytes by librdkafka's own queue bound.
        self._refold: deque[tuple[bytes, int, list[CostRecord] | None]] = deque()
        self._refold_spans = 0
        self._refold_bytes = 0
        self._failing = False
        self._spans = 0
        self._queued = 0
        self._delivered = 0
        self._delivered_spans = 0
        self._failed = 0
        self._overflowed = 0
        self._aggregates_delivered = 0
        self._dropped_spans = 0
        self._invalid_spans = 0
        self._client_errors = 0

    # -- export -----------------------------------------------------------------------

    def export(self, records: Sequence[CostRecord]) -> CostExportResult:
        """Queue ``records`` in librdkafka; never blocks on the broker, never raises."""
        # C loops, not a Python one
        return self._export(records, sum(map(_SPAN_COUNT, records)), list, self._messages)

    def _export_costs(self, costs: Sequence[CostFields]) -> CostExportResult:
        """``export`` of the costs' CostRecords, from the processor's per-span tuples (each
        with a span context): schema 2 encodes them without building the records
        (``stream._costs``). A private opt-in of CostSpanProcessor's export worker."""
        if self._encoding != "json" or self._schema != 2:
            return self.export(cost_records(costs))
        return self._export(costs, len(costs), cost_records, self._cost_messages)

    def _cost_messages(self, costs: Sequence[CostFields]) -> Iterator[Message]:
        return encode_cost_messages(costs, self._max_value)

    def _export(
        self,
        members: Sequence[Any],
        spans: int,
        to_records: Callable[[Sequence[Any]], list[CostRecord]],
        encode: Callable[[Any], Iterator[Message]],
    ) -> CostExportResult:
        """``export`` of ``members`` (CostRecords or cost tuples), which hold ``spans``
        spans: ``encode`` makes their messages, ``to_records`` their records (to fold)."""
        if self._pid != os.getpid():
            self._reset_process_state()
        with self._lock:
            if self._closed:
                self._dropped_spans += spans
                return CostExportResult.FAILURE
            self._spans += spans
            producer = self._live_producer()
            if producer is None:
                self._dropped_spans += spans
                return CostExportResult.FAILURE
            producer.poll(0)  # delivery reports and errors first: they tell if brokers are up
            if self._retired:
                self._serve_retired()
            if self._refold:
                self._fold_failed(time.perf_counter() + _REFOLD_SLICE_S)
            down = self._down_since
            if down is not None and time.monotonic() - down >= _FOLD_AFTER_S:
                self._export_while_down(producer, to_records(members), down)
            else:
                if self._overflow:
                    self._send_overflow(producer)
                self._produce_all(producer, encode(members), to_records)
                producer.poll(0)
        return CostExportResult.SUCCESS

    def _messages(self, records: Sequence[CostRecord]) -> Iterator[Message]:
        if self._encoding == "otlp_json":
            return encode_otlp_messages(records, self._max_value)
        if self._schema == 2:
            return encode_messages(records, self._max_value)
        return self._v1_messages(records)

    def _v1_messages(self, records: Sequence[CostRecord]) -> Iterator[Message]:
        for record in records:
            try:
                value = record.to_json()
            except (TypeError, ValueError):
                value = b""
            yield record.service, value, [record]

    def _produce_all(
        self,
        producer: Any,
        messages: Iterator[Message],
        to_records: Callable[[Sequence[Any]], list[CostRecord]] = list,
    ) -> None:
        """Produce each message; fold what does not fit in the queue (and everything after
        it: a queue still full after serving callbacks does not drain within one export).
        A message's members are CostRecords, or cost tuples that ``to_records`` turns into
        records when they must be folded or counted as invalid."""
        for key, value, members in messages:
            if not value or len(value) > self._max_value:
                for record in to_records(members):
                    self._invalid(record)
                continue
            if to_records is list:
                spans = sum(map(_SPAN_COUNT, members))
                aggregates = sum(map(_AGGREGATE, members))
            else:  # cost tuples: one span each, never an aggregate
                spans, aggregates = len(members), 0
            if not self._produce(producer, key, value, members, spans, aggregates, to_records):
                self._fold_all(to_records(members))
                for _key, _value, rest in messages:
                    self._fold_all(to_records(rest))
                return

    def _produce(  # noqa: PLR0917 - once per message
        self,
        producer: Any,
        key: str,
        value: bytes,
        members: list[Any],
        spans: int,
        aggregates: int,
        to_records: Callable[[Sequence[Any]], list[CostRecord]],
    ) -> bool:
        """One message with its delivery callback; False when the queue is full."""
        # The JSON encodings are decoded again if delivery fails, so only OTLP messages
        # keep their records in memory until their delivery report.
        kept = members if self._encoding == "otlp_json" else None
        unreported = self._unreported
        on_delivery = partial(self._on_delivery, unreported, spans, aggregates, kept=kept)
        for retried in (False, True):
            try:
                producer.produce(
                    self._topic, value, key, headers=self._headers, on_delivery=on_delivery
                )
            except BufferError:
                if retried:
                    return False
                producer.poll(0)
            except self._kafka_error as exc:  # refused, e.g. an invalid topic name
                self._note_failure(f"message refused: {exc}")
                self._fold_all(to_records(members))
                return True
            else:
                self._queued += 1
                unreported.spans += spans
                return True
        return False

    def _send_overflow(self, producer: Any) -> None:
        pending = self._overflow.seal()
        if pending:
            self._produce_all(producer, self._messages(pending))

    def _export_while_down(
        self, producer: Any, records: Sequence[CostRecord], down_since: float
    ) -> None:
        """Every broker is down: fold ``records`` at once, offer the overflow to librdkafka
        now and then (its delivery ends the outage), and after a while fold the queue too."""
        self._fold_all(records)
        now = time.monotonic()
        if not self._purged and now - down_since >= _PURGE_AFTER_S:
            self._purged = True
            producer.purge(in_queue=True, in_flight=False, blocking=False)
            producer.poll(0)  # purged messages' reports fold them into the overflow
        if now >= self._probe_at:
            self._probe_at = now + _PROBE_EVERY_S
            if self._in_queue(producer) == 0:
                self._send_overflow(producer)

    def _in_queue(self, producer: Any) -> int:
        return len(producer)

    def _serve_retired(self) -> None:
        """Serve replaced producers' late delivery reports; forget those that are done."""
        for entry in list(self._retired):
            old = entry[0]
            old.poll(0)
            if len(old) == 0:  # every report served
                self._retired.remove(entry)

    # -- folding and accounting (lock held) ---------------------------------------------

    def _fold(self, record: CostRecord) -> None:
        if self._closed:
            self._dropped_spans += record.span_count
        elif self._overflow.add(record):
            if not record.aggregate:  # an aggregate put back is not new overflow
                self._overflowed += record.span_count
        else:
            self._dropped_spans += record.span_count
            self._note_failure(
                f"overflow holds {self._max_overflow_services} services: dropping spans"
            )

    def _fold_all(self, records: Sequence[CostRecord]) -> None:
        for record in records:
            self._fold(record)

    def _fold_failed(self, deadline: float) -> None:
        """Fold failed messages back into the overflow, oldest first, until ``deadline``
        (``time.perf_counter()``); at least one."""
        refold = self._refold
        while refold:
            value, spans, kept = refold.popleft()
            self._refold_spans -= spans
            self._refold_bytes -= len(value)
            self._fold_message(value, spans, kept)
            if time.perf_counter() >= deadline:
                return

    def _fold_message(self, value: bytes, spans: int, kept: list[CostRecord] | None) -> None:
        records = kept if kept is not None else self._decode(value)
        if records is None:  # cannot happen for values this exporter encoded
            self._dropped_spans += spans
        else:
            self._fold_all(records)

    def _invalid(self, record: CostRecord) -> None:
        self._invalid_spans += record.span_count
        self._note_failure(
            f"a record of service {record.service!r} cannot be encoded within "
            f"{self._max_value} bytes (message.max.bytes) or is not valid"
        )

    def _note_failure(self, what: str) -> None:
        # One line per failure streak; stats() counts every occurrence.
        if not self._failing:
            self._failing = True
            _logger.warning(
                "Kafka cost stream %s: %s (further failures are counted in stats() "
                "until deliveries succeed again)",
                self._topic,
                what,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            _logger.info("Kafka cost stream %s: deliveries succeed again", self._topic)

    # -- librdkafka callbacks (served by poll/flush, lock held) --------------------------

    def _on_delivery(
        self,
        unreported: _Unreported,
        spans: int,
        aggregates: int,
        err: Any,
        msg: Any,
        *,
        kept: list[CostRecord] | None,
    ) -> None:
        unreported.spans -= spans
        if err is None:
            self._delivered += 1
            self._delivered_spans += spans
            self._aggregates_delivered += aggregates
            if self._down_since is not None:
                self._down_since = None
                self._purged = False
            if self._failing:
                self._recovered()
            return
        self._failed += 1
        self._note_failure(f"delivery failed: {err}")
        if err.code() == self._timed_out:
            # librdkafka gave up after message.timeout.ms. Its producer may be wedged, e.g.
            # by a broker that forgot the idempotent producer id, where retries never end:
            # the next export starts a new producer with a new id.
            self._replace = True
        value = msg.value()
        if self._refold_bytes + len(value) > self._max_refold_bytes:
            # More failed bytes waiting than the local queue may hold: fold now, so memory
            # stays bounded whatever the brokers do.
            self._fold_message(value, spans, kept)
            return
        self._refold.append((value, spans, kept))
        self._refold_spans += spans
        self._refold_bytes += len(value)

    def _decode(self, value: bytes) -> Sequence[CostRecord] | None:
        """The records of a message this exporter wrote (schema 1 or 2)."""
        try:
            if self._schema == 1:
                return (CostRecord.from_json(value),)
            _envelope, good, bad = decode_message(_json.loads(value), value)
        except ValueError:
            return None
        return None if bad else good

    def _on_client_error(self, err: Any) -> None:
        self._client_errors += 1
        if err.code() == self._all_brokers_down and self._down_since is None:
            self._down_since = time.monotonic()
            self._probe_at = self._down_since + _PROBE_EVERY_S
        if err.fatal():
            # The idempotent producer cannot continue; the next export replaces it.
            self._replace = True
        self._note_failure(f"client error: {err}")
        if self._user_error_cb is not None:
            try:
                self._user_error_cb(err)
            except Exception:  # raising here would surface in export() via poll()
                _logger.exception("error_cb raised")

    # -- producer lifecycle ---------------------------------------------------------------

    def _live_producer(self) -> Any:
        """This process's producer, created on first use; None if it cannot be created."""
        if self._replace and self._producer is not None:
            # An outage in progress stays one (records keep folding, probes keep going):
            # only a delivery ends it, whichever producer makes it.
            old, self._producer, self._replace = self._producer, None, False
            old.purge()
            # Purged messages' reports fold them into overflow; librdkafka may hand some
            # over only later (in-flight requests under load), so the old producer is
            # polled until it has reported every message.
            old.poll(0)
            self._retired.append((old, self._unreported))
            self._unreported = _Unreported()
            self._serve_retired()
            if len(self._retired) > _MAX_RETIRED:  # bounded, whatever librdkafka does
                _oldest, unreported = self._retired.pop(0)
                self._dropped_spans += unreported.spans
                unreported.spans = 0
        if self._producer is None and self._unusable is None:
            try:
                confluent = self._confluent or import_confluent()
                self._producer = confluent.Producer(self._config)
                self._kafka_error = confluent.KafkaException
                self._timed_out = confluent.KafkaError._MSG_TIMED_OUT
                self._all_brokers_down = confluent.KafkaError._ALL_BROKERS_DOWN
            except Exception as exc:  # ImportError or KafkaException(_INVALID_ARG)
                self._unusable = str(exc)
                _logger.error("Kafka cost stream disabled, the producer cannot be created: %s", exc)
        return self._producer

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver queued messages and overflow aggregates; True if all went out in time."""
        if self._pid != os.getpid():
            self._reset_process_state()
        deadline = time.monotonic() + timeout_millis / 1000
        while True:
            with self._lock:
                producer = self._live_producer() if self._producer is not None else None
                if self._retired:
                    self._serve_retired()
                if self._refold:
                    self._fold_failed(math.inf)
                if producer is None:
                    return not self._overflow and not self._retired
                if self._overflow:
                    self._send_overflow(producer)
                left = deadline - time.monotonic()
                in_queue = producer.flush(max(0.0, min(left, _FLUSH_SLICE_S)))
                if in_queue == 0 and not self._overflow and not self._retired and not self._refold:
                    return True
            if time.monotonic() >= deadline:
                return False

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Flush within the timeout, then drop (and count) whatever is still undelivered."""
        if self._closed:
            return
        self.force_flush(timeout_millis)
        with self._lock:
            self._closed = True
            self._dropped_spans += self._overflow.pending_spans
            self._overflow.seal()
            producer, self._producer = self._producer, None
            if producer is not None:
                self._retired.append((producer, self._unreported))
            for old, unreported in self._retired:
                old.purge()
                old.poll(0)  # purged messages' reports: kept for folding, dropped below
                # Reports librdkafka has not handed over yet never will be: count them.
                self._dropped_spans += unreported.spans
                unreported.spans = 0
            self._retired.clear()
            # Failed messages left after the flush, and the purge's: never folded now.
            self._dropped_spans += self._refold_spans
            self._refold.clear()
            self._refold_spans = self._refold_bytes = 0

    def stats(self) -> Mapping[str, int]:
        """Counters of this process; never holds configuration or credentials.

        - ``spans``: spans handed to ``export`` (an aggregate counts its ``span_count``);
        - ``queued`` / ``delivered`` / ``failed``: messages accepted by librdkafka,
          acknowledged by the broker, and reported failed (their spans were folded into
          overflow aggregates to be sent again);
        - ``delivered_spans``: spans in acknowledged messages, aggregates included;
        - ``overflowed``: spans folded into aggregates (full queue, refused message or
          failed delivery); ``aggregates_delivered``: aggregate records acknowledged;
        - ``dropped_spans``: spans lost and counted: undelivered at the end of
          ``shutdown``, exported after it, more services than ``max_overflow_services``
          while the queue was full, or no producer (configuration error, logged once);
        - ``invalid_spans``: records that could not be encoded;
        - ``client_errors``: librdkafka errors (broker down, authentication...);
        - ``in_queue``: messages in librdkafka now (a replaced producer's unreported ones
          included); ``overflow_pending_spans``: spans
          waiting in aggregates now, or in failed messages still to be folded into them.

        Once ``force_flush`` returned True: spans == delivered_spans + dropped_spans +
        invalid_spans.
        """
        # A forked child's inherited producers are not its own to count.
        producers = (
            [self._producer, *(old for old, _ in tuple(self._retired))]
            if self._pid == os.getpid()
            else []
        )
        return {
            "spans": self._spans,
            "queued": self._queued,
            "delivered": self._delivered,
            "delivered_spans": self._delivered_spans,
            "failed": self._failed,
            "overflowed": self._overflowed,
            "aggregates_delivered": self._aggregates_delivered,
            "dropped_spans": self._dropped_spans,
            "invalid_spans": self._invalid_spans,
            "client_errors": self._client_errors,
            "in_queue": sum(len(producer) for producer in producers if producer is not None),
            "overflow_pending_spans": self._overflow.pending_spans + self._refold_spans,
        }


def kafka_exporter_from_env(environ: environment.Environ | None = None) -> KafkaCostExporter | None:
    """The exporter ``OTELCOST_KAFKA_*`` describe; None when ``OTELCOST_KAFKA_BOOTSTRAP`` is unset.

    - ``OTELCOST_KAFKA_BOOTSTRAP``: ``host:port[,host:port...]``;
    - ``OTELCOST_KAFKA_TOPIC``: default ``otel-cost-spans`` (``otel-cost-spans-otlp`` for
      ``otlp_json``);
    - ``OTELCOST_KAFKA_ENCODING``: ``json`` (default) or ``otlp_json``;
    - ``OTELCOST_KAFKA_SCHEMA``: ``2`` (default) or ``1``, for ``json``;
    - ``OTELCOST_KAFKA_CONFIG``: a Kafka client ``.properties`` file (SASL, SSL, any
      librdkafka setting), so that secrets need not be in the environment.

    Raises ValueError for a bad encoding, schema or properties file and OSError when the file
    cannot be read, so a misconfiguration shows at startup rather than as lost records.
    """
    bootstrap = environment.read(BOOTSTRAP_ENV, environ)
    if bootstrap is None:
        return None
    encoding = environment.choose(None, ENCODING_ENV, "json", environ)
    if encoding not in ("json", "otlp_json"):
        raise ValueError(f"{ENCODING_ENV} must be 'json' or 'otlp_json', not {encoding!r}")
    schema = environment.choose(None, SCHEMA_ENV, "2", environ)
    if schema not in ("1", "2"):
        raise ValueError(f"{SCHEMA_ENV} must be 1 or 2, not {schema!r}")
    config_path = environment.read(CONFIG_ENV, environ)
    config: dict[str, Any] = dict(read_properties(config_path)) if config_path else {}
    return KafkaCostExporter(
        bootstrap,
        environment.read(TOPIC_ENV, environ),
        encoding=cast(Encoding, encoding),
        schema=cast(Literal[1, 2], int(schema)),
        **config,
    )
