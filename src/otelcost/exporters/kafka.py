"""KafkaCostExporter: the cost stream, one Kafka message per CostRecord, keyed by service.

The message key is the service (UTF-8), so the default partitioner keeps each service in
one partition and ``otelcost enforce`` sees a service's records in order. The value is the
CostRecord schema-v1 JSON (or OTLP/JSON ``TracesData``, see ``_otlp``) and every message
carries the header ``otelcost-schema: 1``.

Nothing here blocks or raises into the pipeline: when librdkafka's bounded local queue is
full, records are folded into one overflow aggregate per service and sent when the queue
drains; a message whose delivery finally fails is folded back the same way. Every record
is accounted for in ``stats()``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, cast

from otelcost.exporters._otlp import encode_traces
from otelcost.exporters._overflow import OverflowAggregates
from otelcost.exporters.base import CostExporter, CostExportResult
from otelcost.record import SCHEMA_VERSION, CostRecord
from otelcost.stream._kafka import (
    DEFAULT_TOPIC,
    SCHEMA_HEADER,
    client_config,
    import_confluent,
    read_properties,
)

__all__ = [
    "BOOTSTRAP_ENV",
    "CONFIG_ENV",
    "DEFAULT_TOPIC",
    "ENCODING_ENV",
    "TOPIC_ENV",
    "KafkaCostExporter",
    "kafka_exporter_from_env",
]

logger = logging.getLogger("otelcost.kafka")

Encoding = Literal["json", "otlp_json"]

BOOTSTRAP_ENV = "OTELCOST_KAFKA_BOOTSTRAP"
TOPIC_ENV = "OTELCOST_KAFKA_TOPIC"
ENCODING_ENV = "OTELCOST_KAFKA_ENCODING"
CONFIG_ENV = "OTELCOST_KAFKA_CONFIG"

# Durable and ordered (acks=all + idempotence), cheap on the wire (linger + zstd), and a
# local queue bounded in messages and bytes so memory does not grow with an outage.
_PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 50,
    "compression.type": "zstd",
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 32 * 1024,
    "client.id": "otelcost",
    # librdkafka logs every failed reconnect; error_cb reports the same errors, and the
    # exporter logs one line per failure streak. Raise log_level (and set debug) to see
    # librdkafka's own lines, which go to the Python logger "otelcost.kafka.librdkafka".
    "log_level": 2,
    "logger": logging.getLogger("otelcost.kafka.librdkafka"),
}
_HEADERS = [(SCHEMA_HEADER, str(SCHEMA_VERSION).encode())]
# Spans per OTLP message: keeps a message far below the default 1 MB message.max.bytes.
_OTLP_SPANS_PER_MESSAGE = 500
_FLUSH_SLICE_S = 0.1
# Producers inherited over fork(): kept referenced and never used, because destroying one
# would wait for librdkafka threads that do not exist in the child.
_INHERITED_PRODUCERS: list[Any] = []


class KafkaCostExporter(CostExporter):
    """Produce CostRecords to ``topic`` with confluent-kafka (the ``kafka`` extra).

    ``producer_config`` entries are librdkafka settings and override the defaults (acks=all,
    idempotence, linger.ms=50, zstd, a queue of at most 100,000 messages / 32 MiB); SASL
    and SSL settings pass through unchanged. Keys may use underscores for dots
    (``sasl_password=...``). An ``error_cb`` is called after the exporter's own.

    The producer is created at the first export in each process, so an exporter built
    before ``fork()`` works in the children; a child starts with empty counters and
    never re-sends the parent's pending aggregates.

    ``max_overflow_services`` bounds the overflow aggregates (one per service and
    currency); spans of further services are dropped and counted while the queue is full.

    A message librdkafka gives up on (after ``message.timeout.ms``, 5 minutes by default)
    is folded into an aggregate and sent again, on a new producer. Should the broker have
    written it after all (librdkafka cannot always tell), it is counted twice: the
    stream errs towards over-counting spend, never towards losing it.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        encoding: Encoding = "json",
        max_overflow_services: int = 10_000,
        **producer_config: Any,
    ) -> None:
        if not bootstrap_servers:
            raise ValueError("bootstrap_servers is empty")
        if encoding not in ("json", "otlp_json"):
            raise ValueError(f"encoding must be 'json' or 'otlp_json', not {encoding!r}")
        config = client_config(_PRODUCER_DEFAULTS, producer_config)
        for owned in ("bootstrap.servers", "on_delivery"):
            if owned in config:
                raise ValueError(f"{owned!r} is set by the exporter, not in producer_config")
        self._user_error_cb: Callable[[Any], None] | None = config.pop("error_cb", None)
        config["bootstrap.servers"] = bootstrap_servers
        config["error_cb"] = self._on_client_error
        if encoding == "json":
            config["on_delivery"] = self._on_record_delivery
        self._config = config
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._encoding: Encoding = encoding
        self._max_overflow_services = max_overflow_services
        self._closed = False
        self._reset_process_state()

    def __repr__(self) -> str:
        return (
            f"KafkaCostExporter(bootstrap_servers={self._bootstrap!r}, "
            f"topic={self._topic!r}, encoding={self._encoding!r})"
        )

    def _reset_process_state(self) -> None:
        # Everything librdkafka- or process-specific: a forked child starts from scratch.
        inherited = getattr(self, "_producer", None)
        if inherited is not None:
            _INHERITED_PRODUCERS.append(inherited)
        self._pid = os.getpid()
        # Guards the producer, the overflow and the counters. Delivery callbacks run inside
        # poll()/flush(), which are only called with the lock held.
        self._lock = threading.Lock()
        self._producer: Any = None
        self._kafka_error: type[Exception] = Exception  # KafkaException once imported
        self._replace = False
        self._timed_out: int | None = None  # KafkaError._MSG_TIMED_OUT once imported
        self._unusable: str | None = None
        self._overflow = OverflowAggregates(self._max_overflow_services)
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
        if self._pid != os.getpid():
            self._reset_process_state()
        with self._lock:
            spans = sum(r.span_count for r in records)
            if self._closed:
                self._dropped_spans += spans
                return CostExportResult.FAILURE
            self._spans += spans
            producer = self._live_producer()
            if producer is None:
                self._dropped_spans += spans
                return CostExportResult.FAILURE
            if self._overflow:
                self._send_overflow(producer)
            if self._encoding == "json":
                self._export_json(producer, records)
            else:
                self._export_otlp(producer, records)
            producer.poll(0)
        return CostExportResult.SUCCESS

    def _export_json(self, producer: Any, records: Sequence[CostRecord]) -> None:
        produce = producer.produce
        topic = self._topic
        queued = 0
        for i, record in enumerate(records):
            if record.aggregate:
                self._produce_tracked(producer, [record])
                continue
            try:
                value = record.to_json()
            except (TypeError, ValueError) as exc:
                self._invalid(record, exc)
                continue
            try:
                produce(topic, value, record.service, headers=_HEADERS)
            except BufferError:
                producer.poll(0)
                try:
                    produce(topic, value, record.service, headers=_HEADERS)
                except BufferError:
                    # Still full after serving callbacks: it will not drain within this
                    # batch, so fold the rest instead of retrying each record.
                    self._fold_all(records[i:])
                    break
            except self._kafka_error as exc:  # refused, e.g. larger than message.max.bytes
                self._note_failure(f"message refused: {exc}")
                self._fold(record)
                continue
            queued += 1
        self._queued += queued

    def _export_otlp(self, producer: Any, records: Sequence[CostRecord]) -> None:
        by_service: dict[str, list[CostRecord]] = {}
        for record in records:
            by_service.setdefault(record.service, []).append(record)
        for group in by_service.values():
            for start in range(0, len(group), _OTLP_SPANS_PER_MESSAGE):
                self._produce_tracked(producer, group[start : start + _OTLP_SPANS_PER_MESSAGE])

    def _encode(self, records: Sequence[CostRecord]) -> bytes:
        if self._encoding == "json":
            return records[0].to_json()
        return encode_traces(records[0].service, records)

    def _produce_tracked(self, producer: Any, records: Sequence[CostRecord]) -> bool:
        """Produce one message for ``records`` (one service) with its own delivery callback.

        Used for aggregates and OTLP batches, whose span counts the shared callback cannot
        know. Returns False when the records had to be folded instead.
        """
        try:
            value = self._encode(records)
        except (TypeError, ValueError) as exc:
            for record in records:
                self._invalid(record, exc)
            return True
        spans = sum(r.span_count for r in records)

        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                self._delivered += 1
                self._delivered_spans += spans
                self._aggregates_delivered += sum(1 for r in records if r.aggregate)
                self._recovered()
            else:
                self._delivery_failed(err, records)

        for retried in (False, True):
            try:
                producer.produce(
                    self._topic, value, records[0].service, headers=_HEADERS, on_delivery=delivered
                )
            except BufferError:
                if retried:
                    break
                producer.poll(0)
            except self._kafka_error as exc:  # refused, e.g. larger than message.max.bytes
                self._note_failure(f"message refused: {exc}")
                break
            else:
                self._queued += 1
                return True
        self._fold_all(records)
        return False

    def _send_overflow(self, producer: Any) -> None:
        pending = self._overflow.seal()
        for i, aggregate in enumerate(pending):
            if not self._produce_tracked(producer, [aggregate]):
                self._fold_all(pending[i + 1 :])
                return

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

    def _invalid(self, record: CostRecord, exc: Exception) -> None:
        self._invalid_spans += record.span_count
        self._note_failure(f"record of service {record.service!r} not encodable: {exc}")

    def _note_failure(self, what: str) -> None:
        # One line per failure streak; stats() counts every occurrence.
        if not self._failing:
            self._failing = True
            logger.warning(
                "Kafka cost stream %s: %s (further failures are counted in stats() "
                "until deliveries succeed again)",
                self._topic,
                what,
            )

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            logger.info("Kafka cost stream %s: deliveries succeed again", self._topic)

    # -- librdkafka callbacks (served by poll/flush, lock held) --------------------------

    def _on_record_delivery(self, err: Any, msg: Any) -> None:
        if err is None:
            self._delivered += 1
            self._delivered_spans += 1
            if self._failing:
                self._recovered()
            return
        try:
            record = CostRecord.from_json(msg.value())
        except ValueError:  # cannot happen for values this exporter encoded
            self._failed += 1
            self._dropped_spans += 1
            return
        self._delivery_failed(err, (record,))

    def _delivery_failed(self, err: Any, records: Sequence[CostRecord]) -> None:
        self._failed += 1
        self._note_failure(f"delivery failed: {err}")
        if err.code() == self._timed_out:
            # librdkafka gave up after message.timeout.ms. Its producer may be wedged, e.g.
            # by a broker that forgot the idempotent producer id, where retries never end:
            # the next export starts a new producer with a new id.
            self._replace = True
        self._fold_all(records)

    def _on_client_error(self, err: Any) -> None:
        self._client_errors += 1
        if err.fatal():
            # The idempotent producer cannot continue; the next export replaces it.
            self._replace = True
        self._note_failure(f"client error: {err}")
        if self._user_error_cb is not None:
            try:
                self._user_error_cb(err)
            except Exception:  # raising here would surface in export() via poll()
                logger.exception("error_cb raised")

    # -- producer lifecycle ---------------------------------------------------------------

    def _live_producer(self) -> Any:
        """This process's producer, created on first use; None if it cannot be created."""
        if self._replace and self._producer is not None:
            old, self._producer, self._replace = self._producer, None, False
            old.purge()
            old.poll(0)  # serves every purged message's callback: they fold into overflow
        if self._producer is None and self._unusable is None:
            try:
                confluent = import_confluent()
                self._producer = confluent.Producer(self._config)
                self._kafka_error = confluent.KafkaException
                self._timed_out = confluent.KafkaError._MSG_TIMED_OUT
            except Exception as exc:  # ImportError or KafkaException(_INVALID_ARG)
                self._unusable = str(exc)
                logger.error("Kafka cost stream disabled, the producer cannot be created: %s", exc)
        return self._producer

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Deliver queued messages and overflow aggregates; True if all went out in time."""
        if self._pid != os.getpid():
            self._reset_process_state()
        deadline = time.monotonic() + timeout_millis / 1000
        while True:
            with self._lock:
                producer = self._live_producer() if self._producer is not None else None
                if producer is None:
                    return not self._overflow
                if self._overflow:
                    self._send_overflow(producer)
                left = deadline - time.monotonic()
                in_queue = producer.flush(max(0.0, min(left, _FLUSH_SLICE_S)))
                if in_queue == 0 and not self._overflow:
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
                producer.purge()
                producer.poll(0)  # purged messages' callbacks count as dropped now

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
        - ``in_queue``: messages in librdkafka now; ``overflow_pending_spans``: spans
          waiting in aggregates now.

        Once ``force_flush`` returned True: spans == delivered_spans + dropped_spans +
        invalid_spans.
        """
        producer = self._producer if self._pid == os.getpid() else None
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
            "in_queue": len(producer) if producer is not None else 0,
            "overflow_pending_spans": self._overflow.pending_spans,
        }


