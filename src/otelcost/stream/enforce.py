"""Enforcer: consume the cost stream into Redis budgets, at least once and never twice.

A StreamConsumer (``stream.consumer``: the loop, pausing, rebalances, stop) whose batch
step is:

1. invalid messages (and invalid records of schema-2 messages) are produced to
   ``<topic>.dlq`` with their original bytes plus ``otelcost-error`` (why) and
   ``otelcost-source`` (topic/partition/offset);
2. valid spend is summed per (partition, service) and applied through the budget store
   with a (partition, offset) fence, so a replayed batch is never counted twice;
3. the DLQ is flushed, then the next offsets are committed synchronously.

Nothing is committed before its records are applied or dead-lettered. When the store
(Redis) or the DLQ fails, the batch is kept and retried (the base class pauses the
partitions meanwhile).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import redis

from otelcost.budget.store import BudgetStore
from otelcost.errors import RedisReplyError
from otelcost.stream._consume import DeadLetterError
from otelcost.stream._enforce_batch import Batch, apply_group
from otelcost.stream._kafka import DEFAULT_GROUP, import_confluent
from otelcost.stream.consumer import ConsumerOptions, RetryLaterError, StreamConsumer

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_GROUP", "Enforcer"]

_STORE_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, RedisReplyError, OSError)


class Enforcer(StreamConsumer[Batch]):
    """Consume the cost stream and apply the spend through ``store``.

    ``options`` are those of every StreamConsumer (``ConsumerOptions``: ``topic``,
    ``group`` (default ``cost-attribution-v1``), ``dlq_topic``, ``kafka_config``,
    ``batch_size``, ``batch_timeout`` (default 0.5 s), ``backoff``, ``max_backoff``,
    ``shutdown_grace``, ``connect_timeout``; see ``StreamConsumer``). A failing batch is
    left uncommitted for the next run to replay.
    """

    name: ClassVar[str] = "enforce"
    default_group: ClassVar[str] = DEFAULT_GROUP
    default_batch_timeout: ClassVar[float] = 0.5
    counter_names: ClassVar[tuple[str, ...]] = (
        "applied",
        "duplicates",
        "unbudgeted",
        "commits",
        "commit_errors",
        "store_errors",
        "throttled",
    )

    def __init__(
        self, bootstrap_servers: str, store: BudgetStore, **options: Unpack[ConsumerOptions]
    ) -> None:
        super().__init__(bootstrap_servers, **options)
        self._store = store

    def __repr__(self) -> str:
        return (
            f"Enforcer(bootstrap_servers={self._bootstrap!r}, topic={self._topic!r}, "
            f"group={self._group!r})"
        )

    def stats(self) -> dict[str, int]:
        """consumed (messages), applied (records), duplicates, dlq, lag and error counters.

        ``applied`` counts records whose spend was added (``unbudgeted``: of which no
        budget covers the service, so the store kept nothing); ``duplicates`` those a
        fence showed were already applied (replays); ``dlq`` the dead letters (messages,
        or records of schema-2 messages); ``throttled`` the applies that left a service
        throttled; ``lag`` is the sum over the assigned partitions of high watermark
        minus position, after the last batch.
        """
        return super().stats()

    def _new_batch(self) -> Batch:
        return Batch(self._topic)

    def _complete(self, batch: Batch) -> None:
        self._dead_letter(batch)
        self._apply(batch)
        self._flush_dead_letters(batch)
        self._commit(batch)
        self._counters["batches"] += 1
        self._update_lag()

    def _apply(self, batch: Batch) -> None:
        for (partition, service), group in batch.groups.items():
            if group.applied:
                continue
            try:
                outcome = apply_group(self._store, batch.fence_producer(partition), service, group)
            except _STORE_ERRORS as exc:
                self._counters["store_errors"] += 1
                raise RetryLaterError(f"budget store: {type(exc).__name__}: {exc}") from exc
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
            raise RetryLaterError(str(exc)) from exc

    def _flush_dead_letters(self, batch: Batch) -> None:
        if not batch.dead:
            return
        try:
            self._dlq.flush(batch.dead, self._max_backoff)
        except DeadLetterError as exc:
            self._counters["dlq_errors"] += 1
            raise RetryLaterError(str(exc)) from exc
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
