"""Enforcer: consume the cost stream into Redis budgets, at least once and never twice.

The loop (``otelcost enforce`` runs one):

1. consume a batch; each message is validated with ``CostRecord.from_json``;
2. invalid messages are produced to ``<topic>.dlq`` with their original key, value and
   headers plus ``otelcost-error`` (why) and ``otelcost-source`` (topic/partition/offset);
3. valid spend is summed per (partition, service) and applied through the budget store
   with a (partition, offset) fence, so a replayed batch is never counted twice;
4. the DLQ is flushed, then the next offsets are committed synchronously.

Nothing is committed before its records are applied or dead-lettered. When the store
(Redis) or the DLQ fails, the partitions are paused, the batch is kept and retried with
exponential backoff, and consumption resumes once it went through: nothing is lost and
the group membership stays alive. On revoke the pending batch is completed and committed
if possible, else dropped for the new owner to replay. ``stop()`` (SIGTERM/SIGINT in the
CLI) lets the current batch finish and commit before the consumer leaves the group.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import redis

from otelcost.stream._consume import DeadLetterError, DeadLetterQueue, client_configs, consumer_lag
from otelcost.stream._enforce_batch import Batch, BudgetApplier, apply_group
from otelcost.stream._kafka import DEFAULT_GROUP, DEFAULT_TOPIC, import_confluent

__all__ = ["DEFAULT_GROUP", "Enforcer"]

logger = logging.getLogger("otelcost.enforce")

_STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)


class _RetryLater(Exception):
    """The pending batch could not be completed now (store or DLQ down)."""


class Enforcer:
    """Consume ``topic`` as group ``group`` and apply the spend through ``store``.

    ``kafka_config`` holds librdkafka settings for both the consumer and the DLQ producer
    (SASL, SSL...); consumer-only keys (``session.timeout.ms``, ``group.*``, ...) go to
    the consumer only. ``batch_size`` messages or ``batch_timeout`` seconds make a batch.
    Store or DLQ failures are retried after ``backoff`` seconds, doubling up to
    ``max_backoff``; after ``stop()`` a failing batch is retried for at most
    ``shutdown_grace`` seconds, then left uncommitted for the next run to replay.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        store: BudgetApplier,
        *,
        topic: str = DEFAULT_TOPIC,
        group: str = DEFAULT_GROUP,
        dlq_topic: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        batch_size: int = 5_000,
        batch_timeout: float = 0.5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        shutdown_grace: float = 30.0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._consumer_config, dlq_config = client_configs(
            bootstrap_servers,
            group,
            kafka_config,
            client_id="otelcost-enforce",
            error_cb=self._on_client_error,
        )
        self._bootstrap = bootstrap_servers
        self._store = store
        self._topic = topic
        self._group = group
        self._dlq = DeadLetterQueue(dlq_topic or f"{topic}.dlq", dlq_config)
        self._batch_size = batch_size
        self._batch_timeout = batch_timeout
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._shutdown_grace = shutdown_grace
        self._stop = threading.Event()
        self._consumer: Any = None
        self._pending: Batch | None = None
        self._paused = False
        self._to_resume: list[Any] = []
        self._joining = True  # from start or a revoke until the next assignment
        self._last_activity = 0.0
        self._failing: str | None = None
        self._counters = dict.fromkeys(
            (
                "consumed",
                "applied",
                "duplicates",
                "unbudgeted",
                "dlq",
                "batches",
                "commits",
                "commit_errors",
                "store_errors",
                "dlq_errors",
                "consumer_errors",
                "client_errors",
                "throttled",
            ),
            0,
        )
        self._lag = 0

    def __repr__(self) -> str:
        return (
            f"Enforcer(bootstrap_servers={self._bootstrap!r}, topic={self._topic!r}, "
            f"group={self._group!r})"
        )

    def stop(self) -> None:
        """Ask ``run`` to finish the current batch, commit and return (signal-safe)."""
        self._stop.set()

    def stats(self) -> dict[str, int]:
        """consumed, applied, duplicates, dlq, lag and error counters of this enforcer.

        ``applied`` counts records whose spend was added (``unbudgeted``: of which no
        budget covers the service, so the store kept nothing); ``duplicates`` those a
        fence showed were already applied (replays); ``throttled`` the applies that left a
        service throttled; ``lag`` is the sum over the assigned partitions of high
        watermark minus position, after the last batch.
        """
        return {**self._counters, "lag": self._lag, "paused": int(self._paused)}

    # -- main loop --------------------------------------------------------------------

    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None) -> bool:
        """Consume until ``stop()``, ``max_records`` messages, or ``idle_timeout`` seconds
        without a message (time spent joining the group or rebalancing does not count).
        Returns True when everything consumed was committed (False: a failing batch was
        left for the next run to replay after ``shutdown_grace``).
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
        clean = True
        try:
            clean = self._loop(max_records, idle_timeout)
        finally:
            if not clean:
                self._pending = None  # do not commit it from the revoke in close()
            self._consumer.close()
            self._consumer = None
            self._dlq.close()
            logger.info(
                "otelcost enforce %s: %s",
                "stopped" if clean else "stopped with an uncommitted batch",
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
                except _RetryLater as exc:
                    self._note_failure(str(exc))
                    if self._stop.is_set():
                        stop_deadline = stop_deadline or time.monotonic() + self._shutdown_grace
                        if time.monotonic() >= stop_deadline:
                            logger.error(
                                "giving up on the pending batch at shutdown: %s; it is not "
                                "committed and will be replayed",
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
            consumed = self._counters["consumed"]
            if max_records is not None and consumed >= max_records:
                return True
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

    def _consume(self, limit: int) -> Batch | None:
        messages = self._consumer.consume(num_messages=limit, timeout=self._batch_timeout)
        batch = Batch(self._topic)
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._counters["consumer_errors"] += 1
                self._note_failure(f"consumer: {err}")
                continue
            batch.add(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers())
        if not batch.next_offsets:
            return None
        self._counters["consumed"] += len(batch)
        self._last_activity = time.monotonic()
        return batch

    def _complete(self, batch: Batch) -> None:
        """Dead-letter, apply and commit ``batch``; _RetryLater keeps it pending."""
        self._dead_letter(batch)
        self._apply(batch)
        self._flush_dead_letters(batch)
        self._commit(batch)
        self._counters["batches"] += 1
        self._lag = consumer_lag(self._consumer)

    # -- steps --------------------------------------------------------------------------

    def _apply(self, batch: Batch) -> None:
        for (partition, service), group in batch.groups.items():
            if group.applied:
                continue
            try:
                outcome = apply_group(self._store, batch.fence_producer(partition), service, group)
            except _STORE_ERRORS as exc:
                self._counters["store_errors"] += 1
                raise _RetryLater(f"budget store: {type(exc).__name__}: {exc}") from exc
            group.applied = True
            self._counters["applied"] += outcome.records
            self._counters["duplicates"] += outcome.duplicates
            if not outcome.status.budgets:
                self._counters["unbudgeted"] += outcome.records
            if outcome.status.throttled:
                self._counters["throttled"] += 1

    def _dead_letter(self, batch: Batch) -> None:
        try:
            self._dlq.send(batch.topic, batch.dead)
        except DeadLetterError as exc:
            self._counters["dlq_errors"] += 1
            raise _RetryLater(str(exc)) from exc

    def _flush_dead_letters(self, batch: Batch) -> None:
        if not batch.dead:
            return
        try:
            self._dlq.flush(batch.dead, self._max_backoff)
        except DeadLetterError as exc:
            self._counters["dlq_errors"] += 1
            raise _RetryLater(str(exc)) from exc
        self._counters["dlq"] += len(batch.dead)
        batch.dead.clear()

    def _commit(self, batch: Batch) -> None:
        confluent = import_confluent()
        offsets = [
            confluent.TopicPartition(batch.topic, partition, offset)
            for partition, offset in sorted(batch.next_offsets.items())
        ]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except confluent.KafkaException as exc:
            # Already applied: a replay of these offsets is a fence duplicate, so a lost
            # commit costs a re-read, never a double count.
            self._counters["commit_errors"] += 1
            self._note_failure(f"commit: {exc}")
            return
        self._counters["commits"] += 1

    # -- pausing while the batch cannot complete -----------------------------------------

    def _pause(self) -> None:
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(assignment)
        if not self._paused:
            self._paused = True
            logger.warning(
                "paused consumption of %s until the pending batch goes through", self._topic
            )

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.resume(assignment)
            logger.info("resumed consumption of %s", self._topic)

    def _wait(self, seconds: float) -> None:
        """Keep the group membership alive for ``seconds`` without taking new work.

        Messages of partitions assigned meanwhile (not paused yet) are rewound and paused
        so that they are consumed, in order, after the pending batch.
        """
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
                confluent = import_confluent()
                for partition, offset in first.items():
                    tp = confluent.TopicPartition(self._topic, partition, offset)
                    self._consumer.seek(tp)
                    self._consumer.pause([tp])
            if self._pending is None:  # a revoke resolved it
                return

    # -- rebalance callbacks (run inside consume/close) -----------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._joining = False
        self._last_activity = time.monotonic()
        logger.info("assigned %s", _describe(partitions))
        # librdkafka keeps a partition paused across revoke and re-assignment: resume it
        # once the assignment is in effect (after this callback), unless work is pending.
        self._to_resume.extend(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        logger.info("revoked %s", _describe(partitions))
        self._joining = True
        revoked = {tp.partition for tp in partitions}
        self._to_resume = [tp for tp in self._to_resume if tp.partition not in revoked]
        pending = self._pending
        if pending is None:
            return
        try:
            self._complete(pending)
        except _RetryLater as exc:
            logger.warning(
                "revoked with a pending batch that cannot be applied now (%s): the new owner "
                "replays it from the last commit",
                exc,
            )
            pending.drop_partitions(revoked)
            if pending.next_offsets:
                return
        self._pending = None
        self._paused = False

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        logger.warning(
            "lost %s: uncommitted work there is replayed by the new owner", _describe(partitions)
        )
        if self._pending is not None:
            self._pending.drop_partitions({tp.partition for tp in partitions})
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
