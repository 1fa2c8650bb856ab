"""Every runnable example is run: real servers on loopback, real requests, priced records."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from otelcost.record import CostRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0


@dataclass
class Running:
    """An example process and the stderr lines read so far."""

    proc: subprocess.Popen[str]
    stderr_lines: list[str] = field(default_factory=list)
    _partial: bytes = b""  # read from the pipe, not yet ended by a newline

    def wait_for_line(self, needle: str, *, count: int = 1) -> list[str]:
        """Read stderr until ``count`` lines contain ``needle``; return those lines.

        Reads the pipe's descriptor directly: a buffered readline() after select() would
        pull every line that has arrived into the file object's buffer and return only the
        first, and select() would then wait for bytes that were already read.
        """
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                found = [line for line in self.stderr_lines if needle in line]
                if len(found) >= count:
                    return found
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    _, rest = self.proc.communicate()
                    pytest.fail(f"no {needle!r} on stderr:\n{self._read()}{rest}")
                if sel.select(timeout=0.5):
                    *lines, self._partial = (self._partial + os.read(fd, 65536)).split(b"\n")
                    self.stderr_lines.extend(line.decode() + "\n" for line in lines)

    def _read(self) -> str:
        """The stderr read so far, a last unfinished line included."""
        return "".join(self.stderr_lines) + self._partial.decode(errors="replace")

    def port(self) -> int:
        (line,) = self.wait_for_line("listening on http://")
        return int(line.rsplit(":", 1)[1])

    def finish(self, timeout: float = 60.0) -> tuple[list[CostRecord], str]:
        """Wait for the process to exit by itself; its records and all of its stderr."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            pytest.fail(f"example did not exit by itself:\n{self._read()}{err}")
        err = self._read() + err
        assert self.proc.returncode == 0, err
        return records_in(out), err


def records_in(stdout: str) -> list[CostRecord]:
    """ConsoleCostExporter's JSON lines, validated as schema v1."""
    return [CostRecord.from_json(line) for line in stdout.splitlines() if line.startswith("{")]


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELCOST_"))}
    # No trace exporter is configured by the examples; keep the SDK from picking one up.
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def run(args: list[str], **env: str) -> Running:
        proc = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=clean_env(tmp_path, **env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return Running(proc)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def request(url: str, data: bytes | None = None) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def python_example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), "--port", "0", *args]


def test_plain_wsgi_app(start: Any) -> None:
    app = start(python_example("wsgi_app.py", "--requests", "4"))
    base = f"http://127.0.0.1:{app.port()}"
    assert request(f"{base}/users/42")[0] == 200
    assert request(f"{base}/users/7")[0] == 200
    assert request(f"{base}/orders", data=b"{}")[0] == 201
    assert request(f"{base}/health")[0] == 200
    records, err = app.finish()
    by_op: dict[str, list[CostRecord]] = {}
    for r in records:
        by_op.setdefault(r.operation, []).append(r)
    assert sorted(by_op) == ["GET /health", "GET /users/*", "POST /orders"]  # normalized path
    assert len(by_op["GET /users/*"]) == 2
    for r in by_op["GET /users/*"]:
        assert r.service == "shop" and r.error is None
        # 4e-7 + 2e-6 per ms, in nano-USD (one nano of float rounding either way)
        assert abs(r.cost_nanos - (400 + 2000 * r.duration_ms)) <= 1
        assert r.pricing_version == "examples-2026-11-27.1"
    assert by_op["GET /health"][0].cost_amount == 0.0  # "*:GET /health": null is free
    # The example configures no logging: install() said what it did on stderr, once.
    (said,) = [line for line in err.splitlines() if line.startswith("otelcost: ")]
    assert said.startswith("otelcost: pricing table 'examples-2026-11-27.1' from ")
    assert said.endswith("cost exporters: ConsoleCostExporter")


def test_lines_that_arrive_together_are_all_seen(start: Any) -> None:
    # One write, so both lines reach the pipe before the test reads; then it waits to be killed.
    both = "import sys, time; sys.stderr.write('first\\nlistening on http://127.0.0.1:1234\\n')"
    app = start([sys.executable, "-c", both + "; sys.stderr.flush(); time.sleep(60)"])
    assert app.port() == 1234


def test_flask_app_prices_by_route(start: Any) -> None:
    app = start(python_example("flask_app.py", "--requests", "3"))
    base = f"http://127.0.0.1:{app.port()}"
    for user in (1, 2):
        status, body, _ = request(f"{base}/users/{user}")
        assert (status, body) == (200, {"user": user})
    assert request(f"{base}/orders", data=b"")[0] == 201
    records, _ = app.finish()
    assert sorted(r.operation for r in records) == [
        "GET /users/<int:user_id>",
        "GET /users/<int:user_id>",
        "POST /orders",
    ]
    assert all(r.error is None and r.cost_amount > 0 for r in records)


