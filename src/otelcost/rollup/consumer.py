"""Rollup: consume the cost stream into per-minute rollups in PostgreSQL, exactly once.

The loop (``otelcost rollup`` runs one):

1. on partition assignment, each partition is positioned at the next offset stored in
   PostgreSQL for this consumer group (a partition never stored starts at the beginning,
   or at the end with ``auto.offset.reset=latest``): PostgreSQL, not Kafka, is the
   source of truth;
2. consume a batch; each message is validated exactly as ``otelcost enforce`` does, and
   invalid ones go to ``<topic>.dlq`` (original bytes plus ``otelcost-error`` and
   ``otelcost-source`` headers);
3. in one PostgreSQL transaction: lock the partitions' stored offsets, skip whatever is
   below them (already counted), get the new dead letters acknowledged by the DLQ,
   upsert the per-minute sums and advance the offsets; commit;
4. commit the same offsets to Kafka, asynchronously, only so that the usual consumer-lag
   tools see the group's progress.

A SIGKILL anywhere leaves either the whole batch committed or none of it, and the next
run resumes at the stored offsets: nothing is counted twice or lost. When PostgreSQL or
the DLQ is unavailable the partitions are paused, the batch is kept and retried with
exponential backoff (group membership stays alive), and nothing is committed; partitions
assigned while PostgreSQL is down stay paused until their stored offsets can be read.
``stop()`` (SIGTERM/SIGINT in the CLI) lets the current batch finish before leaving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._schema import SchemaError
from otelcost.rollup._store import RollupStore, StoreUnavailableError
from otelcost.stream._consume import (
    DeadLetter,
    DeadLetterError,
    DeadLetterQueue,
    client_configs,
    consumer_lag,
)
from otelcost.stream._kafka import DEFAULT_TOPIC, import_confluent

__all__ = ["DEFAULT_ROLLUP_GROUP", "Rollup"]

logger = logging.getLogger("otelcost.rollup")

#: The consumer group of ``otelcost rollup``.
DEFAULT_ROLLUP_GROUP = "cost-rollup-v1"

_COUNTERS = (
    "consumed",
    "written",
    "duplicates",
    "dlq",
    "rows",
    "sanitized",
    "batches",
    "db_errors",
    "dlq_errors",
    "consumer_errors",
    "client_errors",
    "seek_errors",
    "kafka_commits",
    "kafka_commit_errors",
)


class _RetryLaterError(Exception):
    """The pending batch could not be committed now (PostgreSQL or the DLQ is down)."""


class Rollup:
    """Consume ``topic`` as group ``group`` into the rollup tables of ``dsn``.

    ``dsn`` is a libpq URL or ``key=value`` string (``PGPASSWORD``, ``PGPASSFILE`` and the
    other PG* variables apply); the schema must exist (``init_db`` / ``otelcost rollup
    --init-db``). ``kafka_config`` holds librdkafka settings for the consumer and the DLQ
    producer (consumer-only keys go to the consumer only); cooperative partition
    assignment is refused, since partitions are positioned at assignment. ``batch_size``
    messages or ``batch_timeout`` seconds make a batch. Failures are retried after
    ``backoff`` seconds, doubling up to ``max_backoff``; after ``stop()`` a failing batch
    is retried for at most ``shutdown_grace`` seconds, then left uncommitted for the next
    run. ``db_timeout`` bounds each connection attempt.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        dsn: str,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str = DEFAULT_ROLLUP_GROUP,
        dlq_topic: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        batch_size: int = 5_000,
        batch_timeout: float = 1.0,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        shutdown_grace: float = 30.0,
        db_timeout: float = 5.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        consumer_config, dlq_config = client_configs(
            bootstrap_servers,
            group,
            kafka_config,
            client_id="otelcost-rollup",
            error_cb=self._on_client_error,
        )
        if "cooperative" in str(consumer_config.get("partition.assignment.strategy", "")):
            raise ValueError(
                "otelcost rollup positions partitions when they are assigned: cooperative "
                "partition assignment is not supported"
            )
        consumer_config["on_commit"] = self._on_kafka_commit
        self._consumer_config = consumer_config
        reset = str(consumer_config.get("auto.offset.reset", "earliest")).lower()
        self._from_end = reset in ("latest", "largest", "end")
        self._bootstrap = bootstrap_servers
        self._store = RollupStore(dsn, group, topic, timeout=db_timeout)
        self._dlq = DeadLetterQueue(dlq_topic or f"{topic}.dlq", dlq_config)
        self._topic = topic
        self._group = group
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._shutdown_grace = shutdown_grace
        self._stop = threading.Event()
        self._consumer: Any = None
        self._pending: RollupBatch | None = None
        self._paused = False
        self._unpositioned: set[int] = set()  # assigned, waiting for their stored offsets
        self._position_at = 0.0
        self._position_delay = backoff
        self._to_resume: list[Any] = []
        self._joining = True
        self._last_activity = 0.0
        self._failing: str | None = None
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._lag = 0

    def __repr__(self) -> str:
        return (
            f"Rollup(bootstrap_servers={self._bootstrap!r}, store={self._store!r}, "
            f"topic={self._topic!r}, group={self._group!r})"
        )

    def stop(self) -> None:
        """Ask ``run`` to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def stats(self) -> dict[str, int]:
        """Counters of this consumer.

        ``consumed``: messages read; ``written``: records rolled up into committed rows
        (``rows``: row upserts); ``duplicates``: messages skipped because PostgreSQL had
        already counted them (replays, rebalance races); ``dlq``: dead letters committed;
        ``sanitized``: records whose text keys were cleaned to be storable; the
        ``*_errors`` count failures (each retried); ``lag``: messages behind on the
        assigned partitions after the last batch; ``paused``: 1 while a batch waits for
        PostgreSQL or the DLQ; ``unpositioned``: partitions waiting for their offsets.
        """
        return {
            **self._counters,
            "lag": self._lag,
            "paused": int(self._paused),
            "unpositioned": len(self._unpositioned),
        }

    # -- main loop --------------------------------------------------------------------

    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None) -> bool:
        """Consume until ``stop()``, ``max_records`` messages, or ``idle_timeout`` seconds
        without a message (joining, rebalancing and waiting for PostgreSQL do not count).

        Returns True when everything consumed was committed, False when a failing batch
        was left for the next run after ``shutdown_grace``. Raises ``SchemaError`` when the
        database has no (or an incompatible) rollup schema; nothing is committed then.
        """
        confluent = import_confluent()
        self._consumer = confluent.Consumer(self._consumer_config)
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._last_activity = time.monotonic()
        self._joining = True
        clean = False
        try:
            clean = self._loop(max_records, idle_timeout)
        finally:
            if not clean:
                self._pending = None  # not to be committed by the revoke in close()
            self._consumer.close()
            self._consumer = None
            self._dlq.close()
            self._store.close()
            logger.info(
                "otelcost rollup %s: %s",
                "stopped" if clean else "stopped with nothing pending committed",
                " ".join(f"{k}={v}" for k, v in self.stats().items()),
            )
        return clean

    def _loop(self, max_records: int | None, idle_timeout: float | None) -> bool:
        delay = self._backoff
        stop_deadline: float | None = None
        while True:
            if self._pending is not None:
                try:
                    self._complete(self._pending)
                except _RetryLaterError as exc:
                    self._note_failure(str(exc))
                    if self._stop.is_set():
                        stop_deadline = stop_deadline or time.monotonic() + self._shutdown_grace
                        if time.monotonic() >= stop_deadline:
                            logger.error(
                                "giving up on the pending batch at shutdown: %s; nothing of "
                                "it is committed and the next run reads it again",
                                exc,
                            )
                            return False
                    self._pause()
                    self._wait(delay)
                    delay = min(delay * 2, self._max_backoff)
                    continue
                self._pending = None
                self._last_activity = time.monotonic()
                delay = self._backoff
                self._resume()
                self._recovered()
            if self._stop.is_set():
                return True
            if self._unpositioned and time.monotonic() >= self._position_at:
                self._position()
            consumed = self._counters["consumed"]
            if max_records is not None and consumed >= max_records:
                return True
            if self._unpositioned:
                self._last_activity = time.monotonic()  # waiting for PostgreSQL is not idle
            if (
                idle_timeout is not None
                and not self._joining
                and time.monotonic() - self._last_activity > idle_timeout
            ):
                return True
            if self._to_resume:
                self._consumer.resume(self._to_resume)
                self._to_resume.clear()
            limit = self._batch_size
            if max_records is not None:
                limit = min(limit, max_records - consumed)
            self._pending = self._consume(limit)

    def _consume(self, limit: int) -> RollupBatch | None:
        messages = self._consumer.consume(num_messages=limit, timeout=self._batch_timeout)
        batch = RollupBatch(self._topic)
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._counters["consumer_errors"] += 1
                self._note_failure(f"consumer: {err}")
                continue
            if msg.partition() in self._unpositioned:
                continue  # fetched before its pause: read again once positioned
            batch.add(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers())
        if not batch.next_offsets:
            return None
        self._counters["consumed"] += len(batch)
        self._last_activity = time.monotonic()
        return batch

    def _complete(self, batch: RollupBatch) -> None:
        """Commit ``batch`` to PostgreSQL (with its dead letters acknowledged first)."""
        try:
            written = self._store.write(batch, self._send_dead_letters)
        except StoreUnavailableError as exc:
            self._counters["db_errors"] += 1
            raise _RetryLaterError(str(exc)) from exc
        except DeadLetterError as exc:
            self._counters["dlq_errors"] += 1
            raise _RetryLaterError(str(exc)) from exc
        self._counters["written"] += written.records
        self._counters["duplicates"] += written.duplicates
        self._counters["rows"] += written.rows
        self._counters["dlq"] += written.dead_letters
        self._counters["sanitized"] += written.sanitized
        self._counters["batches"] += 1
        self._commit_to_kafka(batch)
        self._lag = consumer_lag(self._consumer)

    def _send_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        self._dlq.send(self._topic, letters)
        self._dlq.flush(letters, self._max_backoff)

    def _commit_to_kafka(self, batch: RollupBatch) -> None:
        confluent = import_confluent()
        offsets = [
            confluent.TopicPartition(self._topic, partition, offset)
            for partition, offset in sorted(batch.next_offsets.items())
        ]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except confluent.KafkaException:
            self._counters["kafka_commit_errors"] += 1

    def _on_kafka_commit(self, err: Any, _partitions: Any) -> None:
        if err is None:
            self._counters["kafka_commits"] += 1
        else:
            self._counters["kafka_commit_errors"] += 1

    # -- positioning partitions at the offsets stored in PostgreSQL ----------------------

    def _start_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Each partition's stored offset, or the logical start for one never stored."""
        stored = self._store.offsets(partitions)
        confluent = import_confluent()
        start = confluent.OFFSET_END if self._from_end else confluent.OFFSET_BEGINNING
        return {p: stored.get(p, start) for p in partitions}

    def _position(self) -> None:
        """Seek the partitions assigned while PostgreSQL was down, then resume them."""
        partitions = sorted(self._unpositioned)
        try:
            offsets = self._start_offsets(partitions)
        except StoreUnavailableError as exc:
            self._counters["db_errors"] += 1
            self._note_failure(f"reading stored offsets: {exc}")
            self._position_at = time.monotonic() + self._position_delay
            self._position_delay = min(self._position_delay * 2, self._max_backoff)
            return
        confluent = import_confluent()
        for partition in partitions:
            tp = confluent.TopicPartition(self._topic, partition, offsets[partition])
            try:
                self._consumer.seek(tp)
            except confluent.KafkaException as exc:  # not fetching yet: try again shortly
                self._counters["seek_errors"] += 1
                self._note_failure(f"seek {self._topic}[{partition}]: {exc}")
                self._position_at = time.monotonic() + self._backoff
                return
        self._consumer.resume([confluent.TopicPartition(self._topic, p) for p in partitions])
        self._unpositioned.clear()
        self._position_delay = self._backoff
        logger.info(
            "positioned %s at the offsets stored in PostgreSQL",
            ", ".join(f"{self._topic}[{p}]@{offsets[p]}" for p in partitions),
        )
        self._recovered()

    # -- pausing while the batch cannot complete -----------------------------------------

    def _pause(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)
        if not self._paused:
            self._paused = True
            logger.warning(
                "paused consumption of %s until the pending batch is committed", self._topic
            )

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            ready = [
                tp for tp in self._consumer.assignment() if tp.partition not in self._unpositioned
            ]
            if ready:
                self._consumer.resume(ready)
            logger.info("resumed consumption of %s", self._topic)

    def _wait(self, seconds: float) -> None:
        """Keep the group membership alive for ``seconds`` without taking new work.

        Messages of partitions assigned meanwhile are dropped and their partitions paused
        and positioned again from PostgreSQL once the pending batch is committed.
        """
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not (
            self._stop.is_set() and self._pending is None
        ):
            messages = self._consumer.consume(
                num_messages=self._batch_size, timeout=min(left, self._batch_timeout)
            )
            stray = {msg.partition() for msg in messages if msg.error() is None}
            if stray:
                confluent = import_confluent()
                self._consumer.pause([confluent.TopicPartition(self._topic, p) for p in stray])
                self._unpositioned |= stray
                self._position_at = 0.0
            if self._pending is None:  # a revoke resolved it
                return

    # -- rebalance callbacks (run inside consume/close) -----------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._joining = False
        self._last_activity = time.monotonic()
        numbers = sorted(tp.partition for tp in partitions)
        try:
            offsets = self._start_offsets(numbers)
        except (StoreUnavailableError, SchemaError) as exc:
            # Assigned but held: the loop seeks them once PostgreSQL answers (a missing
            # schema is raised from there, outside this callback).
            self._counters["db_errors"] += 1
            self._note_failure(f"reading stored offsets: {exc}")
            consumer.assign(partitions)
            consumer.pause(partitions)
            self._unpositioned.update(numbers)
            self._position_at = 0.0
            logger.info("assigned %s, paused until PostgreSQL answers", _describe(partitions))
            return
        for tp in partitions:
            tp.offset = offsets[tp.partition]
        consumer.assign(partitions)
        logger.info(
            "assigned %s at the offsets stored in PostgreSQL",
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions),
        )
        # librdkafka keeps a partition paused across revoke and re-assignment: resume it
        # from the loop, once no batch is pending.
        self._to_resume.extend(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        logger.info("revoked %s", _describe(partitions))
        self._joining = True
        revoked = {tp.partition for tp in partitions}
        self._unpositioned -= revoked
        self._to_resume = [tp for tp in self._to_resume if tp.partition not in revoked]
        pending = self._pending
        if pending is None:
            return
        try:
            self._complete(pending)
        except (_RetryLaterError, SchemaError) as exc:
            logger.warning(
                "revoked with a pending batch that cannot be committed now (%s): the new "
                "owner reads it again from the offsets stored in PostgreSQL",
                exc,
            )
            pending.drop_partitions(revoked)
            if pending.next_offsets:
                return
        self._pending = None
        self._paused = False

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        logger.warning(
            "lost %s: uncommitted work there is read again by the new owner",
            _describe(partitions),
        )
        lost = {tp.partition for tp in partitions}
        self._unpositioned -= lost
        if self._pending is not None:
            self._pending.drop_partitions(lost)
            if not self._pending.next_offsets:
                self._pending = None
                self._paused = False

    def _on_client_error(self, err: Any) -> None:
        self._counters["client_errors"] += 1
        self._note_failure(f"Kafka client: {err}")

    # -- logging: one line per failure streak ---------------------------------------------

    def _note_failure(self, what: str) -> None:
        if self._failing is None:
            self._failing = what
            logger.warning("%s (retrying; further failures counted in stats())", what)

    def _recovered(self) -> None:
        if self._failing is not None:
            logger.info("recovered from: %s", self._failing)
            self._failing = None


def _describe(partitions: list[Any]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
