"""``otelcost pricing check``, driven through ``otelcost.cli.main``."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from otelcost.cli import main

VALID = {
    "version": "2026-11-27.1",
    "currency": "USD",
    "region": "us-east-1",
    "prices": {"payment-svc:*": {"per_ms": 1e-6}, "*:GET /health": None, "*:*": {"per_ms": 5e-7}},
}


def write(tmp_path: Path, content: str) -> str:
    path = tmp_path / "prices.json"
    path.write_text(content)
    return str(path)


def test_check_prints_entries_and_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pricing", "check", write(tmp_path, json.dumps(VALID))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "entries:  3",
        "currency: USD",
        "region:   us-east-1",
        "version:  2026-11-27.1",
    ]


def test_check_flat_form_shows_absent_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '{"svc:op": {"cost_per_ms": 0.0001}}')
    assert main(["pricing", "check", "--json", path]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "entries": 1,
        "currency": None,
        "region": None,
        "version": None,
    }


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ('{"svc:op": {"per_ms": -1}}', "'svc:op'.per_ms"),
        ('{"prices": {"svc:op": {"per_ms": "0.1"}}}', "prices['svc:op'].per_ms"),
        ('{"svc:op": {"per_ms": NaN}}', "NaN"),
        ('{"svc:op": null, "svc:op": null}', "duplicate key 'svc:op'"),
        ('{"svcop": null}', "'svcop': key must be 'service:operation'"),
        ("[]", "document: must be a JSON object"),
        ("{", "invalid JSON"),
    ],
)
def test_invalid_table_exits_1_with_the_key_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, key: str
) -> None:
    path = write(tmp_path, content)
    assert main(["pricing", "check", path]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"otelcost pricing check: {path}: ")
    assert key in lines[0]
    assert "Traceback" not in captured.err


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing", "check", str(tmp_path / "absent.json")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_unsupported_url_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pricing", "check", "ftp://example.com/prices.json"]) == 1
    assert "only http and https" in capsys.readouterr().err


def test_check_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b'{"svc:op": {"per_ms": -2}}'))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["pricing", "check", "-"]) == 1
    assert capsys.readouterr().err.startswith("otelcost pricing check: <stdin>: 'svc:op'.per_ms")


@pytest.mark.parametrize("argv", [["pricing", "--help"], ["pricing", "check", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    assert "usage: otelcost pricing" in capsys.readouterr().out


def test_check_requires_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["pricing", "check"])
    assert exited.value.code == 2
