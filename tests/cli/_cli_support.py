"""What the CLI tests share."""

from __future__ import annotations

import pytest

from otelcost.cli import main


def exit_code(argv: list[str]) -> int | str | None:
    """The status ``otelcost argv`` exits with when argparse ends it (``--help``, a usage
    error); the test fails if it returns instead."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return exited.value.code
