"""Shared benchmark helpers: results, timing statistics, rewriting docs/performance.md.

Every ``bench/bench_*.py`` script exposes ``run(quick: bool) -> Result``: the Markdown of its
section of docs/performance.md and its headline numbers (``Metric``, with the performance targets
issue 7 target where there is one). ``python -m bench.bench_X`` goes through ``main_for``
(or ``bench_parser`` + ``finish``); ``python -m bench`` (bench/run.py) runs every script as
a subprocess and collects the results through ``--result FILE``.

Only full runs rewrite docs/performance.md: a ``--quick`` run takes too few samples to
publish, and prints its section instead (``--no-write`` keeps a full run out of it too).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def environment() -> str:
    """One line naming the date, machine and versions the numbers were taken on."""
    versions = []
    for dist in ("opentelemetry-sdk", "confluent-kafka", "redis", "orjson"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} absent")
    return (
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {sys.version.split()[0]}, " + ", ".join(versions)
    )


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """Median and spread (max - min) of repeated measurements."""
    return statistics.median(samples), max(samples) - min(samples)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``: the smallest value at or above that rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (all three the value itself for one)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def write_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``.

    The markers are appended at the end of the file when they are not there yet, so each
    benchmark owns exactly one section and reruns never duplicate it.
    """
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = PERFORMANCE_MD.read_text() if PERFORMANCE_MD.exists() else "# Performance\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    PERFORMANCE_MD.write_text(text)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass(frozen=True)
class Metric:
    """One headline number of a benchmark.

    ``target`` is the budget it is held to (the performance targets), or None for a number that
    is reported without one; ``higher_is_better`` says which side of the target passes.
    ``vs_baseline`` states the same number against the run's baseline (e.g. "1.03x
    BatchSpanProcessor alone"); ``fmt`` formats value and target.

    ``control`` is what the same method reads between two identical processes (an A/A
    control), for a number that is an amount added (0 for no difference): the reading and
    its 95% interval. When that interval reaches further from 0 than the target, this run
    cannot tell whether the target is met, and the status says so instead of met or missed.
    """

    name: str
    value: float
    unit: str
    target: float | None = None
    higher_is_better: bool = False
    vs_baseline: str = ""
    fmt: str = ",.0f"
    control: Sequence[float] | None = None  # (reading, low, high)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    @property
    def resolved(self) -> bool:
        """False when the A/A control's interval reaches beyond the target either way."""
        if self.control is None or self.target is None:
            return True
        _, low, high = self.control
        return -self.target <= low and high <= self.target

    def measured_text(self) -> str:
        return self._with_unit(f"{self.value:{self.fmt}}")

    def target_text(self) -> str:
        if self.target is None:
            return "—"
        side = "≥" if self.higher_is_better else "≤"
        unsigned = self.fmt.lstrip("+")
        return f"{side} {self._with_unit(f'{self.target:{unsigned}}')}"

    def _with_unit(self, number: str) -> str:
        return f"{number}{self.unit}" if self.unit in ("x", "%") else f"{number} {self.unit}"

    def status(self) -> str:
        if not self.resolved:
            signed = self.fmt if self.fmt.startswith("+") else f"+{self.fmt}"
            reading, low, high = (self._with_unit(f"{x:{signed}}") for x in self.control or ())
            return f"**not resolved** here (the A/A control reads {reading}, {low} to {high})"
        return {None: "(reported)", True: "met", False: "**missed**"}[self.met]


@dataclass
class Result:
    """What one benchmark script produced: its section of docs/performance.md and metrics."""

    section: str
    markdown: str
    metrics: list[Metric] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Result:
        data: dict[str, Any] = json.loads(text)
        metrics = [Metric(**m) for m in data.pop("metrics")]
        return cls(metrics=metrics, **data)


def bench_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every bench script takes: ``--quick``, ``--no-write``, ``--result FILE``."""
    parser = argparse.ArgumentParser(
        description=description.splitlines()[0] if description else None
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run; prints its section, never rewrites docs/performance.md",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not rewrite docs/performance.md"
    )
    # For bench/run.py: the Result as JSON.
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser


def finish(result: Result, args: argparse.Namespace) -> None:
    """Print the section, rewrite it in docs/performance.md (full runs only), save the Result."""
    print(result.markdown, flush=True)
    if not args.quick and not args.no_write:
        write_section(result.section, result.markdown)
    if args.result is not None:
        args.result.write_text(result.to_json())


def main_for(
    run: Callable[[bool], Result], description: str | None, argv: Sequence[str] | None
) -> None:
    """``python -m bench.bench_X [--quick] [--no-write]`` for a script's ``run``."""
    args = bench_parser(description).parse_args(argv)
    finish(run(args.quick), args)


def command(script: str, quick: bool) -> str:
    """How a section says it was produced."""
    return f"`python -m bench.{script}{' --quick' if quick else ''}`"
