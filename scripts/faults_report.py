"""Run the fault suite and rewrite the measured table of docs/reliability.md.

    .venv/bin/python scripts/faults_report.py [--no-write]

Runs ``pytest tests/faults`` with ``OTELCOST_FAULTS_REPORT`` set (each test then records
its latencies, totals and counters, see tests/faults/conftest.py) and replaces the section
between ``<!-- faults:table -->`` and ``<!-- /faults:table -->``. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
SECTION = re.compile(r"(<!-- faults:table -->\n).*?(<!-- /faults:table -->)", re.S)

# test name -> (scenario, what is checked beyond the common checks)
SCENARIOS: dict[str, tuple[str, str]] = {
    "test_redis_unreachable_at_start": ("Redis unreachable at start", "exact once Redis is up"),
    "test_redis_stopped_mid_run_and_restarted": (
        "Redis stopped mid-run and restarted",
        "exact on both paths; enforce paused, then caught up",
    ),
    "test_redis_slowed_by_client_pause": (
        "Redis slowed (`CLIENT PAUSE` 2.5 s)",
        "exact; the guard's reads timed out, yet no request waited out the pause",
    ),
    "test_redis_flushed_spend_restarts_and_the_stream_rebuilds_it": (
        "Redis flushed (`FLUSHALL`)",
        "spend = delivered after the flush; a replay rebuilds the exact total",
    ),
    "test_broker_down_at_start": ("Broker down at start", "exact once the broker is up"),
    "test_broker_stopped_mid_run_and_restarted": (
        "Broker killed mid-run and restarted (persistent storage)",
        "exact; no span twice on the topic",
    ),
    "test_enforce_sigkilled_mid_batch_and_restarted_twice": (
        "`enforce` SIGKILLed mid-batch, twice",
        "enforce path exact; replays fenced",
    ),
    "test_two_enforcers_in_one_group_rebalancing": (
        "Two `enforce` in one group, joining and leaving",
        "enforce path exact; replays fenced",
    ),
    "test_pricing_api_down_at_start": (
        "Pricing API down at start",
        "unpriced until the first table, then priced",
    ),
    "test_prefork_worker_killed_with_spans_in_flight": (
        "Pre-fork app, a worker SIGKILLed",
        "others exact; the killed one's delivered spans are a subset of what it priced",
    ),
}
PRICING_KINDS = {
    "down": "down mid-run",
    "slow": "slower than its timeouts",
    "garbage": "returning garbage",
    "huge": "streaming a 50 MB body",
    "redirect_loop": "in a redirect loop",
}
PRICING_FAULT = re.compile(r"test_pricing_api_fault_leaves_spans_unpriced_never_slow\[(\w+)\]")


def _scenario(test: str) -> tuple[str, str]:
    match = PRICING_FAULT.fullmatch(test)
    if match:
        kind = PRICING_KINDS.get(match.group(1), match.group(1))
        return f"Pricing API {kind}", "stale table: spans unpriced (counted), never $0"
    return SCENARIOS.get(test, (test, ""))


def _order(row: dict[str, Any]) -> int:
    """Redis, broker, enforce, pricing, then the fork scenario: the order of SCENARIOS."""
    names = list(SCENARIOS)
    if PRICING_FAULT.fullmatch(row["test"]):
        return names.index("test_pricing_api_down_at_start")
    return names.index(row["test"]) if row["test"] in names else len(names)


def _figures(row: dict[str, Any]) -> str:
    parts = [
        f"p99 {row['baseline_p99_ms']} → {row['faulted_p99_ms']} ms "
        f"(max {row['faulted_max_ms']} ms), {row['requests']} requests"
    ]
    if "killed_priced" in row:
        lost = row["killed_priced"] - row["killed_delivered"]
        parts.append(f"{row['spans']} spans; killed worker: {lost} of {row['killed_priced']} lost")
    else:
        parts.append(f"{row['spans']} spans, {row['nanos']} nano-units")
        if row.get("unpriced"):
            parts.append(f"{row['unpriced']} unpriced")
    drops = (row.get("redis_nanos_dropped") or 0) + (row.get("kafka_dropped_spans") or 0)
    parts.append(f"dropped {drops}, duplicates on topic {row.get('topic_duplicates', 0)}")
    if "enforce_replayed" in row:
        parts.append(f"{row['enforce_replayed']} replays fenced")
    return "; ".join(parts)


def table(rows: Sequence[dict[str, Any]], seconds: float) -> str:
    load = os.getloadavg()[0]
    lines = [
        f"Measured by `python scripts/faults_report.py` on {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} CPUs, CPython {platform.python_version()}, load average "
        f"{load:.1f} at the end (a shared machine): {len(rows)} scenarios in {seconds:.0f} s.",
        "",
        "| scenario | checked (beyond the common checks) | measured: p99 baseline → under the "
        "fault; totals and counters |",
        "|---|---|---|",
    ]
    for row in sorted(rows, key=_order):
        scenario, checked = _scenario(row["test"])
        lines.append(f"| {scenario} | {checked} | {_figures(row)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not rewrite the doc")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "faults.jsonl"
        started = time.monotonic()
        code = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env={**os.environ, "OTELCOST_FAULTS_REPORT": str(report)},
            check=False,
        ).returncode
        seconds = time.monotonic() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()]
    text = table(rows, seconds)
    print(text)
    if code == 0 and not args.no_write:
        doc = DOC.read_text(encoding="utf-8")
        DOC.write_text(SECTION.sub(lambda m: m.group(1) + text + m.group(2), doc), "utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main())
