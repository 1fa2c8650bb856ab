"""Security review, as tests: secrets never shown, TLS/SASL settings reach the clients, the
pricing fetch stays bounded, the Lua script and the DLQ take hostile data, nothing is eval'd.

Complements tests/pricing/test_pricing_sources.py (HTTP size cap, timeouts, redirect policy,
credentials), tests/exporters/test_kafka.py (the Kafka exporter's own secrets),
tests/test_redis_client.py (URL redaction) and tests/budget/test_redis_store.py (the
script's argument checks).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import otelcost
from _records import cost_record
from _servers import KafkaBroker, RedisServer, free_port
from otelcost import _redis, reconcile
from otelcost.budget import Budget, BudgetGuard, RedisBudgetStore, _keys
from otelcost.cli import enforce as enforce_cli
from otelcost.errors import PricingError
from otelcost.exporters import RedisBudgetExporter
from otelcost.exporters.kafka import KafkaCostExporter, kafka_exporter_from_env
from otelcost.pricing import HttpPricingSource
from otelcost.stream._enforce_batch import Batch
from otelcost.stream.consumer import BrokerUnreachableError
from otelcost.stream.enforce import Enforcer

SRC = Path(__file__).resolve().parents[1] / "src" / "otelcost"
SECRET = "s3cret-do-not-show"
RECORD = cost_record(trace_id="ab" * 16, span_id="cd" * 8, operation="GET /", cost_amount=0.25)
SASL_SSL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "cost-writer",
    "sasl.password": SECRET,
    "ssl.ca.location": "/etc/ssl/private-ca.pem",
    "ssl.endpoint.identification.algorithm": "https",
}


def _with_password(url: str) -> str:
    return url.replace("redis://", f"redis://:{SECRET}@", 1)


# -- credentials are never shown ------------------------------------------------------------------


def test_redis_password_stays_out_of_logs_reprs_and_stats(
    redis_server: RedisServer, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # A user whose password is not SECRET: every command fails with WRONGPASS. An
    # unreachable server gives the other kind of error.
    redis_client.acl_setuser(
        "cost-writer", enabled=True, passwords=["+another"], commands=["+@all"]
    )
    wrong = redis_server.url.replace("redis://", f"redis://cost-writer:{SECRET}@", 1)
    try:
        for url in (wrong, f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"):
            exporter = RedisBudgetExporter(url, [Budget("*", 1.0)], flush_interval=0.05)
            exporter.export([RECORD])
            assert not exporter.force_flush(300)
            guard = BudgetGuard(url, timeout=0.2)
            assert guard.is_throttled("svc") is False  # fails open
            shown = [repr(exporter), str(exporter.stats()), repr(exporter.store)]
            shown += [repr(exporter.store.client), repr(guard), str(vars(guard))]
            exporter.shutdown(100)
            assert exporter.stats()["flush_errors"] >= 1 and guard.errors == 1
            assert all(SECRET not in text for text in shown), shown
    finally:
        redis_client.acl_deluser("cost-writer")
    # otelcost's own client serves these plain URLs: the server's reply, then the refusal.
    assert "RedisReplyError: WRONGPASS" in caplog.text and "Connection refused" in caplog.text
    assert SECRET not in caplog.text


def test_enforcer_keeps_sasl_and_redis_secrets_to_itself(
    kafka_broker: KafkaBroker,
    kafka_topic: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = RedisBudgetStore(_with_password(redis_server.url), [Budget("*", 1.0)])
    enforcer = Enforcer(
        kafka_broker.bootstrap,
        store,
        topic=kafka_topic,
        group="security-test",
        connect_timeout=3.0,
        kafka_config={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "enforcer",
            "sasl.password": SECRET,
            "log_level": 7,  # librdkafka's own lines too
        },
    )
    # The broker speaks no SASL: the enforcer cannot connect, and says so without secrets.
    with pytest.raises(BrokerUnreachableError) as unreachable:
        enforcer.run(idle_timeout=1.0)
    assert SECRET not in str(unreachable.value)
    assert SECRET not in repr(enforcer) + str(enforcer.stats())
    assert SECRET not in caplog.text


def test_install_from_the_environment_shows_no_secret(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    properties = tmp_path / "client.properties"
    properties.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        f"sasl.username=w\nsasl.password={SECRET}\nmessage.timeout.ms=500\n"
    )
    budgets = tmp_path / "budgets.json"
    budgets.write_text(json.dumps({"budgets": [{"service": "*", "limit": 1}]}))
    monkeypatch.setenv("OTELCOST_REDIS_URL", f"redis://:{SECRET}@127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("OTELCOST_BUDGETS", str(budgets))
    monkeypatch.setenv("OTELCOST_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("OTELCOST_KAFKA_CONFIG", str(properties))
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    processor = otelcost.install({"*:*": {"per_request": 0.01}}, tracer_provider=provider)
    try:
        with provider.get_tracer("t").start_as_current_span("GET /"):
            pass
        processor.force_flush(1_000)
        shown = [repr(processor), str(processor.stats())]
        shown += [repr(e) + str(e.stats()) for e in processor.exporters]
    finally:
        processor.shutdown(1_000)
    assert all(SECRET not in text for text in shown)
    assert SECRET not in caplog.text


# -- TLS and SASL settings reach the clients ------------------------------------------------------


def test_rediss_urls_give_tls_connections_on_every_path() -> None:
    url = f"rediss://:{SECRET}@cache.internal:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    clients = {
        "connect": _redis.connect(url),
        "exporter": RedisBudgetExporter(url, [Budget("*", 1.0)]).store.client,
        "store": RedisBudgetStore(url).client,
        "guard": BudgetGuard(url)._read_flag.args[0],  # type: ignore[attr-defined]
    }
    for path, client in clients.items():
        pool = client.connection_pool
        assert pool.connection_class is redis.SSLConnection, path
        kwargs = pool.connection_kwargs
        assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"]) == ("required", "/ca.pem"), path
        assert (kwargs["password"], kwargs["db"]) == (SECRET, 2), path
    sentinel = _redis.connect(f"rediss+sentinel://:{SECRET}@s1:26379,s2:26379/primary/3")
    pool = sentinel.connection_pool
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert (pool.connection_kwargs["password"], pool.connection_kwargs["db"]) == (SECRET, 3)


def test_enforce_cli_builds_tls_redis_and_sasl_ssl_kafka(tmp_path: Path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text("\n".join(f"{k}={v}" for k, v in SASL_SSL.items()))
    parser = argparse.ArgumentParser()
    enforce_cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "enforce",
            "--bootstrap-servers",
            "kafka-1:9093",
            "--redis-url",
            "rediss://:pw@cache:6380/1",
            "--kafka-config",
            str(properties),
            "-X",
            "session.timeout.ms=6000",
        ]
    )
    enforcer = enforce_cli._build(args)
    assert enforcer._store.client.connection_pool.connection_class is redis.SSLConnection
    _assert_kafka_settings(enforcer._consumer_config)
    dlq_config = enforcer._dlq._config  # the dead-letter producer's
    _assert_kafka_settings(dlq_config)
    assert enforcer._consumer_config["session.timeout.ms"] == "6000"
    assert "session.timeout.ms" not in dlq_config  # consumer-only


def _assert_kafka_settings(config: dict[str, Any]) -> None:
    for key, value in SASL_SSL.items():
        assert config[key] == value, key


def test_kafka_exporter_passes_sasl_and_ssl_through(tmp_path: Path) -> None:
    by_keyword = KafkaCostExporter(
        "kafka-1:9093", **{k.replace(".", "_"): v for k, v in SASL_SSL.items()}
    )
    _assert_kafka_settings(by_keyword._config)
    properties = tmp_path / "client.properties"
    properties.write_text("# SASL over TLS\n" + "\n".join(f"{k}={v}" for k, v in SASL_SSL.items()))
    from_env = kafka_exporter_from_env(
        {"OTELCOST_KAFKA_BOOTSTRAP": "kafka-1:9093", "OTELCOST_KAFKA_CONFIG": str(properties)}
    )
    assert from_env is not None
    _assert_kafka_settings(from_env._config)
    for exporter in (by_keyword, from_env):
        assert exporter._config["acks"] == "all" and exporter._config["enable.idempotence"]
        assert SECRET not in repr(exporter)


def test_reconcile_gives_its_consumers_the_security_settings() -> None:
    shared = reconcile._shared({**SASL_SSL, "acks": "1", "linger.ms": 5})
    _assert_kafka_settings(shared)
    assert "acks" not in shared and "linger.ms" not in shared


# -- the pricing fetch ---------------------------------------------------------------------------


@pytest.fixture
def redirecting_server() -> Iterator[tuple[str, list[str]]]:
    """``/a`` and ``/b`` redirect to each other; ``/slow<n>`` waits 0.2 s, then goes on
    to ``/slow<n+1>``."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            if self.path.startswith("/slow"):
                time.sleep(0.2)
                target = f"/slow{int(self.path[5:]) + 1}"
            else:
                target = "/b" if self.path == "/a" else "/a"
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_a_redirect_loop_stops_at_the_first_repeat(
    redirecting_server: tuple[str, list[str]],
) -> None:
    # Regression: urllib's default allowed each URL 4 visits, 9 requests for this loop.
    base, seen = redirecting_server
    url = f"{base}/a".replace("http://", f"http://u:{SECRET}@")
    with pytest.raises(PricingError, match="redirect not followed") as caught:
        HttpPricingSource(url).fetch()
    assert seen == ["/a", "/b", "/a"]
    assert SECRET not in str(caught.value)


