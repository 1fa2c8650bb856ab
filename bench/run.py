"""Run every benchmark, each against its baseline in the same run, and summarize the targets.

    python -m bench                  # full run (10+ minutes), rewrites docs/performance.md
    python -m bench --quick          # smoke run, under 2 minutes: prints, never writes the doc
    python -m bench --only e2e memory --no-write

Each script runs in its own subprocess (``python -m bench.bench_X --no-write --result
FILE``) so no benchmark inherits another's threads, memos or heap. The runner prints a
table of every headline number against its performance target and, on a full run,
rewrites each script's section of docs/performance.md and the ``summary`` section at its
top. A missed target does not fail the run (the numbers depend on the machine); a
benchmark that crashes does (exit status 1), after the others have run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench._report import Metric, Result, environment, table, write_section

ROOT = Path(__file__).resolve().parent.parent
# Micro-benchmarks first (they want a quiet process), servers last.
SCRIPTS = (
    "bench_pricing",
    "bench_normalize",
    "bench_overhead",
    "bench_e2e",
    "bench_budget",
    "bench_kafka",
    "bench_rollup",
    "bench_memory",
)
_TAIL_LINES = 30


def _run_one(script: str, quick: bool, timeout: float) -> tuple[Result | None, float, str]:
    """Run one script; its Result (None if it failed), seconds taken and its output tail."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        result_path = Path(tmp) / "result.json"
        argv = [sys.executable, "-m", f"bench.{script}", "--no-write", "--result", str(result_path)]
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [*argv, *(["--quick"] if quick else [])],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - started, f"timed out after {timeout:.0f} s"
        elapsed = time.monotonic() - started
        output = "\n".join((proc.stdout + proc.stderr).splitlines()[-_TAIL_LINES:])
        if proc.returncode != 0 or not result_path.exists():
            return None, elapsed, f"exit status {proc.returncode}\n{output}"
        return Result.from_json(result_path.read_text()), elapsed, output


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


_UNRESOLVED = (
    " A status *not resolved*: the row's A/A control, two identical processes measured the "
    "same way in the same run, could read further apart than the target allows (its 95% "
    "interval reaches past the target), so this run cannot tell whether otelcost meets it."
)


def summary(
    results: dict[str, Result | None], seconds: dict[str, float], quick: bool, load: str
) -> str:
    """The ``summary`` section: one row per headline number, with target and verdict."""
    rows = []
    metrics: list[Metric] = []
    for script, result in results.items():
        if result is None:
            rows.append([f"`{script}` failed", "—", "—", "—", "**error**"])
            continue
        metrics.extend(result.metrics)
        for metric in result.metrics:
            rows.append(
                [
                    metric.name,
                    metric.measured_text(),
                    metric.target_text(),
                    metric.vs_baseline,
                    metric.status(),
                ]
            )
    total = sum(seconds.values())
    took = ", ".join(f"{script.removeprefix('bench_')} {s:.0f} s" for script, s in seconds.items())
    return "\n".join(
        [
            "## Summary: the performance targets (issues 7, 13 and 14)",
            "",
            f"`python -m bench{' --quick' if quick else ''}` — {environment()}. "
            f"Load average at the start {load}: the machine's 2 CPUs were shared with "
            "other engineers' test runs, which is why every benchmark measures its baseline "
            "in the same run and reports ratios. "
            f"Took {total / 60:.1f} min ({took}).",
            "",
            table(["measurement", "measured", "target", "vs baseline", "status"], rows),
            "",
            "The method, baseline and spread behind every row are in the sections below."
            + ("" if all(metric.resolved for metric in metrics) else _UNRESOLVED),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]) if __doc__ else None,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs of every benchmark (smoke test); never rewrites docs/performance.md",
    )
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the doc")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these (e.g. e2e memory); the summary section is then not rewritten",
    )
    args = parser.parse_args(argv)
    scripts = list(SCRIPTS)
    if args.only:
        wanted = [name if name.startswith("bench_") else f"bench_{name}" for name in args.only]
        unknown = sorted(set(wanted) - set(SCRIPTS))
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(SCRIPTS)}")
        scripts = [script for script in SCRIPTS if script in wanted]
    timeout = 600.0 if args.quick else 3600.0
    load = _load()
    results: dict[str, Result | None] = {}
    seconds: dict[str, float] = {}
    for script in scripts:
        print(f"-- {script}{' --quick' if args.quick else ''} ...", flush=True)
        result, seconds[script], output = _run_one(script, args.quick, timeout)
        results[script] = result
        if result is None:
            print(f"   FAILED after {seconds[script]:.0f} s:\n{output}", flush=True)
        else:
            print(f"   done in {seconds[script]:.0f} s", flush=True)
    text = summary(results, seconds, args.quick, load)
    print()
    print(text)
    if not args.quick and not args.no_write:
        for result in results.values():
            if result is not None:
                write_section(result.section, result.markdown)
        if not args.only:
            write_section("summary", text)
    return 0 if all(result is not None for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
