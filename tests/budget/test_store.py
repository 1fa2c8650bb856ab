"""One BudgetStore interface; the budget exporter under otelcost.exporters, without a cycle."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import otelcost
from otelcost import budget, exporters
from otelcost.budget import InMemoryBudgetStore, RedisBudgetStore
from otelcost.budget.store import BudgetStore
from otelcost.exporters import budget as budget_module

SRC = Path(otelcost.__file__).parent


@pytest.mark.parametrize("store", [InMemoryBudgetStore, RedisBudgetStore])
def test_both_stores_provide_every_member_of_the_interface(store: type) -> None:
    members = [n for n in vars(BudgetStore) if not n.startswith("_")]
    assert set(members) == {"budgets", "apply", "status", "services", "read_flag"}
    for name in members:
        if name != "budgets":  # RedisBudgetStore sets it per instance
            assert callable(getattr(store, name)), name
    assert "budgets" in inspect.signature(store.__init__).parameters


def test_one_protocol_describes_a_budget_store() -> None:
    """No other module declares a Protocol with a store's methods."""
    declared = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", None)) == "Protocol" for b in node.bases
            ):
                methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
                if methods & {"apply", "read_flag", "status"}:
                    declared.append(f"{path.relative_to(SRC)}:{node.name}")
    assert declared == ["budget/store.py:BudgetStore"]


def test_public_paths_name_the_same_objects() -> None:
    assert budget.BudgetExporter is exporters.BudgetExporter is budget_module.BudgetExporter
    assert exporters.RedisBudgetExporter is budget_module.RedisBudgetExporter
    assert budget.budget_exporter is budget_module.budget_exporter


@pytest.mark.parametrize(
    "first",
    ["otelcost.exporters.budget", "otelcost.budget", "otelcost.exporters", "otelcost.budget.store"],
)
def test_any_import_order_works(first: str) -> None:
    code = f"import {first}; from otelcost.budget import BudgetExporter; print(BudgetExporter)"
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
