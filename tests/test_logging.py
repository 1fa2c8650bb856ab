"""Loggers: each module logs under ``__name__``; hard-coded names are the documented ones."""

from __future__ import annotations

import re
from pathlib import Path

import otelcost

SRC = Path(otelcost.__file__).parent
RUNBOOK = Path(__file__).parents[1] / "docs" / "runbook.md"


def _documented() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    section = text[text.index("### Loggers") :]
    section = section[: section.find("\n#", 1)]
    return set(re.findall(r"`(otelcost(?:\.[a-z_]+)*)`", section))


def test_hard_coded_logger_names_are_the_documented_ones() -> None:
    documented = _documented()
    for path in SRC.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        for name in re.findall(r'getLogger\(f?"([^"]+)"\)', source):
            # f"otelcost.{command}" / f"otelcost.{self.name}": the two consumer commands
            for each in {re.sub(r"\{[^}]+\}", command, name) for command in ("enforce", "rollup")}:
                assert each in documented, f"{path.relative_to(SRC)}: logger {each!r} undocumented"


def test_module_loggers_are_named_logger_and_use_the_module_name() -> None:
    for path in SRC.rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            match = re.match(r"(\w+) = logging\.getLogger\((.*?)\)", line)
            if match:
                assert match.group(1) == "_logger", f"{path.relative_to(SRC)}: {line}"
                assert match.group(2) == "__name__" or line.endswith('"Loggers"'), line
