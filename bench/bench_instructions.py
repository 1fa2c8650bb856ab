"""Instructions per span and per request: the overhead and end-to-end setups under callgrind.

On a shared 2-CPU machine the process-CPU ratios of bench_overhead and bench_e2e spread
over ±10-20% per round, more than the differences they are meant to show. Instructions
executed are what that load changes least: ``valgrind --tool=callgrind`` counts them for
every thread of a process, the same for the same program and input whatever else the
machine is doing (within the background threads' timing: see below). They miss what
instructions do not show (cache misses, GIL and context switches), so this complements
the CPU ratios, it does not replace them.

1. Per span: each of bench_overhead's setups (its ``_Setup``: the same provider, span and
   exporters, Redis and Kafka on private servers) in a process of its own under callgrind,
   once creating and ending SMALL spans and once LARGE (after the same warm-up, flushed
   each time); instructions per span = the difference of the two totals / (LARGE - SMALL),
   so start-up and shut-down cancel. The background threads' share moves by timing (which
   batch a flush catches), about 1k instructions per span between runs with 3,000 spans
   apart; the 10,000 apart here keep it a few hundred.
2. Per request: bench_e2e's server (``--serve``) under callgrind, answering SMALL_REQUESTS
   and then LARGE_REQUESTS requests from the same mix (90% ``/users/<id>`` with distinct
   ids, 10% ``/health``) sent one after the other on one keep-alive connection.

Needs valgrind; without it the section says so. Run ``python -m bench.bench_instructions
[--quick]``; a full run rewrites the ``instructions`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import _support
from bench._report import Metric, Result, bench_parser, command, environment, finish, table

ROOT = Path(__file__).resolve().parent.parent
SMALL, LARGE = 2_000, 12_000
SMALL_REQUESTS, LARGE_REQUESTS = 500, 2_500
WARM = 500
E2E_CONFIGS = ("otel", "otelcost", "otelcost-all")


# -- worker side (a process of its own, under callgrind) -------------------------------------


def work_spans(setup: str, spans: int, params: dict[str, Any]) -> None:
    """bench_overhead's ``setup``: warm up, then create, end and flush ``spans`` spans."""
    from bench.bench_overhead import _Setup

    for name in [n for n in os.environ if n.startswith("OTELCOST_")]:
        del os.environ[name]
    if setup == "enrich-py":
        os.environ["OTELCOST_PURE_PYTHON"] = "1"
    built = _Setup(setup, params)
    built.cpu_round(WARM)
    built.cpu_round(spans)
    built.provider.shutdown()


# -- coordinator ------------------------------------------------------------------------------