def test_llm_gateway_prices_tokens(start: Any) -> None:
    app = start(python_example("llm_gateway.py", "--requests", "2"))
    url = f"http://127.0.0.1:{app.port()}/v1/chat/completions"
    prompts = {"small-1": "what does this cost", "large-2": "hello"}
    for model, prompt in prompts.items():
        status, body, _ = request(url, json.dumps({"model": model, "prompt": prompt}).encode())
        assert status == 200 and body["choices"][0]["text"]
    records, _ = app.finish()
    chats = [r for r in records if r.operation.startswith("chat ")]
    assert len(chats) == 2
    for r in chats:
        tokens_in = r.usage["gen_ai.usage.input_tokens"]
        tokens_out = r.usage["gen_ai.usage.output_tokens"]
        assert tokens_in > 0 and tokens_out > 0
        # Priced per token only: 3e-6 per input and 1.5e-5 per output token, any duration.
        assert r.cost_nanos == round(3000 * tokens_in + 15000 * tokens_out)
    servers = [r for r in records if r.operation == "POST /v1/chat/completions"]
    assert len(servers) == 2 and all(r.service == "llm-gateway" for r in servers)


@pytest.mark.slow
def test_fastapi_app_throttles_with_the_guard(start: Any) -> None:
    total = 200
    app = start(python_example("fastapi_app.py", "--budget", "0.00001", "--requests", str(total)))
    base = f"http://127.0.0.1:{app.port()}"
    statuses: list[int] = []
    throttled: tuple[int, dict[str, Any], dict[str, str]] | None = None
    # Every request costs about a third of the budget; the guard refuses about a second
    # after it is spent (the export schedule, flush_interval and max_staleness).
    while len(statuses) < total - 1 and throttled is None:
        status, body, headers = request(f"{base}/users/{len(statuses)}")
        statuses.append(status)
        if status == 429:
            throttled = (status, body, headers)
        else:
            time.sleep(0.02)  # 200 requests span 4 s or more: several flushes and flag reads
    assert throttled is not None, f"never throttled: {statuses}"
    _, body, headers = throttled
    assert body["error"] == "budget_exceeded" and body["service"] == "shop"
    assert int(headers["retry-after"]) > 0
    assert statuses[0] == 200  # the budget starts unspent
    assert request(f"{base}/health")[0] == 200  # exempt while throttled
    while len(statuses) + 1 < total:
        statuses.append(request(f"{base}/users/1")[0])
    records, _ = app.finish()
    assert len(records) == total  # every request was priced, throttled ones too
    assert {r.service for r in records} == {"shop"}


@pytest.mark.slow
def test_gunicorn_post_fork_prices_in_the_workers(start: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gunicorn = [
        str(BIN / "gunicorn"),
        "-c",
        str(EXAMPLES / "gunicorn_conf.py"),
        "--chdir",
        str(EXAMPLES),
        "wsgi_app:application",
    ]
    server = start(gunicorn, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2")
    installed = server.wait_for_line("otelcost installed in worker", count=2)
    worker_pids = {int(line.rsplit(" ", 1)[1]) for line in installed}
    assert len(worker_pids) == 2 and server.proc.pid not in worker_pids
    for user in range(6):
        assert request(f"http://127.0.0.1:{port}/users/{user}")[0] == 200
    server.proc.send_signal(signal.SIGTERM)  # graceful: workers flush in worker_exit
    records, err = server.finish()
    assert len(records) == 6, err
    assert {r.operation for r in records} == {"GET /users/*"}
    assert len({r.trace_id for r in records}) == 6


def test_checkout_app_prices_each_call_by_what_it_is(
    start: Any, redis_server: Any, postgres_dsn: str
) -> None:
    app = start(
        python_example(
            "checkout_app.py",
            "--requests",
            "2",
            "--redis-url",
            redis_server.url,
            "--postgres-dsn",
            postgres_dsn,
        )
    )
    base = f"http://127.0.0.1:{app.port()}"
    for _ in range(2):
        status, body, _ = request(f"{base}/checkout/42", data=b"")
        assert (status, body) == (201, {"cart": "42", "total": 19.99, "payment": "succeeded"})
    records, _ = app.finish()
    by_op: dict[str, list[CostRecord]] = {}
    for r in records:
        by_op.setdefault(r.operation, []).append(r)
    (outbound,) = [op for op in by_op if op.endswith("/v1/charges")]
    assert re.fullmatch(r"POST 127\.0\.0\.1:\d+/v1/charges", outbound)  # the downstream
    assert sorted(by_op) == sorted(
        ["POST /checkout/<cart_id>", "redis GET", "postgresql INSERT orders", outbound]
    )
    assert all(len(rs) == 2 and r.error is None for rs in by_op.values() for r in rs)
    # Each call pays the price of the key that names it (per request, in nano-USD).
    assert {
        op: rs[0].cost_nanos for op, rs in by_op.items() if op != "POST /checkout/<cart_id>"
    } == {
        "redis GET": 100,
        "postgresql INSERT orders": 1000,
        outbound: 30000,
    }
