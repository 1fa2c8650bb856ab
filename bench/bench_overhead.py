"""What the application pays for otelcost: process CPU per span, and time on the ending thread.

Every setup creates and ends the same server span (4 attributes, service ``checkout``) on
its own TracerProvider whose user processor is a BatchSpanProcessor with a no-op
SpanExporter. Setups (performance targets, process CPU over the first one):

- ``bsp``: that BatchSpanProcessor alone — the baseline, what tracing already costs;
- ``enrich``: + ``otelcost.install(...)`` with no cost exporter (spans enriched only), ≤ 1.10x;
- ``budgets``: + RedisBudgetExporter (private redis-server) and MetricsCostExporter, ≤ 1.15x;
- ``kafka``: + KafkaCostExporter (private Tansu broker), per-span records, ≤ 1.35x.

Each setup lives in its own worker process (so one setup's threads never run inside
another's timed region), all pinned to one CPU; redis-server and the broker are pinned to
the other. Its provider is built once and reused by every round (steady state: memos hit,
threads started). The coordinator runs rounds, each setup once per round in an order that
rotates, and takes per-round ratios to the baseline of the same round:

1. Process CPU (``time.process_time``: every thread of the worker — pricing, export,
   the BatchSpanProcessor's worker, librdkafka) to create and end N spans followed by
   ``provider.force_flush()`` inside the timed region, so deferred work is counted.
2. Ending thread: ``span.end()`` alone, timed span by span with the thread's CPU clock
   (and the wall clock for comparison), in bursts of 400 spans after a flush. Thread CPU is
   the headline because on a shared machine the wall clock's p99 is set by other jobs
   preempting the thread; a wait for the GIL or a lock held by a background thread does not
   show in it, which is what the end-to-end latency bench (bench_e2e) measures.

The install is "in place" (user's BatchSpanProcessor registered on the provider, install()
without ``span_exporter=``) when that yields priced spans; otherwise the copy-based path
(``span_exporter=``), which the report names.

Run ``python -m bench.bench_overhead [--quick]``; it rewrites the ``overhead`` section of
docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

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

ROOT = Path(__file__).resolve().parent.parent
PRICING = {
    "version": "bench-overhead",
    "currency": "USD",
    "prices": {
        "checkout:GET /users/{id}": {"per_ms": 2.1e-6, "per_request": 1e-6},
        "*:*": {"per_ms": 5e-7},
    },
}
NAME = "GET /users/{id}"
ATTRIBUTES = {
    "http.request.method": "GET",
    "http.route": "/users/{id}",
    "url.path": "/users/123",
    "http.response.status_code": 200,
}
TWIN = "bsp-twin"  # the baseline again in a process of its own: the A/A control
BASELINES = ("bsp", TWIN)
SETUPS = ("bsp", TWIN, "enrich", "enrich-py", "budgets", "kafka")
LABELS = {
    "bsp": "BatchSpanProcessor(no-op exporter) alone (baseline)",
    TWIN: "the same in a second process (A/A control)",
    "enrich": "+ `otelcost.install(...)`, no cost exporter (spans enriched only)",
    "enrich-py": "+ the same in pure Python (`OTELCOST_PURE_PYTHON=1`: no compiled planner)",
    "budgets": "+ install + RedisBudgetExporter + MetricsCostExporter",
    "kafka": "+ install + KafkaCostExporter (per-span records)",
}
TARGETS = {"enrich": 1.10, "budgets": 1.15, "kafka": 1.35}
BURST = 400  # below the BatchSpanProcessor's 512-span wake-up
# Worker processes per setup in a full run. One process's memory layout (the addresses that
# decide which lookups collide in the interpreter's type attribute cache) moves its CPU per
# span by a few percent for as long as it lives: four baseline processes measured in the
# same rounds read 11.16-11.52 µs/span, four enriched ones 12.47-12.70, so one pair's ratio
# could read anything from 1.08x to 1.14x. Each round sums every process of a setup.
REPLICAS = 3
P50_TARGET_US, P99_TARGET_US = 5.0, 20.0


# -- worker side (one process per setup) ----------------------------------------------------


class _Setup:
    """One TracerProvider configuration, built once and measured round after round."""

    def __init__(self, setup: str, params: dict[str, Any]) -> None:
        from opentelemetry.trace import SpanKind

        self.kind = SpanKind.SERVER
        self.path = "none"
        self.processor: Any = None
        if setup in BASELINES:
            self.provider, self.spans = self._provider(user_bsp=True)
        else:
            self._install(setup, params)
        self.tracer = self.provider.get_tracer("bench")

    @staticmethod
    def _provider(*, user_bsp: bool) -> tuple[Any, Any]:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from bench._support import NoopSpanExporter

        provider = TracerProvider(
            resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False
        )
        spans = NoopSpanExporter()
        if user_bsp:
            provider.add_span_processor(BatchSpanProcessor(spans))
        return provider, spans

    def _install(self, setup: str, params: dict[str, Any]) -> None:
        """In place if this otelcost prices spans for processors already on the provider,
        else the copy-based path (the user's exporter through ``span_exporter=``)."""
        import otelcost

        for in_place in (True, False):
            provider, spans = self._provider(user_bsp=in_place)
            processor = otelcost.install(
                PRICING,
                exporters=_cost_exporters(setup, params),
                span_exporter=None if in_place else spans,
                tracer_provider=provider,
            )
            spans.inspect = True
            provider.get_tracer("probe").start_span(
                NAME, kind=self.kind, attributes=ATTRIBUTES
            ).end()
            provider.force_flush(30_000)
            spans.inspect = False
            if spans.priced:
                self.provider, self.spans, self.processor = provider, spans, processor
                stats = processor.stats()
                named = stats.get("pricing_path")  # newer otelcost names it
                self.path = named or ("in place" if in_place else "copy (span_exporter=)")
                if "compiled" in stats:
                    self.path += " (compiled)" if stats["compiled"] else " (pure Python)"
                return
            provider.shutdown()
        raise RuntimeError("the user's span exporter never received a priced span")

    def cpu_round(self, spans: int) -> tuple[int, int, int]:
        """Process CPU ns to create and end ``spans`` spans and flush everything, the part
        of it on this (the ending) thread, and how many spans the user's exporter did not
        receive (its BatchSpanProcessor's queue of 2,048 overflowed)."""
        start_span, kind = self.tracer.start_span, self.kind
        self.provider.force_flush(60_000)  # what earlier rounds left: not this round's
        exported = self.spans.exported
        gc.collect()
        started, own = time.process_time_ns(), time.thread_time_ns()
        for _ in range(spans):
            start_span(NAME, kind=kind, attributes=ATTRIBUTES).end()
        self.provider.force_flush(60_000)
        cpu, own = time.process_time_ns() - started, time.thread_time_ns() - own
        return cpu, own, spans - (self.spans.exported - exported)

    def end_round(self, spans: int) -> list[tuple[int, int]]:
        """(thread CPU ns, wall ns) of each ``span.end()`` in a burst that starts idle."""
        start_span, kind = self.tracer.start_span, self.kind
        cpu, wall = time.thread_time_ns, time.perf_counter_ns
        self.provider.force_flush(60_000)
        gc.collect()
        samples = []
        for _ in range(spans):
            span = start_span(NAME, kind=kind, attributes=ATTRIBUTES)
            w0 = wall()
            c0 = cpu()
            span.end()
            c1 = cpu()
            w1 = wall()
            samples.append((c1 - c0, w1 - w0))
        return samples

    def check(self) -> dict[str, Any]:
        """One inspected round: every span reaches the user's exporter, priced (not timed)."""
        self.provider.force_flush(60_000)
        self.spans.inspect = True
        exported, priced = self.spans.exported, self.spans.priced
        count = 1_000
        for _ in range(count):
            self.tracer.start_span(NAME, kind=self.kind, attributes=ATTRIBUTES).end()
        self.provider.force_flush(60_000)
        report: dict[str, Any] = {
            "path": self.path,
            "ended": count,
            "exported": self.spans.exported - exported,
            "priced": self.spans.priced - priced,
        }
        if self.processor is not None:
            stats = self.processor.stats()
            report["dropped"] = stats.get("spans_dropped", 0) + stats.get("records_dropped", 0)
            report["export_failures"] = stats.get("export_failures", 0)
        return report


def _cost_exporters(setup: str, params: dict[str, Any]) -> list[Any]:
    """Each setup imports what its own exporters need, as an application would: every
    module loaded stays in the heap that each full garbage collection traverses, at a cost
    in CPU per span (the enrich setup once paid for the Kafka and Redis exporters'
    modules, ssl among them, that it never used)."""
    if setup in ("enrich", "enrich-py"):
        return []
    if setup == "budgets":
        from bench._support import noop_meter_provider
        from otelcost.budget import Budget
        from otelcost.exporters import MetricsCostExporter, RedisBudgetExporter

        return [
            RedisBudgetExporter(params["redis_url"], [Budget("*", 1_000_000.0, "24h")]),
            MetricsCostExporter(noop_meter_provider()),
        ]
    if setup == "kafka":
        from otelcost.exporters import KafkaCostExporter

        return [KafkaCostExporter(params["bootstrap"], params["topic"])]
    raise ValueError(setup)


def worker(setup: str, params: dict[str, Any]) -> None:
    """Build ``setup``, then answer one JSON line per command line on standard input."""
    if params.get("cpu") is not None:
        os.sched_setaffinity(0, {params["cpu"]})  # before any thread starts: all inherit it
    for name in [n for n in os.environ if n.startswith("OTELCOST_")]:
        del os.environ[name]  # only what the setup names
    if setup == "enrich-py":
        os.environ["OTELCOST_PURE_PYTHON"] = "1"
    built = _Setup(setup, params)
    commands: dict[str, Callable[[int], object]] = {
        "cpu": built.cpu_round,
        "end": built.end_round,
        "check": lambda _: built.check(),
    }
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        name, arg = line.split()
        print(json.dumps(commands[name](int(arg))), flush=True)
    built.provider.shutdown()


# -- coordinator ------------------------------------------------------------------------------


class _Worker:
    def __init__(self, setup: str, params: dict[str, Any], cpu: int | None) -> None:
        self.setup = setup
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_overhead",
                "--worker",
                setup,
                json.dumps({**params, "cpu": cpu}),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, name: str, arg: int = 0) -> Any:
        stdin: IO[str] | None = self.proc.stdin
        if name:
            assert stdin is not None
            stdin.write(f"{name} {arg}\n")
            stdin.flush()
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.setup} exited with {self.proc.wait()}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_Key = TypeVar("_Key")


