"""``otelcost normalize``, driven through ``otelcost.cli.main``."""

from __future__ import annotations

import io
import json
import sys

import pytest
from _cli_support import exit_code

from otelcost.cli import main


def test_prints_one_result_per_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["normalize", "/api/v2/users/123/orders/456?x=1", "", "/health/"]) == 0
    assert capsys.readouterr().out.splitlines() == ["/api/v2/users/*/orders/*", "/", "/health"]


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["normalize", "--json", "/users/José/7", "/a\ud800"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines == [
        {"path": "/users/José/7", "normalized": "/users/José/*"},
        {"path": "/a\ud800", "normalized": "/a\ufffd"},
    ]


def test_rules_apply_first(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["normalize", "--rule", "^/t/[^/]+", "/t/{tenant}", "--rule", "tenant", "org", "/t/x/1"]
    assert main(argv) == 0
    assert capsys.readouterr().out == "/t/{org}/*\n"


def test_invalid_rule_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["normalize", "--rule", "(", "x", "/a"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid --rule" in captured.err


def test_reads_standard_input_bytes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"/a/1?x\r\n/b/\xff/2\n"), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["normalize", "/first/9", "-"]) == 0
    assert capsys.readouterr().out.splitlines() == ["/first/*", "/a/*", "/b/\ufffd/*"]


def test_requires_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["normalize"]) == 2
    assert "PATH" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["normalize", "--help"]) == 0
    assert "--rule" in capsys.readouterr().out
