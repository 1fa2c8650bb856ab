"""``otelcost pricing check``, driven through ``otelcost.cli.main``."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from _cli_support import exit_code

from otelcost.cli import main
from otelcost.errors import PricingError
from otelcost.pricing import PricingCache

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


def test_check_flat_form_shows_usd_and_absent_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '{"svc:op": {"cost_per_ms": 0.0001}}')
    assert main(["pricing", "check", "--json", path]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "valid": True,
        "entries": 1,
        "currency": "USD",
        "currency_declared": False,
        "region": None,
        "version": None,
        "schedules": {},
    }
    assert main(["pricing", "check", path]) == 0
    assert "currency: USD (not declared: taken as USD)" in capsys.readouterr().out


DATED = {
    "currency": "EUR",
    "prices": {
        "svc:*": [
            {"per_ms": 1e-6},
            {"from": "2026-12-01T00:00:00Z", "per_ms": 2e-6, "per_unit": {"tokens": 3e-6}},
            {"from": "2027-01-01T00:00:00.250+00:00"},
        ],
        "*:*": None,
    },
}


def test_check_prints_each_dated_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, json.dumps(DATED))
    assert main(["pricing", "check", path]) == 0
    assert capsys.readouterr().out.splitlines()[4:] == [
        "dated:    svc:*",
        "  from the start                per_ms=1e-06",
        "  from 2026-12-01T00:00:00Z     per_ms=2e-06 per_unit[tokens]=3e-06",
        "  from 2027-01-01T00:00:00.250Z free",
    ]
    assert main(["pricing", "check", "--json", path]) == 0
    assert json.loads(capsys.readouterr().out)["schedules"] == {
        "svc:*": [
            {"from": None, "per_ms": 1e-6},
            {"from": "2026-12-01T00:00:00Z", "per_ms": 2e-6, "per_unit": {"tokens": 3e-6}},
            {"from": "2027-01-01T00:00:00.250Z"},
        ]
    }


def dated(*items: object) -> str:
    return json.dumps({"prices": {"svc:*": list(items)}})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"svc:op": {"per_ms": -1}}', "'svc:op'.per_ms"),
        ('{"prices": {"svc:op": {"per_ms": "0.1"}}}', "prices['svc:op'].per_ms"),
        ('{"svc:op": {"per_ms": NaN}}', "NaN"),
        ('{"svc:op": null, "svc:op": null}', "duplicate key 'svc:op'"),
        ('{"svcop": null}', "'svcop': key must be 'service:operation'"),
        ("[]", "document: must be a JSON object"),
        ("{", "invalid JSON"),
        (
            dated({"from": "2027-01-01T00:00:00Z"}, {"from": "2026-12-01T00:00:00Z"}),
            "prices['svc:*'][1].from: 2026-12-01T00:00:00Z is earlier than the 'from' of [0]",
        ),
        (
            dated({"from": "2027-01-01T00:00:00Z"}, {"from": "2027-01-01T00:00Z"}),
            "prices['svc:*'][1].from: 2027-01-01T00:00:00Z repeats the 'from' of [0]",
        ),
        (dated({}, {"per_ms": 1}), "prices['svc:*'][1]: needs 'from'"),
        (dated({"from": "01/12/2026"}), "prices['svc:*'][0].from: not an ISO 8601 instant"),
        (dated({"from": "2026-12-01T00:00:00-05:00"}), "prices['svc:*'][0].from: must be in UTC"),
        (dated({"from": "2026-13-01T00:00:00Z"}), "prices['svc:*'][0].from: not a valid date"),
        (dated(), "prices['svc:*']: a dated entry needs at least one price"),
        (
            '{"currency": "usd", "prices": {"*:*": null}}',
            "currency: must be an ISO 4217 code in upper case such as 'USD', got 'usd' "
            "(write 'USD')",
        ),
        ('{"currency": "dollars", "prices": {"*:*": null}}', "ISO 4217 code"),
    ],
)
def test_an_invalid_table_exits_1_naming_the_key_in_one_line_as_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = write(tmp_path, content)
    assert main(["pricing", "check", path]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and captured.err.endswith("\n")
    assert lines[0].startswith(f"otelcost pricing check: {path}: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err
    assert main(["pricing", "check", "--json", path]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] is False
    assert result["error"].startswith(f"{path}: ")
    assert message in result["error"]


def test_a_table_that_passes_check_is_never_a_currency_mismatch_at_run_time() -> None:
    # The runtime parser is the checker: the two cannot disagree about a currency.
    with pytest.raises(PricingError, match="ISO 4217"):
        PricingCache({"currency": "usd", "prices": {"*:*": None}}, ttl=600).refresh()


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
    assert exit_code(argv) == 0
    assert "usage: otelcost pricing" in capsys.readouterr().out


def test_check_requires_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["pricing", "check"]) == 2
