"""What the consumers of the cost stream share (``otelcost enforce``, ``otelcost rollup``).

- ``decode``: one message (schema 1 or 2, told apart by the ``otelcost-schema`` header or,
  without one, by the value's ``schema`` field) to its CostRecords and the records of it
  that are invalid, or InvalidRecordError when the whole message is; ``decode_rows``
  the same with the valid records as schema-2 rows, for consumers that only sum them;
- ``client_configs``: the consumer's and the dead-letter producer's librdkafka settings
  from the user's (SASL, SSL... go to both; consumer-only keys to the consumer only);
- ``consumer_lag``: how far a consumer is behind;
- ``DeadLetterQueue``: produces rejected messages to ``<topic>.dlq`` with their original
  key, value and headers plus ``otelcost-error`` (why) and ``otelcost-source``
  (``<topic>/<partition>/<offset>``); a bad record inside a schema-2 message goes alone,
  as a one-record schema-2 message holding its original bytes, with its index in the
  ``otelcost-record-index`` header, and its neighbours are consumed. A consumer records
  a batch as done only after every dead letter of it was acknowledged, so nothing is
  lost; a replay after a crash may dead-letter a message twice (at least once).

Both consumers decode with the same rules, so a message is dead-lettered by both or by
neither (each consumer group writes its own copy to the DLQ).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otelcost import _json
from otelcost.budget.model import MAX_DELTA_NANOS, MAX_SERVICE_LEN
from otelcost.errors import DeadLetterError, InvalidRecordError
from otelcost.record import MAX_RECORD_BYTES, CostRecord
from otelcost.stream._kafka import SCHEMA_HEADER, client_config, import_confluent
from otelcost.stream.schema2 import (
    BadRecord,
    Envelope,
    Row,
    decode_message,
    envelope_of,
    record_row,
)
from otelcost.stream.schema2 import decode_rows as decode_rows_v2

__all__ = [
    "ERROR_HEADER",
    "INDEX_HEADER",
    "SOURCE_HEADER",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterQueue",
    "Headers",
    "client_configs",
    "consumer_lag",
    "decode",
    "decode_rows",
]

_logger = logging.getLogger(__name__)

#: Header on a dead letter: why the message was rejected ("field: reason").
ERROR_HEADER = "otelcost-error"
#: Header on a dead letter: where it came from, "<topic>/<partition>/<offset>".
SOURCE_HEADER = "otelcost-source"
#: Header on a dead letter of one record of a schema-2 message: its index in that message.
INDEX_HEADER = "otelcost-record-index"

_SCHEMAS = {b"1": 1, b"2": 2}

Headers = Sequence[tuple[str, bytes | None]]

# Production-sized group timing (librdkafka's defaults, spelled out so they are visible
# and overridable); tests and Tansu want session 6 s, heartbeat 0.5 s, max poll 10 s.
_CONSUMER_DEFAULTS: Mapping[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "enable.partition.eof": False,
    "session.timeout.ms": 45_000,
    "heartbeat.interval.ms": 3_000,
    "max.poll.interval.ms": 300_000,
    # One log line per failure streak comes from error_cb; librdkafka's own lines (one
    # per failed reconnect) only at log_level >= 3, to the logger "otelcost.librdkafka".
    "log_level": 2,
    "logger": logging.getLogger("otelcost.librdkafka"),
}
_DLQ_DEFAULTS: Mapping[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 5,
    "compression.type": "zstd",
    # A dead letter may be as large as anything the broker accepted on the source topic.
    "message.max.bytes": 100 * 1024 * 1024,
    "log_level": 2,
    "logger": logging.getLogger("otelcost.librdkafka"),
}
# Settings that only a consumer or only a producer understands; the rest of the user's
# Kafka settings (bootstrap, SASL, SSL...) go to both clients.
_CONSUMER_ONLY_PREFIXES = (
    "group.",
    "session.",
    "heartbeat.",
    "max.poll.",
    "auto.",
    "enable.auto.",
    "enable.partition.eof",
    "fetch.",
    "max.partition.fetch.",
    "isolation.",
    "partition.assignment.",
    "queued.",
    "check.crcs",
)
_OWNED = ("bootstrap.servers", "group.id", "enable.auto.commit", "on_commit")


def _open(key: bytes | None, value: bytes | None, headers: Headers | None) -> tuple[int, Any]:
    """The schema (1 or 2) and parsed value of a message; InvalidRecordError if neither.

    The key, when present, must be UTF-8 (the producer writes the service); a schema
    header, when present, must say 1 or 2 and agree with the value's ``schema``.
    """
    if key is not None:
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRecordError("<key>", "not valid UTF-8") from None
    declared: int | None = None
    for name, header_value in headers or ():
        if name == SCHEMA_HEADER:
            declared = _SCHEMAS.get(header_value or b"")
            if declared is None:
                raise InvalidRecordError(
                    f"<header {SCHEMA_HEADER}>", f"unsupported schema {header_value!r}"
                )
    if value is None:
        raise InvalidRecordError("<record>", "empty message")
    try:
        doc = _json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRecordError("<record>", f"not valid JSON: {exc}") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if type(schema) is int and schema in (1, 2):
        if declared is not None and schema != declared:
            raise InvalidRecordError("schema", f"{schema}, but the header says {declared}")
        if schema == 2:
            service = doc.get("service")
            if isinstance(service, str) and len(service) > MAX_SERVICE_LEN:
                raise InvalidRecordError(
                    "service", f"longer than the budget store's {MAX_SERVICE_LEN}"
                )
            return 2, doc
    if len(value) > MAX_RECORD_BYTES:
        raise InvalidRecordError("<record>", f"{len(value)} bytes exceeds {MAX_RECORD_BYTES}")
    return 1, doc  # CostRecord.from_dict names what is wrong with anything else


def _v1(doc: Any) -> CostRecord:
    record = CostRecord.from_dict(doc)
    if len(record.service) > MAX_SERVICE_LEN:
        raise InvalidRecordError("service", f"longer than the budget store's {MAX_SERVICE_LEN}")
    if record.cost_nanos >= MAX_DELTA_NANOS:
        raise InvalidRecordError("cost_amount", "reaches the budget store's 2**53 nanos limit")
    return record


def decode(
    key: bytes | None, value: bytes | None, headers: Headers | None
) -> tuple[list[CostRecord], list[BadRecord]]:
    """The valid CostRecords of one message (schema 1 or 2) and its invalid records.

    InvalidRecordError rejects the whole message: a key that is not UTF-8, a schema header
    other than 1 or 2 or disagreeing with the value, an invalid schema-1 record or
    schema-2 envelope, or what the budget store cannot apply (service length, amount).
    """
    schema, doc = _open(key, value, headers)
    if schema == 1:
        return [_v1(doc)], []
    _envelope, records, bad = decode_message(doc, value or b"")
    return records, bad


def decode_rows(
    key: bytes | None, value: bytes | None, headers: Headers | None
) -> tuple[Envelope, list[Row], list[BadRecord]]:
    """``decode`` for the consumers that sum records: the envelope and the valid records
    as schema-2 rows (``otelcost.stream.schema2.Row``; a schema-1 record becomes one),
    validated alike but without building CostRecords."""
    schema, doc = _open(key, value, headers)
    if schema == 1:
        record = _v1(doc)
        return envelope_of(record), [record_row(record)], []
    return decode_rows_v2(doc, value or b"")


def client_configs(
    bootstrap_servers: str,
    group: str,
    kafka_config: Mapping[str, Any] | None,
    *,
    client_id: str,
    error_cb: Callable[[Any], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The consumer's and the dead-letter producer's settings.

    ``kafka_config`` (keys with dots or underscores, see ``client_config``) overrides the
    defaults; the consumer owns ``bootstrap.servers``, ``group.id`` and the commits, so
    setting those in ``kafka_config`` is a ValueError. The producer's client id is
    ``<client_id>-dlq``.
    """
    user = client_config({}, kafka_config or {})
    for owned in _OWNED:
        if owned in user:
            raise ValueError(f"{owned!r} is set by the consumer, not in kafka_config")
    shared = {k: v for k, v in user.items() if not k.startswith(_CONSUMER_ONLY_PREFIXES)}
    consumer = {
        **_CONSUMER_DEFAULTS,
        "client.id": client_id,
        **user,
        "bootstrap.servers": bootstrap_servers,
        "group.id": group,
        "error_cb": error_cb,
    }
    producer = {
        **_DLQ_DEFAULTS,
        "client.id": f"{client_id}-dlq",
        **shared,
        "bootstrap.servers": bootstrap_servers,
        "error_cb": error_cb,
    }
    return consumer, producer


