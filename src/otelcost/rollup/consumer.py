"""Rollup: consume the cost stream into per-minute rollups in PostgreSQL, exactly once.

The loop (``otelcost rollup`` runs one):

A StreamConsumer (``otelcost.stream.consumer``: the loop, pausing, rebalances, stop):

1. on partition assignment, each partition is positioned at the next offset stored in
   PostgreSQL for this consumer group (a partition never stored starts at the beginning,
   or at the end with ``auto.offset.reset=latest``): PostgreSQL, not Kafka, is the
   source of truth;
2. consume a batch; each message is validated exactly as ``otelcost enforce`` does, and
   invalid ones (or invalid records of schema-2 messages) go to ``<topic>.dlq`` (original
   bytes plus ``otelcost-error`` and ``otelcost-source`` headers);
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

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from otelcost.rollup._batch import RollupBatch
from otelcost.rollup._schema import SchemaError
from otelcost.rollup._store import RollupStore, StoreUnavailableError
from otelcost.stream._consume import DeadLetter, DeadLetterError
from otelcost.stream._kafka import import_confluent
from otelcost.stream.consumer import ConsumerOptions, RetryLaterError, StreamConsumer, describe

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["DEFAULT_ROLLUP_GROUP", "Rollup"]

#: The consumer group of ``otelcost rollup``.
DEFAULT_ROLLUP_GROUP = "cost-rollup-v1"


class Rollup(StreamConsumer[RollupBatch]):
    """Consume the cost stream into the rollup tables of ``dsn``.

    ``dsn`` is a libpq URL or ``key=value`` string (``PGPASSWORD``, ``PGPASSFILE`` and the
    other PG* variables apply); the schema must exist (``init_db`` / ``otelcost rollup
    --init-db``). ``db_timeout`` bounds each connection attempt. ``options`` are those of
    every StreamConsumer (``ConsumerOptions``: ``topic``, ``group`` (default
    ``cost-rollup-v1``), ``dlq_topic``, ``kafka_config``, ``batch_size``,
    ``batch_timeout`` (default 1 s), ``backoff``, ``max_backoff``, ``shutdown_grace``,
    ``connect_timeout``; see ``StreamConsumer``); cooperative partition assignment is
    refused, since partitions are positioned at assignment.
    """

    name: ClassVar[str] = "rollup"
    default_group: ClassVar[str] = DEFAULT_ROLLUP_GROUP
    default_batch_timeout: ClassVar[float] = 1.0
    counter_names: ClassVar[tuple[str, ...]] = (
        "written",
        "duplicates",
        "rows",
        "sanitized",
        "db_errors",
        "seek_errors",
        "kafka_commits",
        "kafka_commit_errors",
    )
    replay_note: ClassVar[str] = (
        "the new owner reads it again from the offsets stored in PostgreSQL"
    )

    def __init__(
        self,
        bootstrap_servers: str,
        dsn: str,
        *,
        db_timeout: float = 5.0,
        **options: Unpack[ConsumerOptions],
    ) -> None:
        super().__init__(bootstrap_servers, **options)
        if "cooperative" in str(self._consumer_config.get("partition.assignment.strategy", "")):
            raise ValueError(
                "otelcost rollup positions partitions when they are assigned: cooperative "
                "partition assignment is not supported"
            )
        self._consumer_config["on_commit"] = self._on_kafka_commit
        reset = str(self._consumer_config.get("auto.offset.reset", "earliest")).lower()
        self._from_end = reset in ("latest", "largest", "end")
        self._store = RollupStore(dsn, self._group, self._topic, timeout=db_timeout)
        self._unpositioned: set[int] = set()  # assigned, waiting for their stored offsets
        self._position_at = 0.0
        self._position_delay = self._backoff

    def __repr__(self) -> str:
        return (
            f"Rollup(bootstrap_servers={self._bootstrap!r}, store={self._store!r}, "
            f"topic={self._topic!r}, group={self._group!r})"
        )

    def stats(self) -> dict[str, int]:
        """Counters of this consumer.

        ``consumed``: messages read; ``written``: records rolled up into committed rows
        (``rows``: row upserts); ``duplicates``: records skipped because PostgreSQL had
        already counted them (replays, rebalance races); ``dlq``: dead letters committed;
        ``sanitized``: records whose text keys were cleaned to be storable; the
        ``*_errors`` count failures (each retried); ``lag``: messages behind on the
        assigned partitions after the last batch; ``paused``: 1 while a batch waits for
        PostgreSQL or the DLQ; ``unpositioned``: partitions waiting for their offsets.
        """
        return {**super().stats(), "unpositioned": len(self._unpositioned)}

    def run(self, *, max_records: int | None = None, idle_timeout: float | None = None) -> bool:
        """``StreamConsumer.run``; also raises ``SchemaError`` when the database has no (or an
        incompatible) rollup schema; nothing is committed then."""
        return super().run(max_records=max_records, idle_timeout=idle_timeout)

    # -- the batch step ----------------------------------------------------------------------

    def _new_batch(self) -> RollupBatch:
        return RollupBatch(self._topic)

    def _complete(self, batch: RollupBatch) -> None:
        """Commit ``batch`` to PostgreSQL (with its dead letters acknowledged first)."""
        try:
            written = self._store.write(batch, self._send_dead_letters)
        except StoreUnavailableError as exc:
            self._counters["db_errors"] += 1
            raise RetryLaterError(str(exc)) from exc
        except DeadLetterError as exc:
            self._counters["dlq_errors"] += 1
            raise RetryLaterError(str(exc)) from exc
        self._counters["written"] += written.records
        self._counters["duplicates"] += written.duplicates
        self._counters["rows"] += written.rows
        self._counters["dlq"] += written.dead_letters
        self._counters["sanitized"] += written.sanitized
        self._counters["batches"] += 1
        self._commit_to_kafka(batch)
        self._update_lag()

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

    def _close_store(self) -> None:
        self._store.close()

    def _revoke_errors(self) -> tuple[type[Exception], ...]:
        return (RetryLaterError, SchemaError)

    # -- positioning partitions at the offsets stored in PostgreSQL ----------------------

    def _held(self) -> set[int]:
        return self._unpositioned

    def _forget(self, partitions: set[int]) -> None:
        self._unpositioned -= partitions

    def _before_consume(self) -> None:
        if self._unpositioned and time.monotonic() >= self._position_at:
            self._position()

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
        self._log.info(
            "positioned %s at the offsets stored in PostgreSQL",
            ", ".join(f"{self._topic}[{p}]@{offsets[p]}" for p in partitions),
        )
        self._recovered()

    def _stray(self, first_offsets: dict[int, int]) -> None:
        """Messages of partitions assigned while a batch was pending are dropped; their
        partitions are paused and positioned again from PostgreSQL afterwards."""
        confluent = import_confluent()
        self._consumer.pause([confluent.TopicPartition(self._topic, p) for p in first_offsets])
        self._unpositioned |= set(first_offsets)
        self._position_at = 0.0

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
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
            self._log.info("assigned %s, paused until PostgreSQL answers", describe(partitions))
            return
        for tp in partitions:
            tp.offset = offsets[tp.partition]
        consumer.assign(partitions)
        self._log.info(
            "assigned %s at the offsets stored in PostgreSQL",
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions),
        )
        # librdkafka keeps a partition paused across revoke and re-assignment: resume it
        # from the loop, once no batch is pending.
        self._to_resume.extend(partitions)
