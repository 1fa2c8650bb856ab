"""Shared benchmark helpers: timing statistics and rewriting sections of docs/performance.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

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
