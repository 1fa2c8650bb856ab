"""End to end: requests/s of a real instrumented WSGI app, with and without otelcost.

The app is the one of examples/wsgi_app.py (JSON responses for ``/users/<id>``,
``/health``), served by the stdlib's wsgiref on loopback with HTTP/1.1 keep-alive and a
thread per connection, behind OpenTelemetry's WSGI middleware. Each configuration runs in
its own server process pinned to one CPU; the load generator (this process, pinned to
the other CPU) keeps ``CONNECTIONS`` keep-alive connections busy with raw-socket requests,
so the server's CPU, not the client, sets the pace. Configurations, all served at once
and measured in turns so machine load hits them alike:

- ``bare``: the app alone, no OpenTelemetry (context only);
- ``otel``: the baseline: WSGI middleware, TracerProvider, BatchSpanProcessor with a
  no-op SpanExporter — what an instrumented service already pays;
- ``otelcost``: the baseline plus ``otelcost.install()`` feeding the same span exporter,
  with the embedded exporters: InMemoryCostExporter, BudgetExporter on an
  InMemoryBudgetStore, MetricsCostExporter (collected every second);
- ``otelcost-all``: the same plus RedisBudgetExporter and KafkaCostExporter, on a private
  redis-server and Tansu broker (tests/_servers.py) pinned to the load generator's CPU.
  Left out, and said so, when those servers cannot be started.

Capacity, each server with the server CPU to itself: the load moves from server to
server in turns of ``TURN_SECONDS`` (30 ms), the order rotating every cycle, for
hundreds of cycles. This host's speed swings by ±10% from one 100 ms to the next, and
by 2x over hours; turns this short see the same host. Background threads run whenever
they are due, in any server's turn, so what is compared is each process's own CPU per
request (all its threads, from the process's CPU clock), less what the server does per
second rather than per request (its timers' work, measured under light load: at
capacity that work is spread over all its requests) over the other servers' turns:
requests/s lost at capacity = 1 - the baseline's CPU per request / a
configuration's, with a 95% bootstrap interval over blocks of cycles and an A/A control
(a second, identical baseline server); target <= 5% with every exporter on. The CPU is
also shown by thread (request threads, exporters' threads, librdkafka).
Each otelcost server is also driven at the same time as the baseline (the paired phase,
with its own A/A control): two processes sharing one CPU evict each other's data from
the CPU caches between requests, which costs otelcost (whose added cost is mostly such
misses) more than the baseline, so the paired figure is the view for hosts where
processes share cores, and larger. Then every server serves a fixed load, for latency:
half the baseline's capacity, measured anew before each cycle of 1 s rounds, the p99
judged on the requests that neither a stall of the host (seen by a sentinel process on
the server CPU) nor the server's own full collection disturbed, with the pooled p99 and
the full collections beside it; and three controls: a second baseline (A/A), the
baseline with otelcost's modules imported and unused, and the baseline spending as much
CPU per request as otelcost added (what that CPU alone does to the tail). At the end every
server reports what it priced: a configuration that dropped spans (to keep up) would be
flagged.

Run ``python -m bench.bench_e2e [--quick]``; it rewrites the ``e2e`` section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import importlib
import itertools
import json
import os
import random
import re
import selectors
import socket
import statistics
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import IO, Any, NamedTuple, TypeVar
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

from bench import _support
from bench._report import (
    Metric,
    Result,
    bench_parser,
    command,
    environment,
    finish,
    percentile,
    quartiles,
    table,
)

T = TypeVar("T")
R = TypeVar("R")

CONNECTIONS = 4
TURN_SECONDS = 0.03
# One server's share of a block of turns: responses, its CPU seconds, seconds in its turns.
Block = tuple[int, float, float]
PACED_CONNECTIONS = 8  # headroom: at half capacity about two requests are in flight
# The fixed-load phase: many short rounds, so that a drift of the host's speed meets every
# server alike, and the rate set anew before each cycle at half the baseline's capacity
# then (the better of two closed-loop runs of CALIBRATE_SECONDS): a rate set once, from
# the turns minutes before, loaded the servers near saturation when the host slowed.
FIXED_ROUND_SECONDS = 1.0
FIXED_CYCLES = 40  # of the fixed-load phase; --cycles for more on a quieter host
CALIBRATE_SECONDS = 0.15
# The sentinel (``watch``) sleeps SENTINEL_SLEEP over and over on the server CPU; a
# wake-up more than STALL_SECONDS late is a stall of the host: no server could run then.
# A server's own work delays it far less (the scheduler preempts for a task that slept).
SENTINEL_SLEEP = 0.002
STALL_SECONDS = 0.004
# A fixed-load round in which a server's CPU per request is this many times its median:
# the host ran slower then (design-decisions §1, "What sets the half-load tail").
SLOW_ROUND = 1.3
PRICING = {
    "version": "bench-e2e",
    "currency": "USD",
    "prices": {
        "shop:GET /users/*": {"per_ms": 2e-6, "per_request": 4e-7},
        "*:GET /health": None,
        "*:*": {"per_ms": 5e-7},
    },
}
REQUEST_THREAD = "request"  # the OS name of the server's connection threads
ENDED = "(ended threads)"
# The server's threads by OS name (15 bytes of the Python name), for the turns' breakdown;
# a block's connection threads have ended when it is read.
THREAD_GROUPS = {
    REQUEST_THREAD: "request threads",
    ENDED: "request threads",
    "OtelBatchSpanPr": "BatchSpanProcessor",  # OtelBatchSpanProcessor (older SDKs)
    "OtelBatchSpanRe": "BatchSpanProcessor",  # OtelBatchSpanRecordProcessor
    "OtelPeriodicExp": "the metrics SDK's reader",  # OtelPeriodicExportingMetricReader
    "otelcost-export": "otelcost's export worker",
    "otelcost-budget": "budget exporters' flusher and gauge poller",
    "librdkafka": "librdkafka",
}
IDLE_SECONDS = 6.0  # no load: what each server does per second rather than per request
# Light load (requests/s per server, all at once), for the same under load: per_second_work.
LIGHT_RATES = (4.0, 24.0)
LIGHT_SECONDS = 5.0
SETTLE_SECONDS = 6.0
TWIN = "otel-twin"  # a second baseline server: the A/A control of both phases
# The baseline with every module otelcost-all imports loaded and unused: the fixed-load
# phase's control for what those modules alone add to full collections (their objects).
IMPORTS = "otel-imports"
IMPORTED = (
    "otelcost.budget",
    "otelcost.exporters",
    "otelcost.exporters.kafka",
    "otelcost.budget.redis_store",
    "opentelemetry.sdk.metrics",
    "confluent_kafka",
)
# The baseline whose request threads also spend, per request, the CPU otelcost added per
# request in the turns (with every exporter where the brokers run; set once the turns are
# over): the fixed-load phase's control for what that much CPU alone, with no thread, queue
# or object of otelcost's, does to the tail at that load.
BURN = "otel-burn"
BURN_PATH = "/__burn/"  # GET /__burn/<ns>: sets the CPU ns the burn server spends per request
CONFIGS = ("bare", "otel", TWIN, "otelcost", "otelcost-all")
PAIRED = (TWIN, "otelcost", "otelcost-all")
# The twin too: what the p99 reads between two processes of the same code.
LATENCY_CONFIGS = ("otel", TWIN, IMPORTS, BURN, "otelcost", "otelcost-all")
LABELS = {
    TWIN: "a second baseline server (A/A control)",
    "bare": "app alone, no OpenTelemetry",
    "otel": "OpenTelemetry: middleware + BatchSpanProcessor (baseline)",
    IMPORTS: "the baseline with otelcost-all's modules imported, unused (control)",
    BURN: "the baseline spending otelcost's added CPU per request on its request threads (control)",
    "otelcost": "+ otelcost: InMemory, Budget (in-memory store), Metrics",
    "otelcost-all": "+ otelcost: all of those + RedisBudgetExporter + KafkaCostExporter",
}


def _idle_seconds(quick: bool) -> float:
    return IDLE_SECONDS / (3 if quick else 1)


def _light_seconds(quick: bool) -> float:
    return LIGHT_SECONDS / (5 if quick else 1)


# -- server side (one process per configuration) --------------------------------------------


class _Http11Handler(ServerHandler):
    http_version = "1.1"


# CPU seconds each connection's thread used, appended when it ends (list.append is atomic).
_REQUEST_THREADS_CPU: list[float] = []
# Per request, a pair of C doubles: when it was answered (perf_counter: CLOCK_MONOTONIC,
# the same clock as the coordinator's) and how long it waited while being served: wall
# minus its thread's CPU, i.e. for the GIL (other threads of the server) or for the CPU
# (other processes). Not a list of tuples: every full collection would walk a tuple per
# request (hundreds of thousands over a run), and full collections set the tail the
# fixed-load phase measures.
_REQUEST_WAITS = array("d")


def _request_waits(since: float = 0.0) -> list[tuple[float, float]]:
    """(answered at, waited) of each request answered at ``since`` or later."""
    pairs = zip(_REQUEST_WAITS[::2], _REQUEST_WAITS[1::2], strict=True)
    return [(at, waited) for at, waited in pairs if at >= since]


# Full collections (generation 2): when each ended (perf_counter) and how long it stopped
# every thread of the server. They set the tail at a fixed load: see _latency_rows.
_FULL_COLLECTIONS: list[tuple[float, float]] = []
# CPU seconds of the collecting thread in collections, by generation (a collection runs on
# the thread whose allocation crossed the threshold: otelcost's or the application's).
_COLLECTIONS_CPU = [0.0, 0.0, 0.0]


def _time_collections() -> Callable[[str, dict[str, Any]], None]:
    """Time every collection from here on (``_COLLECTIONS_CPU``, ``_FULL_COLLECTIONS``);
    returns the callback installed in ``gc.callbacks``."""
    started = [0.0, 0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        cpu = time.thread_time()
        if phase == "start":
            started[1] = cpu
        else:
            _COLLECTIONS_CPU[generation] += cpu - started[1]
        if generation != 2:
            return
        now = time.perf_counter()
        if phase == "start":
            started[0] = now
        else:
            _FULL_COLLECTIONS.append((now, now - started[0]))

    gc.callbacks.append(callback)
    return callback


def _name_os_threads() -> None:
    """From here on, each thread started takes its Python name as its OS name (Linux's
    comm, 15 bytes), so the coordinator can tell the server's threads apart in /proc."""
    start = threading.Thread.start

    def named_start(thread: threading.Thread) -> None:
        start(thread)
        name = thread.name
        if name.endswith("(process_request_thread)"):  # socketserver's name, numbered
            name = REQUEST_THREAD
        with contextlib.suppress(OSError):
            Path(f"/proc/self/task/{thread.native_id}/comm").write_text(name[:15])

    threading.Thread.start = named_start  # type: ignore[method-assign, assignment]