def kafka_exporter_from_env(environ: Mapping[str, str] | None = None) -> KafkaCostExporter | None:
    """The exporter ``OTELCOST_KAFKA_*`` describe; None when ``OTELCOST_KAFKA_BOOTSTRAP`` is unset.

    - ``OTELCOST_KAFKA_BOOTSTRAP``: ``host:port[,host:port...]``;
    - ``OTELCOST_KAFKA_TOPIC``: default ``otel-cost-spans``;
    - ``OTELCOST_KAFKA_ENCODING``: ``json`` (default) or ``otlp_json``;
    - ``OTELCOST_KAFKA_CONFIG``: a Kafka client ``.properties`` file (SASL, SSL, any
      librdkafka setting), so that secrets need not be in the environment.

    Raises ValueError for a bad encoding or properties file and OSError when the file
    cannot be read, so a misconfiguration shows at startup rather than as lost records.
    """
    env = os.environ if environ is None else environ
    bootstrap = env.get(BOOTSTRAP_ENV, "").strip()
    if not bootstrap:
        return None
    encoding = env.get(ENCODING_ENV, "").strip() or "json"
    if encoding not in ("json", "otlp_json"):
        raise ValueError(f"{ENCODING_ENV} must be 'json' or 'otlp_json', not {encoding!r}")
    config_path = env.get(CONFIG_ENV, "").strip()
    config: dict[str, Any] = dict(read_properties(config_path)) if config_path else {}
    return KafkaCostExporter(
        bootstrap,
        env.get(TOPIC_ENV, "").strip() or DEFAULT_TOPIC,
        encoding=cast(Encoding, encoding),
        **config,
    )