def _interleaved(
    workers: dict[_Key, _Worker], rounds: int, ask: Callable[[_Worker], Any]
) -> dict[_Key, list[Any]]:
    """Every setup once per round, the order rotating, so load hits them alike."""
    names = list(workers)
    samples: dict[_Key, list[Any]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(ask(workers[name]))
    return samples


def run(quick: bool) -> Result:
    rounds, spans = (6, 2_000) if quick else (30, 10_000)
    end_rounds = 5 if quick else 30
    replicas = 1 if quick else REPLICAS
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, worker_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    from bench._support import backends

    with backends(server_cpu, "bench-overhead") as servers:
        setups = [
            s
            for s in SETUPS
            if s in (*BASELINES, "enrich", "enrich-py") or isinstance(servers, dict)
        ]
        params = servers if isinstance(servers, dict) else {}
        workers = {(s, i): _Worker(s, params, worker_cpu) for i in range(replicas) for s in setups}
        try:
            for w in workers.values():
                w.ask("")  # ready
            for w in workers.values():  # warm up: memos, connections, lazy imports
                w.ask("cpu", spans // 4)
                w.ask("end", BURST)
            cpu_by = _interleaved(workers, rounds, lambda w: w.ask("cpu", spans))
            ends_by = _interleaved(workers, end_rounds, lambda w: w.ask("end", BURST))
            checks_by = {key: w.ask("check", 0) for key, w in workers.items()}
        finally:
            for w in workers.values():
                w.close()
    each = {s: [(s, i) for i in range(replicas)] for s in setups}
    return _result(
        quick=quick,
        rounds=rounds,
        spans=spans,
        end_rounds=end_rounds,
        cpu={
            s: [_summed(cpu_by[key][r] for key in keys) for r in range(rounds)]
            for s, keys in each.items()
        },
        ends={s: [burst for key in keys for burst in ends_by[key]] for s, keys in each.items()},
        checks={s: _merged([checks_by[key] for key in keys]) for s, keys in each.items()},
        missing=servers if isinstance(servers, str) else "",
        replicas=replicas,
    )


def _summed(samples: Any) -> tuple[int, int, int]:
    """One round of a setup: its processes' (process CPU, ending thread, missed) added."""
    cpu = own = missed = 0
    for c, o, m in samples:
        cpu, own, missed = cpu + c, own + o, missed + m
    return cpu, own, missed


def _merged(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """A setup's processes' checks: their counts added, the pricing path of the first."""
    merged = dict(checks[0])
    for check in checks[1:]:
        for key, value in check.items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    return merged


def _result(
    *,
    quick: bool,
    rounds: int,
    spans: int,
    end_rounds: int,
    cpu: dict[str, list[tuple[int, int, int]]],
    ends: dict[str, list[list[list[int]]]],
    checks: dict[str, dict[str, Any]],
    missing: str,
    replicas: int = 1,
) -> Result:
    base = [cpu_ns for cpu_ns, _, _ in cpu["bsp"]]
    twin = quartiles(
        [t / b for (t, _, _), b in zip(cpu[TWIN], base, strict=True)] if TWIN in cpu else [1.0]
    )[1]
    metrics: list[Metric] = []
    cpu_rows = []
    for name, measured in cpu.items():
        runs = [cpu_ns for cpu_ns, _, _ in measured]
        missed = sum(lost for _, _, lost in measured)
        per_span = statistics.median(runs) / (spans * replicas) / 1e3
        ending = statistics.median(own for _, own, _ in measured) / (spans * replicas) / 1e3
        ratios = [r / b for r, b in zip(runs, base, strict=True)]
        q1, ratio, q3 = quartiles(ratios)
        target = TARGETS.get(name)
        check = checks[name]
        lost = check.get("dropped", 0) + check.get("export_failures", 0)
        verdict = "" if target is None else ("met" if ratio <= target else "**missed**")
        cpu_rows.append(
            [
                LABELS[name],
                f"{per_span:.1f} ({ending:.1f})",
                f"{ratio:.3f} ({q1:.3f}-{q3:.3f})",
                "—" if target is None else f"≤ {target:.2f}x",
                verdict,
                f"{missed:,}",
                f"{check['priced']:,} of {check['exported']:,} of {check['ended']:,}"
                + (f", **{lost:,} dropped or failed**" if lost else ""),
            ]
        )
        if target is not None:
            metrics.append(
                Metric(
                    f"Process CPU per span over BatchSpanProcessor alone: {LABELS[name][2:]}",
                    ratio,
                    "x",
                    target=target,
                    vs_baseline=f"{per_span:.1f} vs "
                    f"{statistics.median(base) / (spans * replicas) / 1e3:.1f}"
                    f" µs/span; IQR of per-round ratios {q1:.3f}-{q3:.3f}; A/A control "
                    f"{twin:.3f}",
                    fmt=".3f",
                )
            )

    def pooled(name: str, clock: int) -> list[int]:
        return [sample[clock] for burst in ends[name] for sample in burst]

    base_cpu, base_wall = pooled("bsp", 0), pooled("bsp", 1)
    end_rows = []
    worst: dict[float, tuple[float, str]] = {0.5: (-1e9, ""), 0.99: (-1e9, "")}
    for name in ends:
        own_cpu, own_wall = pooled(name, 0), pooled(name, 1)
        cells = [LABELS[name]]
        for q in (0.5, 0.99):
            value = percentile(own_cpu, q) / 1e3
            added = value - percentile(base_cpu, q) / 1e3
            cells.append(f"{value:.2f}" + ("" if name == "bsp" else f" ({added:+.2f})"))
            if name not in BASELINES and added > worst[q][0]:
                worst[q] = (added, name)
        for q in (0.5, 0.99):
            value = percentile(own_wall, q) / 1e3
            added = value - percentile(base_wall, q) / 1e3
            cells.append(f"{value:.2f}" + ("" if name == "bsp" else f" ({added:+.2f})"))
        end_rows.append(cells)
    for q, target, label in ((0.5, P50_TARGET_US, "p50"), (0.99, P99_TARGET_US, "p99")):
        added, name = worst[q]
        metrics.append(
            Metric(
                f"Ending thread: added per span.end(), {label} (memo hit)",
                added,
                "µs",
                target=target,
                vs_baseline=f"worst setup: {name} (thread CPU); "
                f"baseline {percentile(base_cpu, q) / 1e3:.2f} µs",
                fmt="+.2f",
            )
        )
    paths = sorted({c["path"] for n, c in checks.items() if n not in BASELINES})
    left_out = (
        f" Left out (servers unavailable): Redis and Kafka setups — {missing}." if missing else ""
    )
    body = "\n".join(
        [
            "## What the application pays: process CPU per span and the ending thread",
            "",
            f"{command('bench_overhead', quick)} — {environment()}. "
            f"otelcost pricing path: {', '.join(paths)}.{left_out}",
            "",
            "Create and end a server span with 4 attributes on a TracerProvider whose user "
            "processor is a BatchSpanProcessor with a no-op exporter. Each setup in "
            f"{_processes(replicas)} (provider built once, memos warm), all workers pinned "
            "to one CPU, redis-server and the Tansu broker to the other. "
            f"{rounds} interleaved rounds (order rotating) of {spans:,} spans per process; "
            "process CPU (all threads) with `force_flush()` inside the timed region, a "
            "setup's processes added; ratio = this setup's CPU / the baseline's in the same "
            "round, median and IQR over rounds. Two processes of the same code differ by "
            "their memory layout (addresses, hash seeds; it decides, among others, which "
            "attribute lookups collide in the interpreter's type cache), which moves CPU "
            "per span by a few percent for the life of a process: hence several processes "
            "per setup. The A/A control is a second baseline (as many processes): its "
            "ratio shows how far the method reads a difference where there is none. "
            "Missed spans: the user's BatchSpanProcessor "
            "(SDK defaults: queue of 2,048) dropped them because its worker fell behind the "
            "burst.",
            "",
            table(
                [
                    "setup",
                    "process CPU µs/span, median (of which ending thread)",
                    "vs baseline (IQR of per-round ratios)",
                    "target",
                    "status",
                    "spans the user's exporter missed in timed rounds",
                    "priced of exported of ended (1,000-span check in each process)",
                ],
                cpu_rows,
            ),
            "",
            "### Ending thread: `span.end()`",
            "",
            f"{end_rounds} interleaved rounds of {BURST}-span bursts per process, each burst "
            "after a flush (workers idle); `span.end()` alone timed by the ending thread's "
            "CPU clock (`time.thread_time_ns`) and by the wall clock (`perf_counter_ns`), "
            "percentiles over all spans of all rounds, added = minus the baseline's same "
            "percentile. Same span every time, so every memo hits. Thread CPU is the "
            "measure held to the target: the wall clock's tail on this shared machine is "
            "other jobs preempting the thread, and waits for the GIL or a lock held by "
            "another thread show in the end-to-end latency instead (bench_e2e).",
            "",
            table(
                [
                    "setup",
                    "thread CPU p50 µs (added)",
                    "thread CPU p99 µs (added)",
                    "wall p50 µs (added)",
                    "wall p99 µs (added)",
                ],
                end_rows,
            ),
            "",
            f"Targets: ≤ {P50_TARGET_US:g} µs added at p50, ≤ {P99_TARGET_US:g} µs at p99.",
        ]
    )
    return Result("overhead", body, metrics)


def _processes(replicas: int) -> str:
    return "its own worker process" if replicas == 1 else f"{replicas} worker processes"


def profile(setup: str, spans: int = 20_000) -> None:
    """Where one setup's process CPU goes: cProfile of the ending thread over a round
    (the part otelcost runs there: hook, pricing, sums) and the CPU of each thread.

    cProfile inflates every Python call, so read the split, not the absolute times.
    """
    import cProfile
    import pstats
    import threading

    from bench._support import backends

    with backends(None, "bench-overhead") as servers:
        built = _Setup(setup, servers if isinstance(servers, dict) else {})
        built.cpu_round(spans)  # warm up
        before = _threads_cpu()
        profiler = cProfile.Profile()
        profiler.enable()
        built.cpu_round(spans)
        profiler.disable()
        after = _threads_cpu()
        names = {t.native_id: t.name for t in threading.enumerate()}
        built.provider.shutdown()
    print(f"CPU µs/span by thread ({setup}, {built.path}, profiled):")
    for tid, cpu in sorted(after.items(), key=lambda item: -item[1]):
        used = cpu - before.get(tid, 0.0)
        if used > 0:
            print(f"  {names.get(tid, f'native thread {tid}')}: {used / spans * 1e6:.1f}")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def _threads_cpu() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native id (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        used[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return used


def main(argv: Sequence[str] | None = None) -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        choices=SETUPS,
        help="instead of the benchmark: where one setup's CPU goes (cProfile, per thread)",
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]))
        return
    if args.profile:
        profile(args.profile)
        return
    finish(run(args.quick), args)


if __name__ == "__main__":
    main()