class _KeepAliveRequestHandler(WSGIRequestHandler):
    """wsgiref's handler serves one request per connection; this one serves until the
    client closes or asks to (``Connection: close``), as production servers do."""

    protocol_version = "HTTP/1.1"
    # wsgiref writes status line, headers and body separately: with Nagle on, each
    # response would wait for the client's delayed ACK (40 ms).
    disable_nagle_algorithm = True

    def handle(self) -> None:
        started = time.thread_time()
        try:
            self._serve_connection()
        finally:
            _REQUEST_THREADS_CPU.append(time.thread_time() - started)

    def _serve_connection(self) -> None:
        self.close_connection = False
        while not self.close_connection:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline or len(self.raw_requestline) > 65536:
                return
            wall, cpu = time.perf_counter(), time.thread_time()
            if not self.parse_request():
                return
            handler = _Http11Handler(
                self.rfile,
                self.wfile,  # type: ignore[arg-type]  # a socket writer, as in wsgiref
                self.get_stderr(),
                self.get_environ(),
                multithread=True,
            )
            handler.request_handler = self  # type: ignore[attr-defined]  # as wsgiref does
            handler.run(self.server.get_app())  # type: ignore[attr-defined]
            now = time.perf_counter()
            # One C call under the GIL: another thread's pair cannot come between the two.
            _REQUEST_WAITS.extend((now, now - wall - (time.thread_time() - cpu)))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of more simultaneous connections
    # (the client retries after a second).
    request_queue_size = 64


def _app(counter: Iterator[int]) -> Callable[..., Iterable[bytes]]:
    """examples/wsgi_app.py's app, counting the requests it serves."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        next(counter)
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if path == "/health":
            status, body = "200 OK", {"status": "ok"}
        elif method == "GET" and path.startswith("/users/"):
            status, body = "200 OK", {"user": path.rsplit("/", 1)[-1]}
        else:
            status, body = "404 Not Found", {"error": "not found"}
        data = json.dumps(body).encode()
        start_response(
            status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def _instrument(app: Any, config: str, params: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The WSGI callable for ``config``, its TracerProvider and CostSpanProcessor (or None)."""
    if config == "bare":
        return app, None, None
    if config == IMPORTS:
        for module in IMPORTED:
            importlib.import_module(module)
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False
    )
    processor = None
    if config in ("otel", IMPORTS, BURN):
        provider.add_span_processor(BatchSpanProcessor(_support.NoopSpanExporter()))
    else:
        import otelcost

        processor = otelcost.install(
            PRICING,
            exporters=_cost_exporters(config, params),
            span_exporter=_support.NoopSpanExporter(),
            tracer_provider=provider,
        )
    wsgi = OpenTelemetryMiddleware(app, tracer_provider=provider)
    return (_Burner(wsgi) if config == BURN else wsgi), provider, processor


class _Burner:
    """A WSGI app that spends ``ns`` of its thread's CPU before each request it passes on;
    ``GET /__burn/<ns>`` sets ``ns`` (no span: it never reaches the middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.ns = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(BURN_PATH):
            self.ns = int(path[len(BURN_PATH) :])
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if self.ns:
            clock = time.thread_time_ns
            until = clock() + self.ns
            while clock() < until:
                pass
        return self.app(environ, start_response)


def set_burn(port: int, ns: int) -> None:
    """Tell the burn server how much CPU to spend per request."""
    with contextlib.closing(_connect(port)) as sock:
        _round_trip(sock, f"GET {BURN_PATH}{ns} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())


def _cost_exporters(config: str, params: dict[str, Any]) -> list[Any]:
    from otelcost.budget import Budget, BudgetExporter, InMemoryBudgetStore
    from otelcost.exporters import InMemoryCostExporter, MetricsCostExporter

    budgets = [Budget("*", 1_000_000.0, "24h")]
    exporters: list[Any] = [
        InMemoryCostExporter(),
        BudgetExporter(InMemoryBudgetStore(budgets)),
        MetricsCostExporter(_support.noop_meter_provider()),
    ]
    if config == "otelcost-all":
        from otelcost.exporters import KafkaCostExporter, RedisBudgetExporter

        exporters.append(RedisBudgetExporter(params["redis_url"], budgets))
        exporters.append(KafkaCostExporter(params["bootstrap"], params["topic"]))
    return exporters


def serve(config: str, params: dict[str, Any]) -> None:
    """Serve ``config`` until standard input closes, then print what was served as JSON."""
    os.sched_setaffinity(0, {params["cpu"]})  # before any thread starts: all inherit it
    _name_os_threads()
    _time_collections()
    counter = itertools.count()
    wsgi, provider, processor = _instrument(_app(counter), config, params)
    server = _ThreadingServer(("127.0.0.1", 0), _KeepAliveRequestHandler)
    server.set_app(wsgi)
    if params.get("freeze"):
        gc.freeze()  # docs/deployment.md's advice: start-up's objects out of every collection
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(server.server_port, flush=True)
    # The coordinator closes our stdin when it is done, after writing the windows of the
    # fixed-load phase: [[start, end], ...] (perf_counter).
    windows = json.loads(sys.stdin.read() or "[]")
    server.shutdown()
    server.server_close()
    served = next(counter)
    gc.collect()
    report: dict[str, Any] = {
        "tracked": len(gc.get_objects()),
        "frozen": gc.get_freeze_count(),
        "requests": served,
        "request_threads_cpu_us": sum(_REQUEST_THREADS_CPU) / max(served, 1) * 1e6,
        "collections_cpu_us": [cpu / max(served, 1) * 1e6 for cpu in _COLLECTIONS_CPU],
        "paced_waits": [w for t, w in _request_waits() if any(a <= t <= b for a, b in windows)],
        # (ended, lasted) of each, to tell the requests they overlapped from the others.
        "paced_full_collections": [
            (t, d) for t, d in _FULL_COLLECTIONS if any(a <= t <= b for a, b in windows)
        ],
    }
    if processor is not None:
        report["flushed"] = processor.force_flush(60_000)
        stats = processor.stats()
        report["priced"] = stats["spans_priced"]
        report["dropped"] = stats["spans_dropped"] + stats["records_dropped"]
        report["export_failures"] = stats["export_failures"]
    if provider is not None:
        provider.shutdown()
    print(json.dumps(report), flush=True)


# -- load generator ---------------------------------------------------------------------------


def _requests(count: int) -> list[bytes]:
    """Keep-alive GETs: 90% ``/users/<id>`` (distinct ids, as in production), 10% health."""
    paths = ["/health" if i % 10 == 9 else f"/users/{(i * 7919) % 1_000_003}" for i in range(count)]
    return [
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench-e2e\r\n\r\n".encode()
        for path in paths
    ]


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def _complete(buffer: bytes) -> bool:
    """Whether ``buffer`` holds one whole response (a 200: anything else is an error)."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
    if length is None:
        raise RuntimeError(f"no Content-Length: {buffer[:200]!r}")
    if len(buffer) < head_end + 4 + int(length.group(1)):
        return False
    if not buffer.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response {buffer[:100]!r}")
    return True


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _round_trip(sock: socket.socket, request: bytes) -> None:
    """Send ``request`` on a blocking keep-alive connection and read its whole response."""
    sock.sendall(request)
    buffer = b""
    while not _complete(buffer):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffer += chunk


