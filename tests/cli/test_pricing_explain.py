"""``otelcost pricing explain``, driven through ``otelcost.cli.main``."""

from __future__ import annotations

import io
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from otelcost.cli import main

TABLE = {
    "version": "v1",
    "currency": "USD",
    "prices": {
        "shop:GET /health": None,
        "shop:GET api.example.com/*": {"per_request": 0.002},
        "shop:GET *": {"per_ms": 1e-6},
        "shop:*": {"per_ms": 2e-6, "per_request": 1e-4},
        "*:GET /health": {"per_request": 1e-5},
        "llm:*": {"per_unit": {"gen_ai.usage.input_tokens": 1e-6}},
        "billing:*": {"per_ms": 1e-6},
    },
}
CLIENT_SPAN = {
    "name": "GET",
    "kind": "SPAN_KIND_CLIENT",
    "attributes": {"http.request.method": "GET", "url.full": "https://api.example.com/users/42"},
    "resource": {"attributes": {"service.name": "shop"}},
}


@pytest.fixture
def table(tmp_path: Path) -> str:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(TABLE))
    return str(path)


def explain(
    capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None
) -> tuple[int, Any]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(["pricing", "explain", *argv, "--json"])
    finally:
        sys.stdin = sys.__stdin__
    return code, json.loads(capsys.readouterr().out)


def test_a_span_on_stdin_is_named_matched_and_charged(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = explain(
        capsys, table, "--span", "-", "--duration-ms", "120", stdin=json.dumps(CLIENT_SPAN)
    )
    assert code == 0
    assert (result["service"], result["operation"]) == ("shop", "GET api.example.com/users/*")
    assert (result["rule"], result["span_name"], result["kind"]) == ("http.client", "GET", "client")
    assert result["entry"] is False
    match = result["match"]
    assert (match["key"], match["targeted"]) == ("shop:GET api.example.com/*", True)
    # A key that names the operation charges its whole price, nested or not.
    assert match["entry_amount"] == match["nested_amount"] == 0.002
    # Every key for the service and for "*", in match order, with why it lost.
    assert [(c["key"], c["matches"]) for c in result["candidates"]] == [
        ("shop:GET /health", False),
        ("shop:GET api.example.com/*", True),
        ("shop:GET *", True),
        ("shop:*", True),
        ("*:GET /health", False),
    ]
    reasons = [c["reason"] for c in result["candidates"]]
    assert reasons[0] == "names another operation, not 'GET api.example.com/users/*'"
    assert reasons[1] == "matches: glob for the service"
    assert reasons[2].startswith("matches too (glob for the service), but shop:GET api.")
    assert result["other_keys"] == 2


def test_a_bare_wildcard_charges_entry_spans_only(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("--service", "shop", "--operation", "redis GET", "--duration-ms", "10")
    code, result = explain(capsys, table, *argv, "--kind", "client")
    assert code == 0
    match = result["match"]
    assert (match["key"], match["targeted"]) == ("shop:*", False)
    assert match["entry_amount"] == pytest.approx(1e-4 + 2e-6 * 10)
    assert match["nested_amount"] is None
    assert match["nested_span"].startswith("not billable")


def test_usage_prices_apply_to_nested_spans(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    span = {
        "name": "chat",
        "kind": "CLIENT",
        "attributes": {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-5.6-luna",
            "gen_ai.usage.input_tokens": 1000,
        },
        "resource": {"service.name": "llm"},
    }
    code, result = explain(
        capsys, table, "--span", "-", "--duration-ms", "5", stdin=json.dumps(span)
    )
    assert code == 0
    assert result["operation"] == "chat gpt-5.6-luna"
    assert result["match"]["nested_amount"] == pytest.approx(1e-3)
    assert "usage" in result["match"]["nested_span"]


def test_django_health_route_is_priced_by_the_documented_key(
    table: str, capsys: pytest.CaptureFixture[str]
) -> None:
    span = {
        "name": "GET health/",
        "kind": "SERVER",
        "attributes": {"http.method": "GET", "http.route": "health/"},
        "resource": {"service.name": "web"},
    }
    code, result = explain(capsys, table, "--span", "-", stdin=json.dumps(span))
    assert code == 0
    assert result["operation"] == "GET /health"
    assert result["match"]["key"] == "*:GET /health"
    assert result["entry"] is True


def test_no_match_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"shop:GET /a": {"per_request": 1}}))
    code, result = explain(capsys, str(path), "--service", "shop", "--operation", "GET /b")
    assert code == 1
    assert result["match"] is None
    assert result["candidates"] == [
        {"key": "shop:GET /a", "matches": False, "reason": "names another operation, not 'GET /b'"}
    ]


def test_plain_output(table: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pricing", "explain", table, "--service", "shop", "--operation", "GET /health"]
    assert main([*argv, "--kind", "server"]) == 0
    out = capsys.readouterr().out
    assert "match:      shop:GET /health   (names the operation)" in out
    assert "kind:       server: an entry span" in out
    assert " * shop:GET /health" in out
    assert "*:GET /health" in out and "comes first in the match order" in out


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"kind": "SIDEWAYS"}', "unknown kind"),
        ('{"attributes": 3}', "attributes must be a JSON object"),
    ],
)
def test_unreadable_spans_exit_2(
    table: str, capsys: pytest.CaptureFixture[str], span: str, message: str
) -> None:
    code, result = explain(capsys, table, "--span", "-", stdin=span)
    assert code == 2
    assert message in result["error"]


def test_stdin_cannot_hold_both(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = explain(capsys, "-", "--span", "-", stdin="{}")
    assert code == 2
    assert "both read standard input" in result["error"]


def test_the_documented_example_prints_what_the_docs_show(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text[text.index("$ otelcost pricing explain") :].split("```", 1)[0]
    command, *shown = block.rstrip("\n").splitlines()
    monkeypatch.chdir(root)
    assert main(shlex.split(command)[2:]) == 0  # after "$ otelcost"
    assert capsys.readouterr().out.splitlines() == shown


def test_usage_tiers_and_a_call_without_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiers = {
        "rate": 1e-6,
        "tiers": [{"above": 1000, "rate": 2e-6}],
        "by": "gen_ai.usage.input_tokens",
    }
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"llm:chat *": {"per_unit": {"gen_ai.usage.input_tokens": tiers}}}))
    span: dict[str, Any] = {
        "name": "chat m",
        "kind": "CLIENT",
        "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m"},
        "resource": {"service.name": "llm"},
    }
    argv = (str(path), "--span", "-", "--duration-ms", "5")
    code, result = explain(capsys, *argv, stdin=json.dumps(span))
    assert code == 0 and "entry_amount" not in result["match"]
    assert "no token usage" in result["match"]["amount_error"]  # never a silent $0
    span["attributes"]["gen_ai.usage.input_tokens"] = 2000
    code, result = explain(capsys, *argv, stdin=json.dumps(span))
    assert (
        result["match"]["price"] == "per_unit[gen_ai.usage.input_tokens]=1e-06 (above 1000: 2e-06)"
    )
    assert result["match"]["entry_amount"] == result["match"]["nested_amount"] == 0.004
