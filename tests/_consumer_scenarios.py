"""The scenarios the stream's two consumers (``otelcost enforce``, ``otelcost rollup``, both
StreamConsumer subclasses) share, written once.

Each test module of a consumer defines a ``consumer`` fixture returning its ``Consumer``
(how to build one, what it stores, how to read that back) and a ``Test...`` subclass of
``ConsumerScenarios``; pytest collects the scenarios there, so each runs once per
consumer, in that consumer's module. What only one consumer does (replays fenced by
Redis, PostgreSQL's offsets winning, the outages of their own stores) stays in its module.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from _kafka import (
    assert_dead_lettered,
    ends,
    invalid_messages,
    partly_bad_message,
    produce,
    produce_both_schemas,
    produce_raw,
    read_all,
    run_in_thread,
    run_until_idle,
    sigkill_twice,
    sigterm_midway,
    stop_all,
)
from _servers import KafkaBroker
from _wait import wait_for
from otelcost.record import CostRecord

__all__ = ["Consumer", "ConsumerScenarios"]


@dataclass
class Consumer:
    """One consumer under test, on the test's broker, topic and group."""

    command: str  # "enforce" or "rollup"
    done: str  # the stats counter of records stored: "applied" or "written"
    broker: KafkaBroker
    topic: str
    group: str
    argv: list[str]  # the command line on the same topic and group (its own --group)
    # Records to produce: ``records(count, start=0)``, several services.
    records: Callable[..., list[CostRecord]]
    # A consumer on the fixtures: ``make(**options)`` (batch_size, backoff, ...).
    make: Callable[..., Any]
    # Asserts that the store holds exactly ``records``, each counted once.
    assert_stored: Callable[[Sequence[CostRecord]], None]
    # Where ``group`` resumes, by partition: Kafka's commits (enforce) or PostgreSQL's rows.
    offsets: Callable[[str], dict[int, int]]
    # A measure of what is stored that grows with every batch, and its value for ``records``.
    progress: Callable[[], int]
    progress_of: Callable[[Sequence[CostRecord]], int]
    # Records in one service, several of them, for one schema-2 message.
    one_message: Callable[[], list[CostRecord]]
    # The records counted in the store, where the store counts them (rollup); else None.
    stored_records: Callable[[], int] | None = None
    # How many messages the mixed-schema scenario's 900 records make, where pinned.
    mixed_messages: int | None = None

    def assert_offsets_at_end(self, group: str | None = None) -> None:
        """``group`` (the test's by default) resumes after the last message on the topic."""
        on_broker = read_all(self.broker.bootstrap, self.topic)
        assert self.offsets(group or self.group) == ends(on_broker)

    def cli_group(self) -> str:
        return self.argv[self.argv.index("--group") + 1]