def _connection(port: int, requests: Sequence[bytes], start: int, until: float) -> int:
    """Send requests one after the other on one keep-alive connection until ``until``."""
    sock = _connect(port)
    done = 0
    clock = time.perf_counter
    try:
        index = start
        while clock() < until:
            _round_trip(sock, requests[index % len(requests)])
            index += 1
            done += 1
    finally:
        sock.close()
    return done


class Paced(NamedTuple):
    """One round of open-loop load: each request's scheduled time (perf_counter) and its
    latency in seconds, in the order the responses came."""

    scheduled: list[float]
    latencies: list[float]


class Added(NamedTuple):
    """A ratio to the baseline's as % added, and its 95% interval."""

    percent: float
    low: float
    high: float


class P99Added(NamedTuple):
    """What a server adds to the baseline's p99 at the fixed load: pooled over all
    requests, of the undisturbed requests (``_undisturbed``), and the median of the rounds'
    ratios."""

    pooled: Added
    undisturbed: Added
    median: Added


def paced(port: int, requests: Sequence[bytes], rate: float, seconds: float) -> Paced:
    """Open-loop load: request k is due at ``start + k / rate``, whatever came back before.

    Latency (seconds) runs from the request's *scheduled* time to its complete response,
    so a server that stalls is charged for every request that should have been sent
    meanwhile (no coordinated omission). Requests go out on any idle one of
    ``PACED_CONNECTIONS`` keep-alive connections (one request in flight on each); a due
    request with none idle waits, and that wait is part of its latency. One thread, one
    selector: the client adds no thread switches of its own.
    """
    with _watched(port, PACED_CONNECTIONS) as (socks, selector):
        return _paced(socks, selector, requests, rate, seconds)


def _paced(
    socks: list[socket.socket],
    selector: selectors.BaseSelector,
    requests: Sequence[bytes],
    rate: float,
    seconds: float,
) -> Paced:
    idle = list(socks)
    sent: dict[socket.socket, float] = {}  # connection -> scheduled time of its request
    buffers = dict.fromkeys(socks, b"")
    total = int(rate * seconds)
    scheduled: list[float] = []
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock() + 0.01
    due = 0  # requests whose scheduled time has come
    issued = 0
    while len(latencies) < total:
        now = clock()
        if now > start + seconds + 30:
            raise RuntimeError(f"the server answered {len(latencies)} of {total} requests")
        while due < total and start + due / rate <= now:
            due += 1
        while issued < due and idle:
            sock = idle.pop()
            sock.sendall(requests[issued % len(requests)])  # small: fits the send buffer
            sent[sock] = start + issued / rate
            issued += 1
        timeout = max(0.0, start + due / rate - clock()) if due < total else 1.0
        for sock in _answered(selector, buffers, timeout):
            due_at = sent.pop(sock)
            latencies.append(clock() - due_at)
            scheduled.append(due_at)
            idle.append(sock)
    return Paced(scheduled, latencies)


def capacity_now(port: int, pid: int, requests: Sequence[bytes]) -> float:
    """The server's requests/s at capacity now: the better of two closed-loop runs."""
    return max(drive(port, pid, requests, CALIBRATE_SECONDS)["rps"] for _ in range(2))


def watch(cpu: int) -> None:
    """The sentinel: on ``cpu``, sleep ``SENTINEL_SLEEP`` over and over until standard
    input closes, then print the host's stalls as JSON, ``[[began, ended], ...]``
    (perf_counter): each wake-up more than ``STALL_SECONDS`` late, from when it was due."""
    os.sched_setaffinity(0, {cpu})
    closed = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    print("ready", flush=True)
    stalls: list[tuple[float, float]] = []
    clock = time.perf_counter
    while not closed.is_set():
        due = clock() + SENTINEL_SLEEP
        time.sleep(SENTINEL_SLEEP)
        woke = clock()
        if woke - due > STALL_SECONDS:
            stalls.append((due, woke))
    print(json.dumps(stalls), flush=True)


