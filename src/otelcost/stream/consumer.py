"""StreamConsumer: the consumer loop ``otelcost enforce`` and ``otelcost rollup`` share.

The loop, for any store:

1. at start, reach a broker within ``connect_timeout`` seconds (or ``idle_timeout``, when
   shorter) or raise BrokerUnreachableError naming the address (nothing is consumed then);
2. consume a batch (``batch_size`` messages or ``batch_timeout`` seconds); every message is
   decoded (schema 1 or 2) into the subclass's batch, invalid messages and records into
   dead letters;
3. ``_complete`` the batch (subclass: dead-letter, write to the store, commit); when the
   store or the DLQ fails it raises RetryLaterError: the partitions are paused, the batch
   is kept and retried with exponential backoff while the group membership stays alive,
   and consumption resumes once it went through;
4. on revoke the pending batch is completed if possible, else its revoked partitions are
   dropped for the new owner to replay; on loss they are dropped.

``stop()`` (SIGTERM/SIGINT in the CLIs) lets the current batch finish and commit; a batch
that still cannot complete after ``shutdown_grace`` seconds is left uncommitted for the
next run. ``run(idle_timeout=...)`` returns after that many seconds without a message,
whatever the cause (no data, joining the group, a broker gone). Failures are logged once
per streak and counted in ``stats()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, NamedTuple, TypedDict, TypeVar

from otelcost.errors import BrokerUnreachableError, InvalidRecordError, RetryLaterError
from otelcost.stream._consume import (
    DeadLetter,
    DeadLetterQueue,
    Headers,
    client_configs,
    consumer_lag,
    decode_rows,
)
from otelcost.stream._kafka import DEFAULT_TOPIC, import_confluent
from otelcost.stream.schema2 import Envelope, Row

__all__ = [
    "BrokerUnreachableError",
    "ConsumedBatch",
    "ConsumerOptions",
    "RetryLaterError",
    "StreamConsumer",
    "describe",
]

_COUNTERS = (
    "consumed",
    "records",
    "dlq",
    "batches",
    "dlq_errors",
    "consumer_errors",
    "client_errors",
)


class Message(NamedTuple):
    """Where one consumed message came from, and what it held."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None

    def dead_letter(self, value: bytes | None, error: str, index: int | None = None) -> DeadLetter:
        """A dead letter of this message holding ``value`` (all of it, or one record)."""
        return DeadLetter(
            self.partition, self.offset, self.key, value, list(self.headers or ()), error, index
        )