def consumer_lag(consumer: Any) -> int:
    """Messages behind: over the assigned partitions, the high watermark (as last fetched)
    minus the consumer's position; 0 with no assignment."""
    assignment = consumer.assignment()
    if not assignment:
        return 0
    lag = 0
    for tp in consumer.position(assignment):
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0 and tp.offset >= 0:
            lag += max(0, high - tp.offset)
    return lag


@dataclass(slots=True)
class DeadLetter:
    """A rejected message, or with ``index`` set one rejected record of a schema-2 message:
    the original bytes and headers, and why it was rejected."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    error: str
    index: int | None = None
    delivered: bool = False


class DeadLetterQueue:
    """A lazily created idempotent producer to ``topic`` for dead letters.

    ``send`` produces the letters not delivered yet and ``flush`` waits for their
    acknowledgements; a letter is marked ``delivered`` when the broker acknowledged it,
    so a retried batch never sends it again.
    """

    def __init__(self, topic: str, producer_config: Mapping[str, Any]) -> None:
        self.topic = topic
        self._config = dict(producer_config)
        self._producer: Any = None

    def send(self, source_topic: str, letters: Sequence[DeadLetter]) -> None:
        """Produce every undelivered letter; DeadLetterError when the producer refuses one."""
        if not letters:
            return
        confluent = import_confluent()
        if self._producer is None:
            self._producer = confluent.Producer(self._config)
        for letter in letters:
            if letter.delivered:
                continue
            headers = [
                *letter.headers,
                (ERROR_HEADER, letter.error.encode()),
                (SOURCE_HEADER, f"{source_topic}/{letter.partition}/{letter.offset}".encode()),
            ]
            if letter.index is not None:
                headers.append((INDEX_HEADER, str(letter.index).encode()))
            try:
                self._producer.produce(
                    self.topic,
                    letter.value,
                    letter.key,
                    headers=headers,
                    on_delivery=_mark_delivered(letter),
                )
            except (BufferError, confluent.KafkaException) as exc:
                raise DeadLetterError(f"dead-letter queue: {exc}") from exc
        self._producer.poll(0)

    def flush(self, letters: Sequence[DeadLetter], timeout: float) -> None:
        """Wait up to ``timeout`` s for ``letters``; DeadLetterError if any is unacknowledged."""
        if not letters:
            return
        if self._producer is not None:
            self._producer.flush(timeout)
        missing = sum(1 for letter in letters if not letter.delivered)
        if missing:
            raise DeadLetterError(
                f"dead-letter queue {self.topic}: {missing} messages not delivered"
            )

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is still queued (at most ``timeout`` s)."""
        if self._producer is not None:
            self._producer.flush(timeout)


def _mark_delivered(letter: DeadLetter) -> Callable[[Any, Any], None]:
    def on_delivery(err: Any, _msg: Any) -> None:
        if err is None:
            letter.delivered = True
        else:
            _logger.warning(
                "dead letter from partition %d offset %d not delivered: %s",
                letter.partition,
                letter.offset,
                err,
            )

    return on_delivery
