"""A command whose extra is not installed says in one line what to install (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _processes import run_python

ROOT = Path(__file__).resolve().parents[2]


def run_without(modules: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``otelcost argv`` in a process where ``modules`` cannot be imported."""
    script = textwrap.dedent(
        f"""
        import sys
        for module in {modules!r}:
            sys.modules[module] = None  # as if its extra were not installed
        from otelcost.cli import main
        sys.exit(main({argv!r}))
        """
    )
    return run_python(script, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


FOCUS = (
    "BilledCost,EffectiveCost,BillingCurrency,ChargePeriodStart,ChargePeriodEnd,"
    "ChargeCategory,ChargeClass,ServiceName,ResourceId,Tags\n"
    '1.5,1.25,USD,2026-05-01T00:00:00Z,2026-05-01T01:00:00Z,Usage,,AmazonEC2,i-1,"{}"\n'
)


# (module made unimportable, argv, the extra the last line names, exit status)
MISSING = [
    ("confluent_kafka", ["enforce", "--bootstrap-servers", "127.0.0.1:1"], "kafka", 2),
    ("psycopg", ["bill", "compare", "focus.csv", "--dsn", "postgresql://x/y"], "postgres", 2),
    # Redis is reached first, so it must answer for Kafka's turn to come
    ("confluent_kafka", ["reconcile", "--bootstrap-servers", "127.0.0.1:1"], "kafka", 2),
    # report reads budgets itself and says so (exit 1: no status could be read)
    ("redis", ["report", "--redis-url", "redis://127.0.0.1:1/0"], "redis", 1),
]


@pytest.mark.parametrize("case", MISSING, ids=[" ".join(c[1][:2]) for c in MISSING])
def test_a_missing_extra_is_one_line_naming_the_install(
    case: tuple[str, list[str], str, int], tmp_path: Path, redis_server: Any
) -> None:
    module, argv, extra, code = case
    focus = tmp_path / "focus.csv"
    focus.write_text(FOCUS)
    argv = [str(focus) if a == "focus.csv" else a for a in argv]
    if argv[0] in ("enforce", "reconcile"):
        argv += ["--redis-url", redis_server.url]
    done = run_without((module,), argv)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    line = done.stderr.splitlines()[-1]  # after any warning the command logged first
    assert line.startswith(f"otelcost {argv[0]}: ")
    assert line.endswith(f"pip install 'otelcost[{extra}]'")


# What every extra but `cli` brings; blocked, as after the quickstart's `pip install .[cli]`.
NOT_IN_CLI = ("confluent_kafka", "psycopg", "pyarrow", "genai_prices")


def readme_commands_needing_only_cli() -> list[str]:
    """The README's command-table rows whose extras column is `cli` alone."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    # A cell may hold an escaped pipe, as in `--from genai-prices\|litellm`.
    command = r"^\| `otelcost ([a-z]+(?: [a-z]+)?)(?:[^|\\]|\\\|)*` \|"
    rows = re.findall(command + r".*\| `cli`(?: \(.*\))? \|$", text, re.M)
    return sorted(set(rows))


def test_the_readme_commands_that_need_only_cli_run_with_only_cli(
    tmp_path: Path, redis_server: Any
) -> None:
    focus = tmp_path / "focus.csv"
    focus.write_text(FOCUS)
    prices = str(ROOT / "examples" / "prices.json")
    litellm = str(ROOT / "tests" / "data" / "litellm_model_prices.json")
    runs = {
        "pricing check": ["pricing", "check", prices],
        "pricing explain": [
            "pricing",
            "explain",
            prices,
            "--service",
            "shop",
            "--operation",
            "GET /users/*",
        ],
        "pricing import": ["pricing", "import", "--from", "litellm", litellm],
        "normalize": ["normalize", "/users/42"],
        "report": ["report", "--redis-url", redis_server.url],
        "bill check": ["bill", "check", str(focus), "--tag", "service"],
        "demo": ["demo", "--duration", "1", "--json"],
    }
    assert readme_commands_needing_only_cli() == sorted(runs)
    for name, argv in runs.items():
        done = run_without(NOT_IN_CLI, argv)
        assert done.returncode == 0, f"otelcost {name}: {done.stderr}"
