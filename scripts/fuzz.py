"""Long fuzzing runs of the parsers (not in CI): tests/test_fuzz.py's properties, many examples.

Each target runs ``--examples`` hypothesis examples (default 20,000) with a per-example
deadline, so an input that is slow to handle fails like one that raises an undocumented
exception. Hypothesis shrinks a failure to a minimal example and prints it.

    .venv/bin/python scripts/fuzz.py [--examples 20000] [--deadline-ms 200] [TARGET...]

Targets: record, pricing, budgets, normalize, spans (default: all).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import test_fuzz as props  # noqa: E402
from otelcost import _json  # noqa: E402

_PATHS = st.one_of(
    st.text(st.characters(exclude_categories=()), max_size=2_000),
    st.lists(st.sampled_from(["/", "123", "v2", "%2F", "a@b.c", "ABCdef123_-", "..", "é"])).map(
        "".join
    ),
)


def _normalize(path: str) -> None:
    result = props.normalize_path(path)
    assert result.startswith("/") and props.normalize_path(result) == result


def _record_both_codecs(text: str) -> None:
    check = props.test_record_from_json_raises_only_invalid_record_error.hypothesis.inner_test  # type: ignore[attr-defined]
    default = _json.loads
    try:
        for loads in props.CODECS.values():
            _json.loads = loads
            check(codec="", text=text)
    finally:
        _json.loads = default


def _targets() -> dict[str, tuple[Any, Callable[..., None]]]:
    inner = {
        name: getattr(props, name).hypothesis.inner_test
        for name in (
            "test_pricing_parser_raises_only_pricing_error",
            "test_budgets_parser_raises_only_budget_config_error",
            "test_hostile_spans_always_make_valid_records",
        )
    }
    return {
        "record": (st.fixed_dictionaries({"text": props.HOSTILE_TEXT}), _record_both_codecs),
        "pricing": (
            st.fixed_dictionaries(
                {
                    "data": st.one_of(
                        st.binary(max_size=5_000),
                        props.HOSTILE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
                    )
                }
            ),
            inner["test_pricing_parser_raises_only_pricing_error"],
        ),
        "budgets": (
            st.fixed_dictionaries({"doc": props.BUDGET_DOCS}),
            inner["test_budgets_parser_raises_only_budget_config_error"],
        ),
        "normalize": (st.fixed_dictionaries({"path": _PATHS}), _normalize),
        "spans": (
            st.fixed_dictionaries(
                {
                    "name": st.text(st.characters(exclude_categories=()), max_size=500),
                    "attributes": st.dictionaries(
                        st.sampled_from(props._KEYS), st.sampled_from(props._HOSTILE_VALUES)
                    ),
                    "resource": st.dictionaries(
                        st.sampled_from(props._KEYS), st.sampled_from(props._HOSTILE_VALUES)
                    ),
                    "start": props._TIMES,
                    "end": props._TIMES,
                }
            ),
            inner["test_hostile_spans_always_make_valid_records"],
        ),
    }


def _caller(check: Callable[..., None]) -> Callable[[dict[str, Any]], None]:
    def run(kwargs: dict[str, Any]) -> None:
        check(**kwargs)

    return run


def main(argv: Sequence[str] | None = None) -> int:
    targets = _targets()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20_000)
    parser.add_argument("--deadline-ms", type=float, default=200.0)
    parser.add_argument("targets", nargs="*", choices=[*targets, []], default=[])
    args = parser.parse_args(argv)
    failed = []
    for name in args.targets or list(targets):
        strategy, check = targets[name]

        test = settings(
            max_examples=args.examples,
            deadline=timedelta(milliseconds=args.deadline_ms),
            suppress_health_check=list(HealthCheck),
            database=None,
        )(given(strategy)(_caller(check)))
        started = time.monotonic()
        try:
            test()
        except Exception as exc:
            failed.append(name)
            print(f"{name}: FAILED after {time.monotonic() - started:.0f} s: {exc!r}")
        else:
            print(f"{name}: {args.examples} examples OK in {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