def test_a_redirect_chain_is_bounded_by_the_total_timeout(
    redirecting_server: tuple[str, list[str]],
) -> None:
    # Each hop is within the read timeout; the chain as a whole is not.
    base, seen = redirecting_server
    source = HttpPricingSource(f"{base}/slow0", read_timeout=1.0, total_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(PricingError, match="redirect after the total timeout"):
        source.fetch()
    assert len(seen) == 2 and time.monotonic() - started < 2.0


# -- hostile data into the Lua script and the DLQ ------------------------------------------------


@pytest.mark.parametrize(
    "service",
    [
        'x"},{"period":"evil',
        "a}:24h",
        "%s%d%%[^]*$\n\r\x00",
        "{svc}",
        "é" * 256,
    ],
)
def test_hostile_service_names_stay_in_their_own_keys(
    redis_client: redis.Redis, service: str
) -> None:
    store = RedisBudgetStore(redis_client, [Budget("*", 0.001)])
    status = store.apply(service, 2_000_000)  # over the limit: the flag is written
    assert status.throttled and status.budgets[0].spend_nanos == 2_000_000
    flag = redis_client.get(_keys.flag_key(service))
    assert flag is not None and json.loads(flag)["budgets"][0]["period"] == "24h"
    expected = {_keys.flag_key(service).encode(), _keys.budget_key(service, "24h").encode()}
    assert set(redis_client.keys("*")) == expected
    assert store.services() == [service]


@settings(max_examples=200, deadline=None)
@given(
    key=st.one_of(st.none(), st.binary(max_size=40)),
    value=st.one_of(st.none(), st.binary(max_size=200)),
    headers=st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=20)))),
)
def test_dead_letters_keep_the_original_bytes(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes | None]]
) -> None:
    batch = Batch("costs")
    batch.add(2, 41, key, value, headers)
    if batch.dead:
        (letter,) = batch.dead
        assert (letter.key, letter.value, letter.headers) == (key, value, headers)
        assert (letter.partition, letter.offset) == (2, 41) and letter.error
    else:
        assert batch.records == 1
    assert batch.next_offsets == {2: 42}


