"""Kafka broker faults under a live instrumented app: down at start, stopped and restarted."""

from __future__ import annotations

import time
import uuid

import pytest
import redis
from _stack import Ledger, Stack, assert_unharmed, check_down_at_start

from _servers import KafkaBroker, RedisServer


@pytest.mark.slow
def test_broker_down_at_start(kafka_broker: KafkaBroker, stack_args: dict[str, str]) -> None:
    # In-memory storage: the broker comes back empty, and the topic is auto-created.
    check_down_at_start(
        kafka_broker,
        stack_args,
        lambda stack: stack.kafka is not None and stack.kafka.stats()["delivered"] == 0,
    )


@pytest.mark.slow
def test_broker_stopped_mid_run_and_restarted(
    kafka_broker_persistent: KafkaBroker, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    broker = kafka_broker_persistent
    topic = broker.create_topic(f"faults-restart-{uuid.uuid4().hex[:8]}", partitions=3)
    args = {"redis_url": redis_server.url, "bootstrap": broker.bootstrap, "topic": topic}
    stack = Stack(**args)
    try:
        baseline = stack.drive(1.5)
        # Nothing in flight at the crash: Tansu acknowledges, without storing it, an
        # idempotent batch that was in flight when it was killed and is retried after
        # its restart (a broker bug; see docs/reliability.md). The app keeps going.
        stack.flush()
        with stack.driving() as faulted:
            broker.stop()  # SIGKILL: a crash
            time.sleep(2.0)
            broker.start()
            time.sleep(1.0)
        stack.flush(timeout=120)
        ledger = Ledger.read(stack, **args)
    finally:
        stack.close()
    assert_unharmed(baseline, faulted, ledger)
