"""Comments and docstrings cite documents the project ships: ``docs/<page>.md`` pages that
exist, never a design file that is not in the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CITED = re.compile(r"docs/([\w./-]+\.md)")


def _sources() -> list[Path]:
    return [p for folder in ("src", "tests", "bench") for p in (ROOT / folder).rglob("*.py")]


def test_no_citation_of_a_design_file_the_project_does_not_have() -> None:
    citing = [str(p.relative_to(ROOT)) for p in _sources() if "DESIGN " + "§" in p.read_text()]
    assert not citing


def test_every_cited_docs_page_exists() -> None:
    missing = {
        f"{p.relative_to(ROOT)}: docs/{page}"
        for p in _sources()
        for page in _CITED.findall(p.read_text())
        if not (ROOT / "docs" / page).is_file()
    }
    assert not missing
