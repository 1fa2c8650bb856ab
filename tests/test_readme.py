"""The README's command table says which extras each command needs: check it against
pyproject.toml, so a user who installs what the table says can run the command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

# The distributions each command imports (beyond the core dependencies).
NEEDS = {
    "otelcost demo": {"rich", "opentelemetry-instrumentation-wsgi"},
    "otelcost pricing check": {"rich"},
    "otelcost pricing explain": {"rich"},
    "otelcost pricing import": {"rich"},  # genai-prices: --from genai-prices only, as noted
    "otelcost normalize": {"rich"},
    "otelcost report --redis-url": {"rich", "redis"},
    "otelcost enforce": {"confluent-kafka", "redis"},
    "otelcost rollup": {"confluent-kafka", "psycopg"},
    "otelcost report --dsn": {"rich", "psycopg"},
    "otelcost reconcile": {"confluent-kafka", "redis"},
    "otelcost bill check": {"rich"},
    "otelcost bill compare": {"rich", "psycopg"},
    "otelcost bill calibrate": {"rich", "psycopg"},
}


def _extras() -> dict[str, set[str]]:
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    return {
        extra: {re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower() for req in reqs}
        for extra, reqs in optional.items()
    }


def _rows() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    rows: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[0].startswith("`otelcost "):
            command = next(name for name in NEEDS if cells[0].strip("`").startswith(name))
            # The first code span; a note may follow: `cli` (`cli,llm` for `--from ...`)
            extras = re.match(r"`([^`]*)`", cells[2])
            assert extras is not None, line
            rows[command] = {e.strip() for e in extras.group(1).split(",")}
    return rows


def test_every_command_has_a_row_naming_its_extras() -> None:
    assert _rows().keys() == NEEDS.keys()


@pytest.mark.parametrize("command", sorted(NEEDS))
def test_the_extras_a_row_names_install_what_the_command_imports(command: str) -> None:
    extras = _extras()
    named = _rows()[command]
    assert named <= extras.keys(), f"{command}: unknown extras {named - extras.keys()}"
    installed = set().union(*(extras[e] for e in named))
    assert NEEDS[command] <= installed, f"{command}: {NEEDS[command] - installed} missing"