# -- nothing is ever eval'd ------------------------------------------------------------------------

_DYNAMIC_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
_UNSAFE_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill"}


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if isinstance(func, ast.Name) and name in _DYNAMIC_CALLS:
                found.append(f"{path.name}:{node.lineno}: {name}()")
            if name in {"load", "load_all"} and "yaml" in ast.unparse(func):
                found.append(f"{path.name}:{node.lineno}: yaml.{name}()")
            for keyword in node.keywords:
                if keyword.arg == "shell" and ast.unparse(keyword.value) != "False":
                    found.append(f"{path.name}:{node.lineno}: shell=")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [
                f"{path.name}:{node.lineno}: import {n}" for n in names if n in _UNSAFE_MODULES
            ]
    return found


def test_nothing_in_the_package_evaluates_code_or_unpickles() -> None:
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 30
    assert [v for path in sources for v in _violations(path)] == []
    # Lua's own dynamic evaluation is not used by the budget script either.
    for script in SRC.rglob("*.lua"):
        text = script.read_text(encoding="utf-8")
        assert "loadstring" not in text and "load(" not in text and "dofile" not in text


def test_the_scan_catches_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport subprocess\nimport yaml\n"
        "eval('1')\nsubprocess.run('ls', shell=True)\nyaml.load(s)\n"
    )
    assert len(_violations(bad)) == 4