class ConsumerScenarios:
    """The shared scenarios. A consumer's test module subclasses this as ``Test...`` (pytest
    collects the inherited tests there) next to its ``consumer`` fixture."""

    @pytest.mark.slow
    def test_totals_exact_offsets_stored_and_a_rerun_reads_nothing(
        self, consumer: Consumer
    ) -> None:
        records = consumer.records(3000)
        produce(consumer.broker.bootstrap, consumer.topic, records)
        first = consumer.make(batch_size=400)
        assert first.run(max_records=3000, idle_timeout=30)
        stats = first.stats()
        assert (stats["consumed"], stats[consumer.done], stats["duplicates"], stats["dlq"]) == (
            3000,
            3000,
            0,
            0,
        )
        assert stats["batches"] >= 3000 // 400
        assert stats["lag"] == 0
        consumer.assert_stored(records)
        consumer.assert_offsets_at_end()

        again = consumer.make()
        assert again.run(idle_timeout=2)
        assert again.stats()["consumed"] == 0
        consumer.assert_stored(records)

    @pytest.mark.slow
    def test_schema_1_and_2_on_one_topic_and_a_bad_record_dead_lettered_alone(
        self, consumer: Consumer
    ) -> None:
        records = consumer.records(900)
        partly = partly_bad_message(consumer.one_message(), 2)
        messages = produce_both_schemas(consumer.broker.bootstrap, consumer.topic, records, partly)
        assert messages > 300 + 1 + 2  # schema 1: one message a record; schema 2: fewer
        if consumer.mixed_messages is not None:
            assert messages == consumer.mixed_messages

        reader = consumer.make(batch_size=100)
        assert reader.run(max_records=messages, idle_timeout=30)
        stats = reader.stats()
        assert (stats["consumed"], stats[consumer.done], stats["dlq"]) == (
            messages,
            900 + len(partly.good),
            1,
        )
        consumer.assert_stored([*records, *partly.good])

        (dead,) = read_all(consumer.broker.bootstrap, f"{consumer.topic}.dlq")
        headers = dict(dead.headers)
        assert (dead.key, dead.value) == (partly.key, partly.dead_value)
        assert headers["otelcost-record-index"] == b"2"
        assert headers["otelcost-schema"] == b"2"
        assert headers["otelcost-error"].startswith(b"records[2].timestamp:")

    @pytest.mark.slow
    def test_invalid_records_go_to_the_dlq_and_nothing_else_is_lost(
        self, consumer: Consumer
    ) -> None:
        records = consumer.records(600)
        invalid = invalid_messages(consumer.records(1, start=9000)[0])
        bootstrap = consumer.broker.bootstrap
        produce(bootstrap, consumer.topic, records[:300])
        produce_raw(bootstrap, consumer.topic, list(invalid.values()))
        produce(bootstrap, consumer.topic, records[300:])

        reader = consumer.make(batch_size=250)
        assert reader.run(max_records=606, idle_timeout=30)
        stats = reader.stats()
        assert (stats["consumed"], stats[consumer.done], stats["dlq"]) == (606, 600, 6)
        consumer.assert_stored(records)
        consumer.assert_offsets_at_end()
        assert_dead_lettered(bootstrap, consumer.topic, invalid)

    @pytest.mark.slow
    def test_a_second_consumer_joining_neither_loses_nor_double_counts(
        self, consumer: Consumer
    ) -> None:
        records = consumer.records(2000)
        produce(consumer.broker.bootstrap, consumer.topic, records)
        first = consumer.make(batch_size=20)
        second = consumer.make(batch_size=20)
        first_thread, first_outcome = run_in_thread(first, idle_timeout=20)
        second_thread, second_outcome = threading.Thread(), []
        try:
            wait_for(lambda: first.stats()[consumer.done] > 0, 60)
            second_thread, second_outcome = run_in_thread(second, idle_timeout=20)
            # Keep the stream flowing until the rebalance has handed the newcomer partitions:
            # on a loaded machine the first consumer could otherwise drain a fixed backlog alone.
            deadline = time.monotonic() + 120
            while second.stats()["consumed"] == 0 and time.monotonic() < deadline:
                more = consumer.records(500, start=len(records))
                produce(consumer.broker.bootstrap, consumer.topic, more)
                records += more
                time.sleep(0.2)
            first_thread.join(180)
            second_thread.join(180)
        finally:
            stop_all((first, first_thread), (second, second_thread))
        assert first_outcome == second_outcome == [True]
        a, b = first.stats(), second.stats()
        assert b["consumed"] > 0  # the rebalance really handed partitions over
        assert a[consumer.done] + b[consumer.done] == len(records)
        assert a["consumed"] + b["consumed"] == len(records) + a["duplicates"] + b["duplicates"]
        consumer.assert_stored(records)
        consumer.assert_offsets_at_end()

    # -- the command line, as a separate process ---------------------------------------------

    @pytest.mark.slow
    def test_sigkill_mid_batch_then_restart_counts_everything_once(
        self, consumer: Consumer, processes: list[subprocess.Popen[bytes]]
    ) -> None:
        records = consumer.records(30_000)
        produce(consumer.broker.bootstrap, consumer.topic, records)
        sigkill_twice(consumer.argv, processes, consumer.progress, consumer.progress_of(records))
        stats = run_until_idle(consumer.argv)
        assert stats["consumed"] == stats[consumer.done] + stats["duplicates"] + stats["dlq"]
        consumer.assert_stored(records)
        consumer.assert_offsets_at_end(consumer.cli_group())

    @pytest.mark.slow
    def test_sigterm_finishes_the_batch_commits_and_exits_0(
        self, consumer: Consumer, processes: list[subprocess.Popen[bytes]]
    ) -> None:
        records = consumer.records(30_000)
        produce(consumer.broker.bootstrap, consumer.topic, records)
        first, err = sigterm_midway(consumer.argv, processes, consumer.progress)
        assert 0 < first["consumed"] < len(records)
        assert first["consumed"] == first[consumer.done]
        if consumer.stored_records is not None:
            assert first["consumed"] == consumer.stored_records()
        assert f"otelcost {consumer.command} stopped: consumed=".encode() in err  # the summary
        # Everything stored was committed: the next run starts exactly where it stopped.
        stats = run_until_idle(consumer.argv)
        assert (stats["consumed"], stats["duplicates"]) == (len(records) - first["consumed"], 0)
        consumer.assert_stored(records)
