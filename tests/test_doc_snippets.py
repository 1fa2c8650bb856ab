"""Every ``python`` code block of the README and docs/ runs, pasted alone.

Each block runs in a fresh interpreter, in a directory holding the files the docs refer to
(``prices.json``, ``budgets.json``), so a snippet must carry its own imports. Blocks written
as an interactive session (``>>>``) are run as doctests, their printed results compared.
Hosts the docs use as placeholders (``kafka:9092``, ``redis://redis:6379``,
``https://pricing.internal``) do not resolve here: otelcost fails open on them, which is
what a user pasting the snippet without those servers sees too.
"""

from __future__ import annotations

import doctest
import re
import shutil
from pathlib import Path

import pytest

from _processes import run_python

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
_BUDGETS = '{"budgets": [{"service": "*", "limit": 50, "period": "1h"}]}\n'


def _blocks() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(ROOT)}:{line}", match.group(1)))
    return found


BLOCKS = _blocks()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples" / "prices.json", tmp_path / "prices.json")
    (tmp_path / "budgets.json").write_text(_BUDGETS)
    return tmp_path


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[where for where, _ in BLOCKS])
def test_the_block_runs_pasted_alone(where: str, code: str, workdir: Path) -> None:
    if code.lstrip().startswith(">>>"):
        code = (
            "import doctest, sys\n"
            f"test = doctest.DocTestParser().get_doctest({code!r}, {{}}, {where!r}, None, 0)\n"
            "runner = doctest.DocTestRunner()\n"
            "runner.run(test)\n"
            "sys.exit(1 if runner.failures else 0)\n"
        )
    done = run_python(code, cwd=workdir, timeout=120)
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"


def test_doctest_is_what_runs_the_interactive_blocks() -> None:
    # The runner above relies on doctest's parser; keep it honest about what it parses.
    examples = doctest.DocTestParser().get_examples(">>> 1 + 1\n2\n")
    assert [(e.source, e.want) for e in examples] == [("1 + 1\n", "2\n")]