def _callgrind(argv: list[str], out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _total(out: Path) -> int:
    """The instructions callgrind counted (every thread)."""
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def _spans_run(setup: str, spans: int, params: dict[str, Any], out: Path) -> int:
    argv = [sys.executable, "-m", "bench.bench_instructions", "--worker", setup, str(spans)]
    proc = _callgrind([*argv, json.dumps(params)], out)
    _, _ = proc.communicate(timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{setup} ({spans} spans) exited with {proc.returncode}")
    return _total(out)


def _requests_run(config: str, count: int, params: dict[str, Any], out: Path) -> int:
    from bench.bench_e2e import _complete, _connect, _requests

    argv = [sys.executable, "-m", "bench.bench_e2e", "--serve", config, json.dumps(params)]
    proc = _callgrind(argv, out)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        sock = _connect(port)
        sock.settimeout(300)
        try:
            for request in _requests(count):
                sock.sendall(request)
                buffer = b""
                while not _complete(buffer):
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise RuntimeError(f"{config}: the server closed the connection")
                    buffer += chunk
        finally:
            sock.close()
        stdout, _ = proc.communicate("[]", timeout=1800)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads(stdout.strip().splitlines()[-1])
    if proc.returncode != 0 or report["requests"] != count:
        raise RuntimeError(f"{config}: exit {proc.returncode}, {report}")
    if report.get("dropped") or report.get("export_failures"):
        raise RuntimeError(f"{config}: spans dropped or failed: {report}")
    return _total(out)


def run(quick: bool) -> Result:
    if shutil.which("valgrind") is None:
        body = "## Instructions per span and per request (callgrind)\n\nvalgrind is not installed."
        return Result("instructions", body, [])
    from bench.bench_e2e import LABELS as E2E_LABELS
    from bench.bench_overhead import LABELS as SPAN_LABELS
    from bench.bench_overhead import SETUPS, TARGETS

    # --quick (CI's smoke run): two setups, two configurations, a few hundred of each.
    small, large = (200, 700) if quick else (SMALL, LARGE)
    small_requests, large_requests = (100, 300) if quick else (SMALL_REQUESTS, LARGE_REQUESTS)
    cpus = sorted(os.sched_getaffinity(0))
    with (
        _support.backends(cpus[0], "bench-instructions") as servers,
        tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp,
    ):
        params = servers if isinstance(servers, dict) else {}
        setups = [s for s in SETUPS if s in ("bsp", "enrich", "enrich-py") or params]
        configs = [c for c in E2E_CONFIGS if c != "otelcost-all" or params]
        if quick:
            setups, configs = ["bsp", "enrich"], ["otel", "otelcost"]
        jobs: list[tuple[str, str, int]] = [
            *(("span", s, n) for s in setups for n in (small, large)),
            *(("request", c, n) for c in configs for n in (small_requests, large_requests)),
        ]

        def one(job: tuple[str, str, int]) -> int:
            kind, name, count = job
            out = Path(tmp) / f"{kind}.{name}.{count}.out"
            if kind == "span":
                return _spans_run(name, count, params, out)
            return _requests_run(name, count, {**params, "cpu": cpus[-1]}, out)

        # Instructions do not depend on what else runs: one job per CPU at a time.
        with ThreadPoolExecutor(max_workers=len(cpus)) as pool:
            totals = dict(zip(jobs, pool.map(one, jobs), strict=True))

    per_span = {
        s: (totals["span", s, large] - totals["span", s, small]) / (large - small) for s in setups
    }
    per_request = {
        c: (totals["request", c, large_requests] - totals["request", c, small_requests])
        / (large_requests - small_requests)
        for c in configs
    }
    base, base_request = per_span["bsp"], per_request["otel"]
    span_rows = [
        [
            SPAN_LABELS[s],
            f"{per_span[s] / 1e3:,.1f}k",
            f"{per_span[s] - base:+,.0f}" if s != "bsp" else "",
            f"{per_span[s] / base:.3f}",
            f"≤ {TARGETS[s]:.2f}x" if s in TARGETS else "—",
        ]
        for s in setups
    ]
    request_rows = [
        [
            E2E_LABELS[c],
            f"{per_request[c] / 1e3:,.1f}k",
            f"{per_request[c] - base_request:+,.0f}" if c != "otel" else "",
            f"{per_request[c] / base_request:.3f}",
        ]
        for c in configs
    ]
    missing = "" if params else f" Redis and Kafka setups left out: {servers}."
    body = "\n".join(
        [
            "## Instructions per span and per request (callgrind)",
            "",
            f"{command('bench_instructions', quick)} — {environment()}.{missing}",
            "Every thread of the process, counted by `valgrind --tool=callgrind`: what the "
            "machine's load changes least (the process CPU ratios above spread more per round "
            "than the differences they show), though it misses cache misses and GIL "
            f"switches. Per span: bench_overhead's setups, {large:,} minus {small:,} spans "
            f"(after {WARM} to warm up, flushed each time). Per request: bench_e2e's server, "
            f"{large_requests:,} minus {small_requests:,} requests of its mix, one after the "
            "other on one keep-alive connection.",
            "",
            table(
                ["setup", "instructions per span", "added", "vs baseline", "CPU target"],
                span_rows,
            ),
            "",
            table(
                ["configuration", "instructions per request", "added", "vs baseline"],
                request_rows,
            ),
        ]
    )
    metrics = [
        Metric(
            f"Instructions per span over BatchSpanProcessor alone: {SPAN_LABELS[s][2:]}",
            per_span[s] / base,
            "x",
            target=TARGETS[s],
            vs_baseline=f"{per_span[s] / 1e3:,.1f}k vs {base / 1e3:,.1f}k (callgrind; the "
            "target is on process CPU)",
            fmt=".3f",
        )
        for s in setups
        if s in TARGETS
    ]
    headline = configs[-1]
    metrics.append(
        Metric(
            "End to end: instructions per request added by otelcost, "
            + ("all exporters on" if headline == "otelcost-all" else "embedded exporters"),
            (per_request[headline] / base_request - 1) * 100,
            "%",
            vs_baseline=f"{per_request[headline] - base_request:+,.0f} instructions per request "
            f"over {base_request / 1e3:,.0f}k",
            fmt="+.1f",
        )
    )
    return Result("instructions", body, metrics)


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        setup, spans, params = args.worker
        work_spans(setup, int(spans), json.loads(params))
        return
    finish(run(args.quick), args)


if __name__ == "__main__":
    main()