class ConsumedBatch:
    """Messages consumed together, until their records are stored and offsets committed.

    ``add`` decodes each message (``decode_rows``: schema 1 or 2, validated) and hands its
    valid records to the subclass's ``_keep``; an invalid message, or each invalid record
    of a schema-2 message, becomes a dead letter. Either way the message is consumed: its
    offset is committed once its dead letters are acknowledged. ``next_offsets`` holds, per
    partition, the offset after the last message.
    """

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.dead: list[DeadLetter] = []
        self.next_offsets: dict[int, int] = {}
        self.messages = 0
        #: Valid records kept (the subclass counts them in ``_keep``).
        self.records = 0

    def __len__(self) -> int:
        """Messages consumed into this batch."""
        return self.messages

    @property
    def record_count(self) -> int:
        """Records consumed into the batch, valid or dead-lettered (a message rejected
        whole counts one)."""
        return self.records + len(self.dead)

    def add(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> None:
        """Decode one message into ``_keep`` and the dead letters."""
        self.messages += 1
        if offset + 1 > self.next_offsets.get(partition, -1):
            self.next_offsets[partition] = offset + 1
        message = Message(partition, offset, key, value, headers)
        try:
            envelope, rows, bad = decode_rows(key, value, headers)
        except InvalidRecordError as exc:
            self.dead.append(message.dead_letter(value, str(exc)))
            return
        for record in bad:
            self.dead.append(message.dead_letter(record.value, record.error, record.index))
        if rows:
            self._keep(message, envelope, rows)

    def drop_partitions(self, partitions: set[int]) -> None:
        """Forget everything from ``partitions`` (revoked or lost: their new owner replays them)."""
        self.dead = [d for d in self.dead if d.partition not in partitions]
        self.next_offsets = {p: o for p, o in self.next_offsets.items() if p not in partitions}
        self._drop(partitions)

    def _keep(self, message: Message, envelope: Envelope, rows: list[Row]) -> None:
        """Take the valid records of ``message`` and count them in ``records``."""
        raise NotImplementedError

    def _drop(self, partitions: set[int]) -> None:
        """Forget the records of ``partitions`` and count ``records`` again."""
        raise NotImplementedError


B = TypeVar("B", bound=ConsumedBatch)


class ConsumerOptions(TypedDict, total=False):
    """The keyword arguments every StreamConsumer (``Enforcer``, ``Rollup``) takes; see
    ``StreamConsumer``."""

    topic: str
    group: str
    dlq_topic: str | None
    kafka_config: Mapping[str, Any] | None
    batch_size: int
    batch_timeout: float
    backoff: float
    max_backoff: float
    shutdown_grace: float
    connect_timeout: float


class StreamConsumer(Generic[B]):
    """Consume ``topic`` as group ``group`` into a store; subclasses say how (see module).

    ``topic`` defaults to the cost stream, ``group`` to the subclass's ``default_group``;
    dead letters go to ``dlq_topic`` (default ``<topic>.dlq``). ``kafka_config`` holds
    librdkafka settings for both the consumer and the DLQ producer (SASL, SSL...);
    consumer-only keys (``session.timeout.ms``, ``group.*``, ...) go to the consumer only.
    ``batch_size`` messages or ``batch_timeout`` seconds (default: the subclass's) make a
    batch. Failures are retried after ``backoff`` seconds, doubling up to
    ``max_backoff``; after ``stop()`` a failing batch is retried for at most
    ``shutdown_grace`` seconds, then left uncommitted for the next run. ``run`` raises
    BrokerUnreachableError when no broker answers within ``connect_timeout`` seconds.
    """

    #: The command's name: logger ``otelcost.<name>``, client id ``otelcost-<name>``.
    name: ClassVar[str]
    #: The consumer group when none is given.
    default_group: ClassVar[str]
    #: Seconds a batch waits for messages when ``batch_timeout`` is not given.
    default_batch_timeout: ClassVar[float]
    #: Counters of the subclass, after the shared ones.
    counter_names: ClassVar[tuple[str, ...]] = ()
    #: What happens to a batch that a revoke could not complete (for the log line).
    replay_note: ClassVar[str] = "the new owner replays it from the last commit"

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str | None = None,
        dlq_topic: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        batch_size: int = 5_000,
        batch_timeout: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        shutdown_grace: float = 30.0,
        connect_timeout: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not connect_timeout > 0:
            raise ValueError("connect_timeout must be > 0")
        self._log = logging.getLogger(f"otelcost.{self.name}")
        group = group or self.default_group
        self._consumer_config, dlq_config = client_configs(
            bootstrap_servers,
            group,
            kafka_config,
            client_id=f"otelcost-{self.name}",
            error_cb=self._on_client_error,
        )
        self._bootstrap = bootstrap_servers
        self._topic = topic
        self._group = group
        self._dlq = DeadLetterQueue(dlq_topic or f"{topic}.dlq", dlq_config)
        self._batch_size = batch_size
        self._batch_timeout = self.default_batch_timeout if batch_timeout is None else batch_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._shutdown_grace = shutdown_grace
        self._connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._consumer: Any = None
        self._pending: B | None = None
        self._paused = False
        self._to_resume: list[Any] = []
        self._last_message = 0.0
        self._connecting = False
        self._failing: str | None = None
        self._counters = dict.fromkeys((*_COUNTERS, *self.counter_names), 0)
        self._lag = 0

    def stop(self) -> None:
        """Ask ``run`` to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def stats(self) -> dict[str, int]:
        """The counters (``consumed``: messages; ``records``: the records in them, valid
        or dead-lettered, a message rejected whole counting one), ``lag`` (messages behind
        on the assigned partitions after the last batch) and ``paused`` (1 while a batch
        waits for the store or the DLQ)."""
        return {**self._counters, "lag": self._lag, "paused": int(self._paused)}

    # -- subclass hooks ---------------------------------------------------------------------

    def _new_batch(self) -> B:
        raise NotImplementedError

    def _complete(self, batch: B) -> None:
        """Dead-letter, store and commit ``batch``; RetryLaterError keeps it pending."""
        raise NotImplementedError

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """Partitions were assigned. librdkafka keeps a partition paused across revoke and
        re-assignment: resume it from the loop, once no batch is pending."""
        self._log.info("assigned %s", describe(partitions))
        self._to_resume.extend(partitions)

    def _held(self) -> set[int]:
        """Assigned partitions whose messages must not be consumed yet."""
        return set()

    def _before_consume(self) -> None:
        """Called by the loop before each consume."""

    def _stray(self, first_offsets: dict[int, int]) -> None:
        """Messages arrived (first offset per partition) while a batch was pending: rewind
        and pause their partitions so they are consumed, in order, after it."""
        confluent = import_confluent()
        for partition, offset in first_offsets.items():
            tp = confluent.TopicPartition(self._topic, partition, offset)
            self._consumer.seek(tp)
            self._consumer.pause([tp])

    def _forget(self, partitions: set[int]) -> None:
        """``partitions`` were revoked or lost."""

    def _revoke_errors(self) -> tuple[type[Exception], ...]:
        return (RetryLaterError,)

    def _close_store(self) -> None:
        """Release the store at the end of ``run``."""

    # -- main loop ------------------------------------------------------------------------

    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None) -> bool:
        """Consume until ``stop()``, ``max_records`` messages, or ``idle_timeout`` seconds
        without a message (whatever the cause). Returns True when everything consumed was
        committed (False: a failing batch was left for the next run after
        ``shutdown_grace``). Raises BrokerUnreachableError when no broker answered within
        the connect timeout.
        """
        confluent = import_confluent()
        self._consumer = confluent.Consumer(self._consumer_config)
        try:
            self._connect(confluent, idle_timeout)
        except BrokerUnreachableError:
            self._consumer.close()
            self._consumer = None
            self._close_store()
            raise
        clean = False
        try:
            self._consumer.subscribe(
                [self._topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._last_message = time.monotonic()
            clean = self._loop(max_records, idle_timeout)
        finally:
            if not clean:
                self._pending = None  # not to be committed by the revoke in close()
            self._consumer.close()
            self._consumer = None
            self._dlq.close()
            self._close_store()
            self._log.info(
                "otelcost %s %s: %s",
                self.name,
                "stopped" if clean else "stopped with an uncommitted batch",
                " ".join(f"{k}={v}" for k, v in self.stats().items()),
            )
        return clean

    def _connect(self, confluent: Any, idle_timeout: float | None) -> None:
        # An idle timeout shorter than the connect timeout bounds the wait too: without a
        # broker no message can come. The client's own errors while connecting are counted,
        # not logged (they are also served late, by close()): the one line that matters is
        # the error raised here.
        timeout, option = self._connect_timeout, "--connect-timeout"
        if idle_timeout is not None and idle_timeout < timeout:
            timeout, option = idle_timeout, "--idle-timeout"
        self._connecting = True
        try:
            self._consumer.list_topics(timeout=timeout)
        except confluent.KafkaException:
            raise BrokerUnreachableError(
                f"no Kafka broker answered at {self._bootstrap} within {timeout:g} s ({option})"
            ) from None
        self._connecting = False

    def _loop(self, max_records: int | None, idle_timeout: float | None) -> bool:
        delay = self._backoff
        stop_deadline: float | None = None
        while True:
            if self._pending is not None:
                try:
                    self._complete(self._pending)
                except RetryLaterError as exc:
                    self._note_failure(str(exc))
                    if self._stop.is_set():
                        stop_deadline = stop_deadline or time.monotonic() + self._shutdown_grace
                        if time.monotonic() >= stop_deadline:
                            self._log.error(
                                "giving up on the pending batch at shutdown: %s; it is not "
                                "committed and the next run reads it again",
                                exc,
                            )
                            return False
                    self._pause()
                    self._wait(delay)
                    delay = min(delay * 2, self._max_backoff)
                    continue
                self._pending = None
                delay = self._backoff
                self._resume()
                self._recovered()
            if self._stop.is_set():
                return True
            self._before_consume()
            consumed = self._counters["consumed"]
            if max_records is not None and consumed >= max_records:
                return True
            if idle_timeout is not None and time.monotonic() - self._last_message > idle_timeout:
                return True
            if self._to_resume:
                self._consumer.resume(self._to_resume)
                self._to_resume.clear()
            limit = self._batch_size
            if max_records is not None:
                limit = min(limit, max_records - consumed)
            self._pending = self._consume(limit)

    def _consume(self, limit: int) -> B | None:
        messages = self._consumer.consume(num_messages=limit, timeout=self._batch_timeout)
        batch = self._new_batch()
        held = self._held()
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._counters["consumer_errors"] += 1
                self._note_failure(f"consumer: {err}")
                continue
            if held and msg.partition() in held:
                continue  # fetched before its pause: read again once released
            batch.add(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers())
        if not batch.next_offsets:
            return None
        self._counters["consumed"] += len(batch)
        self._counters["records"] += batch.record_count
        self._last_message = time.monotonic()
        return batch

    def _update_lag(self) -> None:
        self._lag = consumer_lag(self._consumer)

    # -- pausing while the batch cannot complete -------------------------------------------

    def _pause(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)
        if not self._paused:
            self._paused = True
            self._log.warning(
                "paused consumption of %s until the pending batch goes through", self._topic
            )

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            held = self._held()
            ready = [tp for tp in self._consumer.assignment() if tp.partition not in held]
            if ready:
                self._consumer.resume(ready)
            self._log.info("resumed consumption of %s", self._topic)

    def _wait(self, seconds: float) -> None:
        """Keep the group membership alive for ``seconds`` without taking new work."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (
            self._stop.is_set() and self._pending is None
        ):
            messages = self._consumer.consume(
                num_messages=self._batch_size, timeout=min(left, self._batch_timeout)
            )
            first: dict[int, int] = {}
            for msg in messages:
                if msg.error() is None and msg.partition() not in first:
                    first[msg.partition()] = msg.offset()
            if first:
                self._stray(first)
            if self._pending is None:  # a revoke resolved it
                return

    # -- rebalance callbacks (run inside consume/close) ------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned(consumer, partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._log.info("revoked %s", describe(partitions))
        revoked = {tp.partition for tp in partitions}
        self._forget(revoked)
        self._to_resume = [tp for tp in self._to_resume if tp.partition not in revoked]
        pending = self._pending
        if pending is None:
            return
        try:
            self._complete(pending)
        except self._revoke_errors() as exc:
            self._log.warning(
                "revoked with a pending batch that cannot be completed now (%s): %s",
                exc,
                self.replay_note,
            )
            pending.drop_partitions(revoked)
            if pending.next_offsets:
                return
        self._pending = None
        self._paused = False

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        self._log.warning(
            "lost %s: uncommitted work there is read again by the new owner",
            describe(partitions),
        )
        lost = {tp.partition for tp in partitions}
        self._forget(lost)
        if self._pending is not None:
            self._pending.drop_partitions(lost)
            if not self._pending.next_offsets:
                self._pending = None
                self._paused = False

    def _on_client_error(self, err: Any) -> None:
        self._counters["client_errors"] += 1
        if not self._connecting:
            self._note_failure(f"Kafka client: {err}")

    # -- logging: one line per failure streak ----------------------------------------------

    def _note_failure(self, what: str) -> None:
        if self._failing is None:
            self._failing = what
            self._log.warning("%s (retrying; further failures counted in stats())", what)

    def _recovered(self) -> None:
        if self._failing is not None:
            self._log.info("recovered from: %s", self._failing)
            self._failing = None


def describe(partitions: list[Any]) -> str:
    """``topic[p], ...`` for log lines."""
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