class _Sentinel:
    """``watch`` in a process of its own, pinned to ``cpu``."""

    def __init__(self, cpu: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_e2e", "--watch", str(cpu)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        if stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError(f"the sentinel did not start (exit {self.proc.wait()})")

    def stalls(self) -> list[tuple[float, float]]:
        """Stop watching; the stalls seen, (began, ended) on perf_counter's clock."""
        stdout, _ = self.proc.communicate("", timeout=30)
        return [(began, ended) for began, ended in json.loads(stdout.strip().splitlines()[-1])]


@contextlib.contextmanager
def _watched(port: int, count: int) -> Iterator[tuple[list[socket.socket], selectors.BaseSelector]]:
    """``count`` non-blocking keep-alive connections to ``port`` and a selector watching
    them for reading; all closed on exit."""
    socks = [_connect(port) for _ in range(count)]
    selector = selectors.DefaultSelector()
    try:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        yield socks, selector
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def _answered(
    selector: selectors.BaseSelector, buffers: dict[socket.socket, bytes], timeout: float
) -> Iterator[socket.socket]:
    """Read what the connections ready within ``timeout`` received; yield each one as its
    response completes (its buffer emptied for the next), while reading the others."""
    for key, _ in selector.select(timeout):
        sock: socket.socket = key.fileobj  # type: ignore[assignment]
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        buffers[sock] += chunk
        if _complete(buffers[sock]):
            buffers[sock] = b""
            yield sock


def _cpu_seconds(pid: int) -> float:
    """``pid``'s CPU seconds, every thread's (ended ones too): Linux's CPU clock of another
    process, to the nanosecond, where /proc counts 10 ms ticks."""
    with contextlib.suppress(OSError):
        return time.clock_gettime(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    return _ticks(Path(f"/proc/{pid}/stat").read_text())


def _ticks(stat: str) -> float:
    """User + system CPU seconds of a /proc stat line (10 ms ticks)."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s threads, summed by OS name (in 10 ms ticks: Linux reads
    no other process's thread clocks); what threads that have ended used is under
    ``ENDED``."""
    by_name: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # ended since listed
            text = (task / "stat").read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            group = "librdkafka" if name.startswith("rdk:") else name
            by_name[group] = by_name.get(group, 0.0) + _ticks(text)
    by_name[ENDED] = _cpu_seconds(pid) - sum(by_name.values())
    return by_name


def _idle_cpu(servers: dict[str, tuple[int, int]], seconds: float) -> dict[str, float]:
    """Each server's CPU seconds per second with no load at all: its timers (the export
    worker's schedule, the metrics reader, librdkafka's polling)."""
    started = time.perf_counter()
    cpu = {name: _cpu_seconds(pid) for name, (_, pid) in servers.items()}
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    return {name: (_cpu_seconds(pid) - cpu[name]) / elapsed for name, (_, pid) in servers.items()}


def per_second_work(
    servers: dict[str, tuple[int, int]], requests: Sequence[bytes], seconds: float
) -> dict[str, tuple[float, float]]:
    """Each server's CPU seconds per second that do not scale with its requests, under
    load (timers with something to do: the export worker's wake-up with sums to send,
    the budget flush, librdkafka's produce requests), and its CPU seconds per request at
    light load (cold: a request every 40-250 ms).

    Every server is driven at once, open loop, at ``LIGHT_RATES`` requests/s in turn,
    twice each (low, high, low, high; ``seconds`` each), on two keep-alive connections
    opened once; its process CPU per second is a line of its requests per second, whose
    intercept is the first value and slope the second. Light load, because the requests'
    own CPU (cold at these rates, several times what it is at capacity) is what the line
    takes out: the lower the rates, the less of it there is to take out."""
    totals = {name: {rate: [0.0, 0, 0.0] for rate in LIGHT_RATES} for name in servers}
    with contextlib.ExitStack() as stack:
        watched = {
            name: stack.enter_context(_watched(port, 2)) for name, (port, _) in servers.items()
        }
        for rate in (*LIGHT_RATES, *LIGHT_RATES):

            def answered(name: str, rate: float = rate) -> int:
                return len(_paced(*watched[name], requests, rate, seconds).latencies)

            cpu = {name: _cpu_seconds(pid) for name, (_, pid) in servers.items()}
            started = time.perf_counter()
            done = _each_in_a_thread(answered, servers)
            elapsed = time.perf_counter() - started
            for (name, (_, pid)), count in zip(servers.items(), done, strict=True):
                total = totals[name][rate]
                total[0] += _cpu_seconds(pid) - cpu[name]
                total[1] += count
                total[2] += elapsed
    work = {}
    for name, by_rate in totals.items():
        (cpu_low, n_low, t_low), (cpu_high, n_high, t_high) = (by_rate[r] for r in LIGHT_RATES)
        per_request = (cpu_high / t_high - cpu_low / t_low) / (n_high / t_high - n_low / t_low)
        work[name] = (cpu_low / t_low - per_request * n_low / t_low, per_request)
    return work


def _each_in_a_thread(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``function(item)`` for every item, each on its own thread, all at once; the results
    in order, or the first exception once every thread has finished."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(len(items), 1)) as pool:
        return list(pool.map(function, items))


def drive(port: int, pid: int, requests: Sequence[bytes], seconds: float) -> dict[str, float]:
    """``CONNECTIONS`` keep-alive connections for ``seconds``: requests/s and server CPU."""
    until = time.perf_counter() + seconds
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    try:
        counts = _each_in_a_thread(
            lambda slot: _connection(port, requests, slot * 997, until), range(CONNECTIONS)
        )
    except BaseException as exc:
        raise RuntimeError(f"load generator: {exc!r}") from exc
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    total = sum(counts)
    return {"rps": total / elapsed, "cpu_us": cpu / total * 1e6, "util": cpu / elapsed}


def drive_together(
    ports: dict[str, tuple[int, int]], requests: Sequence[bytes], seconds: float
) -> dict[str, dict[str, float]]:
    """``drive`` every server of ``ports`` (name -> port, pid) at the same time: each gets
    its own ``CONNECTIONS`` connections, and the servers share the server CPU."""
    names = list(ports)
    results = _each_in_a_thread(lambda name: drive(*ports[name], requests, seconds), names)
    return dict(zip(names, results, strict=True))


def alternate(
    servers: dict[str, tuple[int, int]],
    requests: Sequence[bytes],
    cycles: int,
    turn_seconds: float = TURN_SECONDS,
) -> dict[str, Block]:
    """Closed-loop load on one server at a time: per cycle, each server of ``servers``
    (name -> port, pid) in turn keeps ``CONNECTIONS`` keep-alive connections busy for
    ``turn_seconds``, the order rotating every cycle; a turn ends when its last response
    is in. Per server: (responses, its process CPU seconds from the first turn to the
    last, all its threads, whenever they ran, seconds in its turns)."""
    names = list(servers)
    done = dict.fromkeys(names, 0)
    seconds = dict.fromkeys(names, 0.0)
    with contextlib.ExitStack() as stack:
        watched = {
            name: stack.enter_context(_watched(port, CONNECTIONS))
            for name, (port, _) in servers.items()
        }
        cpu = {name: _cpu_seconds(pid) for name, (_, pid) in servers.items()}
        index = 0
        for cycle in range(cycles):
            for name in _rotated(names, cycle):
                socks, selector = watched[name]
                answered, elapsed, index = _turn(selector, socks, requests, index, turn_seconds)
                done[name] += answered
                seconds[name] += elapsed
        # The servers' background threads (exporters, the BatchSpanProcessor) run whenever
        # they are due, in any server's turn: each process's CPU counts all of its own.
        return {
            name: (done[name], _cpu_seconds(pid) - cpu[name], seconds[name])
            for name, (_, pid) in servers.items()
        }


def _rotated(names: Sequence[str], index: int) -> list[str]:
    """``names`` starting at ``index`` (modulo their number): round ``index``'s order."""
    shift = index % len(names)
    return [*names[shift:], *names[:shift]]


def _turn(
    selector: selectors.BaseSelector,
    socks: Sequence[socket.socket],
    requests: Sequence[bytes],
    index: int,
    seconds: float,
) -> tuple[int, float, int]:
    """One server's turn: a request on every connection, the next as each response is
    in, until ``seconds`` have passed and every response is in. (responses, seconds,
    the next request's index)."""
    clock = time.perf_counter
    started = clock()
    until = started + seconds
    buffers = dict.fromkeys(socks, b"")
    for sock in socks:
        sock.sendall(requests[index % len(requests)])  # small: fits the send buffer
        index += 1
    done, busy = 0, len(socks)
    while busy:
        if clock() > until + 10:
            raise RuntimeError("the server did not answer within 10 s")
        for sock in _answered(selector, buffers, 1.0):
            done += 1
            if clock() < until:
                sock.sendall(requests[index % len(requests)])
                index += 1
            else:
                busy -= 1
    return done, clock() - started, index


# -- where otelcost's CPU goes --------------------------------------------------------------


def _middleware_spans(count: int) -> list[Any]:
    """Ended spans exactly as the WSGI middleware produces them for the load's requests."""
    from wsgiref.util import setup_testing_defaults

    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

    spans: list[ReadableSpan] = []

    class Collect(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            spans.append(span)

    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(Collect())
    wsgi = OpenTelemetryMiddleware(_app(itertools.count()), tracer_provider=provider)
    for request in _requests(count):
        environ: dict[str, Any] = {"PATH_INFO": request.split(b" ")[1].decode()}
        setup_testing_defaults(environ)
        list(wsgi(environ, lambda *args: None))
    return spans


def _per_item_us(function: Callable[[Any], object], items: Sequence[Any], per: int = 1) -> float:
    """Thread CPU µs per item (``per`` items in each element of ``items``)."""
    started = time.thread_time_ns()
    for item in items:
        function(item)
    return (time.thread_time_ns() - started) / (len(items) * per) / 1e3


def breakdown(count: int, params: dict[str, Any]) -> list[tuple[str, float, bool]]:
    """CPU µs per span of each step otelcost takes for one request's span, and whether the
    step is part of what otelcost adds (the others are parts or comparisons).

    Measured on this thread, on spans from the same middleware and requests as the load,
    each step over all spans in turn (so memos behave as in the server).
    """
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from otelcost.costing.coster import Coster
    from otelcost.costing.enrich import enriched_copy
    from otelcost.costing.operation import derive_operation, service_name
    from otelcost.costing.processor import CostSpanProcessor, _export_costs_of
    from otelcost.exporters.base import CostSumExporter, CostSums
    from otelcost.pricing import PricingCache

    spans = _middleware_spans(count)
    cache = PricingCache(PRICING)
    cache.refresh()
    coster = Coster(
        cache,
        currency="USD",
        region=None,
        max_operations_per_service=1000,
        normalizer=None,
        compiled=True,  # as the processor makes it where the extension is built
    )
    snap = coster.snapshot()
    as_dicts = [(span.name, dict(span.attributes)) for span in spans]
    costs = [(span, coster.cost(span, snap)) for span in spans]
    records = [cost.record(span.context.trace_id, span.context.span_id) for span, cost in costs]
    # What the ending hook queues for the record exporters: the cost tuples, with contexts.
    fields = [(*coster.price(span, snap)[:9], span.context) for span in spans]
    batch = 512
    batches = [records[i : i + batch] for i in range(0, len(records) - batch + 1, batch)]
    field_batches = [fields[i : i + batch] for i in range(0, len(fields) - batch + 1, batch)]
    sums = [CostSums.from_records(records) for records in batches]
    probe = CostSpanProcessor(PRICING)
    path = probe.pricing_path
    probe.shutdown()
    where = "on the ending thread" if path == "ending_hook" else "on the pricing worker"
    rows = [
        (
            "service and operation from the span (`service_name`, `derive_operation`)",
            _per_item_us(
                lambda s: (
                    service_name(s.resource.attributes, s.attributes),
                    derive_operation(s.name, s.attributes),
                ),
                spans,
            ),
            False,
        ),
        (
            "(comparison) `derive_operation` on a plain dict of the same attributes",
            _per_item_us(lambda pair: derive_operation(*pair), as_dicts),
            False,
        ),
        (
            f"`Coster.cost`: naming (memoized), price, charge (includes the first row); {where}",
            _per_item_us(lambda s: coster.cost(s, snap), spans),
            True,
        ),
        (
            "`SpanCost.record`: the CostRecord, built on the export worker only for record "
            "exporters that do not take the cost tuples (none here: in-memory builds its "
            "records when they are read, Kafka encodes the tuples)",
            _per_item_us(lambda pair: pair[1].record(pair[0].context.trace_id, 1), costs),
            False,
        ),
        (
            "`enriched_copy`: a copy of the span with cost.* attributes (copy path only)",
            _per_item_us(lambda pair: enriched_copy(pair[0], pair[1].attributes()), costs),
            path == "copy",
        ),
    ]
    for exporter in _cost_exporters("otelcost-all" if params else "otelcost", params):
        if isinstance(exporter, CostSumExporter):
            rows.append(
                (
                    f"`{type(exporter).__name__}.export_sums`, per span, the sums of {batch} spans",
                    _per_item_us(exporter.export_sums, sums, per=batch),
                    True,
                )
            )
        elif (export_costs := _export_costs_of(exporter)) is not None:
            rows.append(
                (
                    f"`{type(exporter).__name__}`, per span, the cost tuples of {batch} spans "
                    "(what the processor hands it)",
                    _per_item_us(export_costs, field_batches, per=batch),
                    True,
                )
            )
        else:
            rows.append(
                (
                    f"`{type(exporter).__name__}.export`, per record, in batches of {batch}",
                    _per_item_us(exporter.export, batches, per=batch),
                    True,
                )
            )
        exporter.shutdown()
    bsp = BatchSpanProcessor(_support.NoopSpanExporter())
    rows.append(
        (
            "for scale: `BatchSpanProcessor.on_end` (in the baseline too)",
            _per_item_us(bsp.on_end, spans),
            False,
        )
    )
    bsp.shutdown()  # type: ignore[no-untyped-call]  # untyped in the SDK
    return rows


# -- coordinator ------------------------------------------------------------------------------


class _ServerProcess:
    def __init__(self, config: str, cpu: int, params: dict[str, Any], freeze: bool) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_e2e",
                "--serve",
                config,
                json.dumps({**params, "cpu": cpu, "freeze": freeze}),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = 0

    def wait_ready(self) -> None:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"server {self.config} did not start (exit {self.proc.poll()})")
        self.port = int(line)

    def finish(self, windows: list[tuple[float, float]]) -> dict[str, Any]:
        """Stop the server, telling it when the fixed-load phase ran; its report."""
        stdout, _ = self.proc.communicate(json.dumps(windows), timeout=120)
        if self.proc.returncode != 0:
            raise RuntimeError(f"server {self.config} exited with {self.proc.returncode}")
        report: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(quick: bool, freeze: bool = False, fixed_cycles: int | None = None) -> Result:
    """The three phases; ``freeze``: every server calls ``gc.freeze()`` once set up;
    ``fixed_cycles``: the fixed-load phase's cycles (default 40, 2 quick)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs: one for the server, one for the load generator")
    client_cpu, server_cpu = cpus[0], cpus[1]
    blocks, cycles = (2, 20) if quick else (12, 60)
    rounds = 2 if quick else 14
    fixed_rounds = fixed_cycles or (2 if quick else FIXED_CYCLES)
    paired_seconds = 1.0 if quick else 2.0
    requests = _requests(50_000)
    os.sched_setaffinity(0, {client_cpu})
    try:
        with _support.backends(client_cpu, "bench-e2e") as backends:
            configs = [c for c in CONFIGS if c != "otelcost-all" or isinstance(backends, dict)]
            params = backends if isinstance(backends, dict) else {}
            servers = {
                c: _ServerProcess("otel" if c == TWIN else c, server_cpu, params, freeze)
                for c in [*configs, *([IMPORTS] if "otelcost-all" in configs else []), BURN]
            }
            try:
                for server in servers.values():
                    server.wait_ready()
                # The turns' servers (the fixed-load phase's control takes no turns).
                ports = {c: (servers[c].port, servers[c].proc.pid) for c in configs}
                idle_seconds = _idle_seconds(quick)
                idle_before = _idle_cpu(ports, idle_seconds)
                for server in servers.values():  # warm up: connections, memos, lazy setup
                    drive(server.port, server.proc.pid, requests, 0.5)
                # Past the BatchSpanProcessor's schedule (5 s): nothing deferred is left.
                time.sleep(SETTLE_SECONDS)
                idle_after = _idle_cpu(ports, idle_seconds)
                # The smaller: work left over from the warm-up is not per-second work.
                idle = {c: min(idle_before[c], idle_after[c]) for c in configs}
                light = per_second_work(ports, requests, _light_seconds(quick))
                # At least the idle work, which goes on under load too.
                timers = {c: max(idle[c], light[c][0]) for c in configs}
                raw: dict[str, list[Block]] = {c: [] for c in configs}
                turns: dict[str, list[Block]] = {c: [] for c in configs}
                threads: dict[str, dict[str, float]] = {c: {} for c in configs}
                for _ in range(blocks):
                    before = {c: _thread_cpu(pid) for c, (_, pid) in ports.items()}
                    cycle = alternate(ports, requests, cycles)
                    _add_threads(
                        threads, before, {c: _thread_cpu(p) for c, (_, p) in ports.items()}
                    )
                    wall = sum(block[2] for block in cycle.values())
                    for config, (done, cpu, own) in cycle.items():
                        raw[config].append((done, cpu, own))
                        # At capacity a server is never idle: what it does per second is
                        # spread over all of its requests, not over its turns' alone.
                        turns[config].append((done, cpu - timers[config] * (wall - own), own))
                pairs: dict[str, list[dict[str, dict[str, float]]]] = {
                    c: [] for c in configs if c in PAIRED
                }
                for round_index in range(rounds):
                    for config in _rotated(list(pairs), round_index):
                        together = {name: ports[name] for name in ("otel", config)}
                        pairs[config].append(drive_together(together, requests, paired_seconds))
                set_burn(servers[BURN].port, round(_burn_us(turns) * 1e3))
                latencies: dict[str, list[Paced]] = {c: [] for c in LATENCY_CONFIGS if c in servers}
                windows: dict[str, list[tuple[float, float]]] = {c: [] for c in servers}
                # Each round's server CPU per request: the host's speed as the server saw it.
                round_cpu: dict[str, list[float]] = {c: [] for c in latencies}
                rates: list[float] = []
                sentinel = _Sentinel(server_cpu)
                try:
                    for round_index in range(fixed_rounds):
                        rates.append(capacity_now(*ports["otel"], requests) / 2)
                        for config in _rotated(list(latencies), round_index):
                            started = time.perf_counter()
                            cpu = _cpu_seconds(servers[config].proc.pid)
                            paced_run = paced(
                                servers[config].port, requests, rates[-1], FIXED_ROUND_SECONDS
                            )
                            cpu = _cpu_seconds(servers[config].proc.pid) - cpu
                            latencies[config].append(paced_run)
                            round_cpu[config].append(cpu / len(paced_run.latencies))
                            windows[config].append((started, time.perf_counter()))
                finally:
                    stalls = sentinel.stalls()
                reports = {c: s.finish(windows.get(c, [])) for c, s in servers.items()}
            finally:
                for server in servers.values():
                    server.kill()
            steps_spans = 2_000 if quick else 10_000
            steps = breakdown(steps_spans, params)
    finally:
        os.sched_setaffinity(0, set(cpus))
    return _result(
        quick=quick,
        rounds=rounds,
        turns=turns,
        raw=raw,
        idle=idle,
        light=light,
        threads=threads,
        cycles=cycles,
        reports=reports,
        backends=backends,
        steps=steps,
        steps_spans=steps_spans,
        rates=rates,
        latencies=latencies,
        round_cpu=round_cpu,
        stalls=stalls,
        pairs=pairs,
        paired_seconds=paired_seconds,
        freeze=freeze,
    )


def _headline(configs: Iterable[str]) -> str:
    """The configuration the targets are judged on: every exporter where the brokers ran."""
    return "otelcost-all" if "otelcost-all" in configs else "otelcost"


def _burn_us(turns: dict[str, list[Block]]) -> float:
    """The CPU µs per request the burn control spends: what the headline added in the turns."""
    return max(0.0, _totals(turns[_headline(turns)])[1] - _totals(turns["otel"])[1])


def _thread_groups(threads: dict[str, dict[str, float]]) -> list[str]:
    """The thread groups any server used, in THREAD_GROUPS' order, "other" last."""
    used = {group for groups in threads.values() for group, spent in groups.items() if spent}
    order = [*dict.fromkeys(THREAD_GROUPS.values()), "other"]
    return [group for group in order if group in used]


def _add_threads(
    threads: dict[str, dict[str, float]],
    before: dict[str, dict[str, float]],
    after: dict[str, dict[str, float]],
) -> None:
    """Add each server's CPU seconds between two ``_thread_cpu`` readings, by thread group."""
    for config, now in after.items():
        groups = threads[config]
        for name in set(now) | set(before[config]):
            group = THREAD_GROUPS.get(name, "other")
            spent = now.get(name, 0.0) - before[config].get(name, 0.0)
            groups[group] = groups.get(group, 0.0) + spent


def _result(
    *,
    quick: bool,
    rounds: int,
    turns: dict[str, list[Block]],
    raw: dict[str, list[Block]],
    idle: dict[str, float],
    light: dict[str, tuple[float, float]],
    threads: dict[str, dict[str, float]],
    cycles: int,
    reports: dict[str, dict[str, Any]],
    backends: dict[str, Any] | str,
    steps: list[tuple[str, float, bool]],
    steps_spans: int,
    rates: list[float],
    latencies: dict[str, list[Paced]],
    round_cpu: dict[str, list[float]],
    stalls: list[tuple[float, float]],
    pairs: dict[str, list[dict[str, dict[str, float]]]],
    paired_seconds: float,
    freeze: bool = False,
) -> Result:
    base = turns["otel"]
    _, base_cpu = _totals(base)
    served = {config: sum(block[0] for block in blocks) for config, blocks in turns.items()}
    rows = []
    overhead: dict[str, tuple[float, float, float]] = {}  # %: estimate, 95% interval
    for config, runs in turns.items():
        rps, cpu_us = _totals(runs)
        ratio, low, high = _capacity_interval(runs, base)
        overhead[config] = ((1 - ratio) * 100, (1 - high) * 100, (1 - low) * 100)
        uncorrected = (1 - _totals(raw["otel"])[1] / _totals(raw[config])[1]) * 100
        report = reports[config]
        if "priced" in report:
            lost = report["dropped"] + report["export_failures"]
            check = f"{report['priced']:,} of {report['requests']:,}" + (
                f", **{lost:,} dropped or failed**" if lost or not report["flushed"] else ""
            )
        else:
            check = "—"
        rows.append(
            [
                LABELS[config],
                f"{cpu_us:.0f}",
                f"{ratio:.3f} ({low:.3f}-{high:.3f})",
                ""
                if config == "otel"
                else "{:+.1f}% ({:+.1f} to {:+.1f})".format(*overhead[config]),
                "" if config == "otel" else f"{uncorrected:+.1f}%",
                f"{idle[config] * 1e3:.2f} / {light[config][0] * 1e3:.2f}",
                f"{light[config][1] * 1e6:.0f}",
                f"{rps:,.0f}",
                f"{report['request_threads_cpu_us']:.0f}",
                "{:.1f} / {:.1f} / {:.1f}".format(*report["collections_cpu_us"]),
                check,
            ]
        )
    headline = _headline(turns)
    paired_rows, capacity_lost = _paired_rows(pairs)
    latency_rows, p99_added = _latency_rows(latencies, reports, stalls, round_cpu)
    added_steps = sum(us for _, us, adds in steps if adds)
    cpu_ratio = _totals(turns[headline])[1] / base_cpu
    added_cpu = _totals(turns[headline])[1] - base_cpu
    exporters = "every exporter" if headline == "otelcost-all" else "the embedded exporters"
    missing = (
        ""
        if isinstance(backends, dict)
        else f" The Redis and Kafka exporters were left out: {backends}."
    )
    body = "\n".join(
        [
            "## End to end: an instrumented WSGI app",
            "",
            f"{command('bench_e2e', quick)} — {environment()}."
            + (
                " Every server called `gc.freeze()` once set up (docs/deployment.md's advice):"
                " what start-up created is out of every later collection."
                if freeze
                else ""
            ),
            "examples/wsgi_app.py's app behind OpenTelemetry's WSGI middleware, on wsgiref "
            "with HTTP/1.1 keep-alive and a thread per connection; every configuration in its "
            "own server process pinned to one CPU, all served at once. The load generator "
            f"(another process, pinned to the other CPU with redis-server and the Tansu "
            f"broker) keeps {CONNECTIONS} keep-alive connections busy: 90% `GET /users/<id>` "
            "with distinct ids, 10% `GET /health`. "
            "Each server has the server CPU to itself in its turn: the load moves from "
            f"server to server every {TURN_SECONDS * 1e3:.0f} ms, the order rotating each "
            f"cycle, {len(turns['otel'])} blocks of {cycles} cycles; a turn ends when its last "
            "response is in. This host's speed swings by about ±10% from one 100 ms to the "
            "next (and by 2x over hours), so only turns this short, many of them, compare "
            "the servers on the same host. The background threads of each server (the "
            "BatchSpanProcessor, otelcost's exporters, librdkafka) run when they are due, "
            "in any server's turn, so the measure is each process's own CPU (all its "
            "threads, over the whole block) per response: a CPU-bound server's capacity is "
            "its CPU over its CPU per request, so requests/s at capacity vs the baseline = "
            "the baseline's CPU per request / this server's, and overhead = 1 - that, with "
            f"a 95% interval from {_BOOTSTRAP} resamplings of the blocks. The second "
            "baseline server (A/A) shows what the method reads for no difference at all."
            f"{missing}",
            "",
            table(
                [
                    "configuration",
                    "server CPU µs/request",
                    "requests/s at capacity vs baseline (95% interval)",
                    "overhead (95% interval)",
                    "overhead before the per-second correction",
                    "per-second CPU ms/s: idle / under light load",
                    "CPU µs/request at light load (cold)",
                    "requests/s in its turns",
                    "CPU µs/request on request threads",
                    "of the server's: garbage collection µs/request, generations 0 / 1 / 2",
                    "spans priced",
                ],
                rows,
            ),
            "",
            "The per-second correction: work a server does per second rather than per "
            "request (timers: the export worker's wake-up, the budget flush, the metrics "
            "reader, librdkafka's produce requests) would, in the turns, be spread over "
            f"only its share of the requests, one turn in {len(turns)}, where at capacity "
            "it is spread over all of them; so a block's CPU is counted without that rate "
            "over the time of the other servers' turns. The rate: each server's CPU with no "
            "load at all, measured twice, for "
            f"{_idle_seconds(quick):g} s before the warm-up (its exporters "
            f"not yet connected) and {SETTLE_SECONDS:g} s after it, the smaller taken; "
            "and under light load, where the timers have something to do (sums to flush, "
            "records to send): every server driven at once, open loop, at "
            + " and ".join(f"{rate:g}" for rate in LIGHT_RATES)
            + " requests/s in turn, twice each for "
            f"{_light_seconds(quick):g} s, its CPU per second a line of its "
            "requests per second, whose intercept is the per-second work and slope the "
            "CPU per request at light load (cold: several times what it is at capacity, "
            "and taken out by the line). The larger of the two rates is used; the "
            "uncorrected figure is beside it. "
            "Requests/s in its turns: responses over the time of the server's own turns, "
            "for scale. The request threads' own CPU (thread CPU clock, over the whole run, "
            "all phases) is shown beside the server's, and so is the CPU its garbage "
            "collections took, on whichever thread ran them (the one whose allocation "
            "crossed the threshold), by generation, over the whole run.",
            "",
            "Where each server's CPU went in the turns, µs per request by thread (the "
            "process's threads read from /proc by name; uncorrected):",
            "",
            table(
                ["thread", *(LABELS[c] for c in turns)],
                [
                    [
                        group,
                        *(f"{threads[c].get(group, 0.0) / served[c] * 1e6:.1f}" for c in turns),
                    ]
                    for group in _thread_groups(threads)
                ],
            ),
            "",
            "### Paired: the baseline and otelcost sharing the server CPU",
            "",
            "Each otelcost server is also driven *at the same time* as the baseline server, "
            f"{CONNECTIONS} connections each, both on the server CPU, for {paired_seconds:g} s, "
            f"{rounds} rounds per pair, the pairs' order rotating: whatever slows the host "
            "slows both. A CPU-bound "
            "server's capacity is its CPU over its CPU per request, so requests/s lost at "
            "capacity = 1 - baseline's CPU per request / otelcost's. The A/A row pairs the "
            "baseline with a second, identical baseline server. This is a different operating "
            "point from the turns above: the two processes take turns on one CPU and "
            "evict each other's data from its caches between requests, which costs "
            "otelcost, whose added cost is mostly such misses, more than the baseline (0-3 "
            "points more than in the turns in the runs of 2026-12-03). It is the view for "
            "hosts where a service's processes share "
            "cores; the target is judged on the turns above, the issue's server with its CPU "
            "to itself.",
            "",
            table(
                [
                    "paired with the baseline",
                    "CPU per request vs baseline, median (IQR over rounds)",
                    "requests/s lost at capacity",
                    "CPU µs/request, this server / the baseline (medians)",
                ],
                paired_rows,
            ),
            "",
            "### Request latency at a fixed offered load",
            "",
            f"Open loop at half the baseline's capacity at the time: before each of "
            f"{len(rates)} cycles the baseline server is driven closed-loop twice for "
            f"{CALIBRATE_SECONDS:g} s and the better requests/s halved (median "
            f"{statistics.median(rates):,.0f} requests/s, {min(rates):,.0f}-{max(rates):,.0f} "
            f"over the cycles); then each configuration serves {FIXED_ROUND_SECONDS:g} s at "
            "that rate, the order rotating. A rate set once, from the turns above, loaded "
            "every server near saturation whenever the host slowed in between. Request k "
            "is due at start + k / rate and goes out on any idle one of "
            f"{PACED_CONNECTIONS} keep-alive connections (a single-threaded selector loop); "
            "latency runs from the *scheduled* time to the complete response, so a stall "
            "is charged to every request that should have been sent during it (no "
            "coordinated omission). Percentiles over all requests of all rounds. The p99 "
            "ratio is the pooled p99 over the baseline's pooled p99, with a 95% interval "
            f"from {_BOOTSTRAP} resamplings of the rounds (the same rounds drawn for both, "
            "since they ran side by side in time). Beside it, the median of the per-round "
            "ratios (each round's p99 over the baseline's in the same cycle).",
            "",
            "At this load the pooled p99 rests on a dozen events per server, each of which "
            "stops it for 10-50 ms: stalls of the host, in which nothing on the server CPU "
            "runs, and the server's own full collections. Whether 1% of a server's requests "
            "met one decides its p99, so two identical servers' pooled p99 differ by tens "
            "of percent (the A/A row). The host's stalls are seen by a sentinel process "
            f"pinned to the server CPU that sleeps {SENTINEL_SLEEP * 1e3:g} ms over and "
            f"over and notes each wake-up more than {STALL_SECONDS * 1e3:g} ms late: it "
            f"saw {len(stalls)} in this phase, {sum(e - b for b, e in stalls) * 1e3:,.0f} ms in "
            f"all, the longest {max((e - b for b, e in stalls), default=0) * 1e3:.0f} ms. "
            "The *undisturbed* requests are those in flight during neither kind of stop, "
            "nor while the server caught up on the requests it held after one (at half load, "
            "about as long again). Their p99 is what a server's own threads, GIL hand-offs "
            "and CPU per request do to the tail, over tens of thousands of requests, and it "
            "is the figure the target is judged on; the full collections, each server's own, "
            "are compared apart in the last columns (how many, how long).",
            "",
            table(
                [
                    "configuration",
                    "requests",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "p99 vs baseline (95% interval)",
                    "median of the rounds' p99 vs the baseline's in the same cycle (95% interval)",
                    "p99 ms of the undisturbed requests (share set aside)",
                    "that p99 vs the baseline's (95% interval)",
                    "server wait p99 ms",
                    "server wait p99.9 ms",
                    "full GCs in the rounds: count, median / max ms",
                    "objects the collector tracks",
                    "server CPU ms/request in its rounds: median / max "
                    f"(rounds at ≥ {SLOW_ROUND:g}x the median)",
                ],
                latency_rows,
            ),
            "",
            "The last column is the host's speed as each server saw it, round by round: its "
            "process CPU over the round's requests. In the runs of 2026-12-05 nothing else ran "
            "on the server CPU, yet in stretches of a second or more every server's CPU per "
            "request rose 1.3-1.8x (the host ran slower without stopping, so the sentinel "
            "saw nothing); a server loaded at half its capacity when the rate was set is near "
            "saturation then, and its 1% slowest requests come from such stretches, many of "
            "them shorter than a round. Which server meets more of them moves its pooled "
            'p99, undisturbed or not (design decisions §1, "What sets the half-load tail on '
            'this host").',
            "",
            "Full GCs: CPython's generation-2 collections, which stop every thread of the "
            "server; at half load they come every few seconds and last tens of ms, longer "
            "the more objects the collector tracks (counted in each server at the end, "
            "after a collection: the imported modules' functions, classes and dicts are "
            "most of them), so they set p99 and p99.9. The A/A row is the second baseline "
            "server: what the p99 reads between two processes of the same code. The imports "
            "control is the baseline server with every module the all-exporters server imports "
            "(otelcost and its Redis client, confluent-kafka, the metrics SDK) imported and "
            "never used: what those objects alone do to the tail.",
            "",
            f"The burn row is the baseline server spending {_burn_us(turns):.1f} µs of its request "
            "thread's CPU before each request (a loop on the thread's CPU clock): what "
            f"otelcost with {exporters} "
            "added per request in the turns above. It has no thread, "
            "queue or object of otelcost's, so its p99 is what that much CPU per request "
            "alone does to the tail at this load. The requests arrive evenly spaced, not at "
            "random: at a true half load a request seldom finds another in the server, and "
            "the tail grows about as the CPU per request does (an M/M/1 queue's would grow "
            "twice as fast); near saturation, which a rate set once made of a slower host, "
            "it grows many times faster.",
            "",
            "Server wait: how long a request waited while the server handled it (from its "
            "request line to its last byte written: wall time minus its thread's CPU), for "
            "the GIL (other threads: requests, the BatchSpanProcessor, otelcost's workers) "
            "or for the CPU (other processes); over the requests of the fixed-load rounds.",
            "",
            "### Where otelcost's CPU goes, per request",
            "",
            f"Each step otelcost takes for one span, timed on one thread (CPU time) over "
            f"{steps_spans:,} spans that the same middleware produced for the same requests "
            "(so memos hit and miss as in the server). Where each runs is in its row; the "
            "workers' share the server's CPU and GIL with the requests all the same.",
            "",
            table(["step", "CPU µs/span"], [[name, f"{us:.2f}"] for name, us, _ in steps]),
            "",
            f"Sum of the steps otelcost adds on this pricing path: "
            f"{added_steps:.0f} µs/span; measured in the server (turns): "
            f"{added_cpu:+.0f} µs of CPU per request with every exporter on. The rest: the "
            "same steps run cold in the server (between two spans the request's own work "
            "has evicted otelcost's data from the CPU caches), queue hand-offs, worker "
            "wake-ups, GIL switches, "
            "librdkafka's threads, the BatchSpanProcessor exporting larger spans.",
        ]
    )
    lost, lost_low, lost_high = overhead[headline]
    metric = Metric(
        "End to end: requests/s lost with otelcost, all exporters on",
        lost,
        "%",
        target=5.0,
        vs_baseline=(
            f"alone on the CPU in turns, 95% interval {lost_low:.1f}-{lost_high:.1f}% "
            f"(A/A control {overhead[TWIN][0]:+.1f}%); sharing the CPU with the baseline "
            f"(paired): {capacity_lost[headline]:.1f}% (A/A {capacity_lost[TWIN]:+.1f}%)"
        ),
        fmt=".1f",
        control=overhead[TWIN],
    )
    cpu_metric = Metric(
        "End to end: server CPU per request added by otelcost, all exporters on",
        (cpu_ratio - 1) * 100,
        "%",
        vs_baseline=f"{added_cpu:+.0f} µs per request; sum of the steps {added_steps:.0f} µs",
        fmt="+.1f",
    )
    latency_metric = _latency_metric(p99_added, reports, headline, rates)
    return Result("e2e", body, [metric, latency_metric, cpu_metric])


def _latency_metric(
    p99_added: dict[str, P99Added],
    reports: dict[str, dict[str, Any]],
    headline: str,
    rates: Sequence[float],
) -> Metric:
    """The p99 target's row: judged on the undisturbed requests, with the pooled p99 and
    the full collections (each server's own, set aside there) beside it."""
    added = p99_added[headline]
    twin = p99_added.get(TWIN)
    notes = [
        f"open loop at {statistics.median(rates):,.0f} requests/s (median of the cycles)",
        f"95% interval {added.undisturbed.low:+.1f} to {added.undisturbed.high:+.1f}%",
    ]
    if twin:
        notes.append(f"A/A control {twin.undisturbed.percent:+.1f}%")
    if IMPORTS in p99_added and headline == "otelcost-all":
        imported = p99_added[IMPORTS].undisturbed.percent
        notes.append(f"the baseline with the same modules imported, unused: {imported:+.1f}%")
    if BURN in p99_added:
        burn = p99_added[BURN].undisturbed.percent
        notes.append(f"the baseline spending the same CPU per request: {burn:+.1f}%")
    notes.append(
        f"of all requests: {added.pooled.percent:+.1f}%"
        + (f" (A/A {twin.pooled.percent:+.1f}%)" if twin else "")
    )
    base, own = (
        [lasted * 1e3 for _, lasted in reports[c]["paced_full_collections"]]
        for c in ("otel", headline)
    )
    if base and own:
        notes.append(
            f"full collections {len(own)} vs the baseline's {len(base)}, median "
            f"{statistics.median(own):.0f} vs {statistics.median(base):.0f} ms"
        )
    return Metric(
        "End to end: p99 latency added at half the baseline's capacity, all exporters on "
        "(undisturbed requests)",
        added.undisturbed.percent,
        "%",
        target=5.0,
        vs_baseline="; ".join(notes),
        fmt="+.1f",
        control=tuple(twin.undisturbed) if twin else None,
    )


def _paired_rows(
    pairs: dict[str, list[dict[str, dict[str, float]]]],
) -> tuple[list[list[str]], dict[str, float]]:
    """Table rows of the paired phase, and requests/s lost at capacity (%) per config."""
    rows, lost = [], {}
    for config, runs in pairs.items():
        q1, ratio, q3 = quartiles([r[config]["cpu_us"] / r["otel"]["cpu_us"] for r in runs])
        lost[config] = (1 - 1 / ratio) * 100
        rows.append(
            [
                LABELS[config],
                f"{ratio:.3f} ({q1:.3f}-{q3:.3f})",
                f"{lost[config]:+.1f}%",
                f"{statistics.median(r[config]['cpu_us'] for r in runs):.0f} / "
                f"{statistics.median(r['otel']['cpu_us'] for r in runs):.0f}",
            ]
        )
    return rows, lost


_BOOTSTRAP = 400


def _totals(blocks: Sequence[Block]) -> tuple[float, float]:
    """Requests/s in its turns, and CPU µs per request, over a server's blocks."""
    done = sum(block[0] for block in blocks)
    cpu = sum(block[1] for block in blocks)
    return done / sum(block[2] for block in blocks), cpu / done * 1e6


def _bootstrap(
    count: int, statistic: Callable[[Sequence[int]], float]
) -> tuple[float, float, float]:
    """``statistic`` of all ``count`` units (blocks, rounds), and a 95% interval from
    _BOOTSTRAP resamplings: the units' indexes drawn with replacement. ``statistic`` reads
    the same indexes of every server compared, whose units ran side by side in time."""
    draw = random.Random(0)
    values = sorted(
        statistic([draw.randrange(count) for _ in range(count)]) for _ in range(_BOOTSTRAP)
    )
    return (
        statistic(range(count)),
        values[int(0.025 * _BOOTSTRAP)],
        values[int(0.975 * _BOOTSTRAP) - 1],
    )


def _capacity_interval(
    blocks: Sequence[Block], base: Sequence[Block]
) -> tuple[float, float, float]:
    """Requests/s at capacity over the baseline's (the baseline's CPU per request over
    this server's), and a 95% bootstrap interval over the blocks."""
    return _bootstrap(
        len(blocks),
        lambda picked: (
            _totals([base[i] for i in picked])[1] / _totals([blocks[i] for i in picked])[1]
        ),
    )


def _p99_ratio(
    runs: Sequence[Sequence[float]], base: Sequence[Sequence[float]]
) -> tuple[float, float, float]:
    """Pooled p99 over the baseline's pooled p99, and a 95% bootstrap interval over the
    rounds (each round ran beside the baseline's)."""
    return _bootstrap(
        len(runs),
        lambda picked: (
            percentile([x for i in picked for x in runs[i]], 0.99)
            / percentile([x for i in picked for x in base[i]], 0.99)
        ),
    )


def _round_p99_ratio(
    runs: Sequence[Sequence[float]], base: Sequence[Sequence[float]]
) -> tuple[float, float, float]:
    """The median over rounds of each round's p99 over the baseline's p99 in the same
    cycle, and a 95% bootstrap interval of that median: a stall of the host in one round
    moves one ratio of many, where it can set the pooled p99 of every request."""
    ratios = [
        percentile(run, 0.99) / percentile(other, 0.99)
        for run, other in zip(runs, base, strict=True)
    ]
    return _bootstrap(len(ratios), lambda picked: statistics.median(ratios[i] for i in picked))


def _undisturbed(run: Paced, stops: Iterable[tuple[float, float]]) -> list[float]:
    """The latencies of ``run``'s requests that no stop disturbed. ``stops``: (began, ended)
    on the load generator's clock, of the host (the sentinel's stalls) or of the server
    (its full collections). A stop disturbs every request in flight while it lasts, and
    those due while the server catches up on the requests it held after it: at half load,
    about as long again (a backlog drains at the rate the load leaves spare)."""
    merged: list[list[float]] = []
    for began, ended in sorted((b, e + (e - b)) for b, e in stops):
        if merged and began <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], ended)
        else:
            merged.append([began, ended])
    ends = [ended for _, ended in merged]
    kept = []
    for due, latency in zip(run.scheduled, run.latencies, strict=True):
        # Only the first window that ends after the request was due needs a look: the
        # windows are apart and in order, so any later one begins later still.
        k = bisect.bisect_right(ends, due)
        if k == len(merged) or merged[k][0] >= due + latency:
            kept.append(latency)
    return kept


def _ratio_cell(added: Added) -> str:
    ratio, low, high = (1 + x / 100 for x in added)
    return f"{ratio:.3f} ({low:.2f}-{high:.2f}), {added.percent:+.1f}%"


def _added(ratio: tuple[float, float, float]) -> Added:
    return Added(*((x - 1) * 100 for x in ratio))


def _latency_rows(
    latencies: dict[str, list[Paced]],
    reports: dict[str, dict[str, Any]],
    stalls: Sequence[tuple[float, float]],
    round_cpu: dict[str, list[float]],
) -> tuple[list[list[str]], dict[str, P99Added]]:
    """Table rows of the fixed-load phase, and per configuration the p99 added: of all
    requests, of the undisturbed ones (no stall of the host, none of its own full
    collections), and the median of the rounds'."""
    runs = {config: [run.latencies for run in rounds] for config, rounds in latencies.items()}
    # Each server's stops: the host's stalls (every server's) and its own full collections.
    stops = {
        config: [
            *stalls,
            *(
                (ended - lasted, ended)
                for ended, lasted in reports[config]["paced_full_collections"]
            ),
        ]
        for config in latencies
    }
    undisturbed = {
        config: [_undisturbed(run, stops[config]) for run in rounds]
        for config, rounds in latencies.items()
    }
    rows: list[list[str]] = []
    added: dict[str, P99Added] = {}
    for config in latencies:
        pooled = [latency for run in runs[config] for latency in run]
        kept = [latency for run in undisturbed[config] for latency in run]
        added[config] = P99Added(
            _added(_p99_ratio(runs[config], runs["otel"])),
            _added(_p99_ratio(undisturbed[config], undisturbed["otel"])),
            _added(_round_p99_ratio(runs[config], runs["otel"])),
        )
        waits = reports[config]["paced_waits"]
        pauses = [lasted for _, lasted in reports[config]["paced_full_collections"]]
        baseline = config == "otel"
        rows.append(
            [
                LABELS[config],
                f"{len(pooled):,}",
                *(f"{percentile(pooled, q) * 1e3:.2f}" for q in (0.5, 0.9, 0.99, 0.999)),
                "" if baseline else _ratio_cell(added[config].pooled),
                "" if baseline else _ratio_cell(added[config].median),
                f"{percentile(kept, 0.99) * 1e3:.2f} ({1 - len(kept) / len(pooled):.1%})",
                "" if baseline else _ratio_cell(added[config].undisturbed),
                *(f"{percentile(waits, q) * 1e3:.2f}" if waits else "—" for q in (0.99, 0.999)),
                f"{len(pauses)}, {statistics.median(pauses) * 1e3:.0f} / {max(pauses) * 1e3:.0f}"
                if pauses
                else "0",
                f"{reports[config]['tracked']:,}",
                _speed_cell(round_cpu[config]),
            ]
        )
    return rows, added


def _speed_cell(cpu_per_request: Sequence[float]) -> str:
    """Median / max of a server's CPU per request over its rounds, and how many rounds ran
    at SLOW_ROUND times the median or more."""
    median = statistics.median(cpu_per_request)
    slow = sum(cpu >= SLOW_ROUND * median for cpu in cpu_per_request)
    return f"{median * 1e3:.2f} / {max(cpu_per_request) * 1e3:.2f} ({slow})"


def _cycles(text: str) -> int:
    """At least 2 cycles: the intervals resample them."""
    count = int(text)
    if count < 2:
        raise argparse.ArgumentTypeError(f"at least 2 cycles, not {count}")
    return count


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--watch", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cycles",
        type=_cycles,
        help=f"the fixed-load phase's cycles (default {FIXED_CYCLES}): its p99 intervals "
        "narrow as the square root of the cycles, about 6 s of the server CPU each",
    )
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="every server calls gc.freeze() once set up, as docs/deployment.md advises "
        "(never rewrites docs/performance.md)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], json.loads(args.serve[1]))
        return
    if args.watch is not None:
        watch(args.watch)
        return
    args.no_write = args.no_write or args.freeze
    finish(run(args.quick, args.freeze, args.cycles), args)


if __name__ == "__main__":
    main()
