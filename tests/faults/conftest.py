"""Collects what each fault test measured (``_stack.FIGURES``) into the JSON-lines file named
by ``OTELCOST_FAULTS_REPORT``, the source of the figures in docs/reliability.md."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import _stack
import pytest

REPORT_ENV = "OTELCOST_FAULTS_REPORT"


@pytest.fixture(autouse=True)
def _figures(request: pytest.FixtureRequest) -> Iterator[None]:
    _stack.FIGURES.clear()
    yield
    path = os.environ.get(REPORT_ENV)
    if path and _stack.FIGURES:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"test": request.node.name, **_stack.FIGURES}) + "\n")
