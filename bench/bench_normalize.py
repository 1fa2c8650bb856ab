"""Path normalization and operation naming: ns per call, memo hit and miss.

Timed with the calling thread's CPU clock. Baselines in the same run: ``str.split('/')``
of the same paths (the least any per-segment work costs) and a naive single regex that
only replaces digit-only segments (``re.sub(r"/\\d+(?=/|$)", "/*", path)``, what
hand-rolled normalizers usually do).
Run ``python -m bench.bench_normalize [--quick]``; it rewrites the ``normalize`` section of
docs/performance.md.
"""

from __future__ import annotations

import random
import re
import time
import timeit
import uuid
from collections.abc import Callable, Sequence

from opentelemetry.trace import SpanKind

from bench._report import Metric, Result, command, environment, main_for, summary, table
from otelcost.costing import normalize as normalize_module
from otelcost.costing.normalize import PathNormalizer, normalize_path
from otelcost.costing.operation import CardinalityGuard, derive_operation, service_name

HIT_PATH = "/api/v2/users/123/orders/456"
NAIVE = re.compile(r"/\d+(?=/|$)")


def realistic_paths(count: int, seed: int = 7) -> list[str]:
    """Distinct request paths shaped like production traffic: ids, UUIDs, hashes, dates."""
    rng = random.Random(seed)
    shapes: list[Callable[[], str]] = [
        lambda: f"/api/v2/users/{rng.randint(1, 10**7)}/orders/{rng.randint(1, 10**9)}",
        lambda: f"/api/v1/accounts/{uuid.UUID(int=rng.getrandbits(128))}/invoices",
        lambda: f"/static/js/main.{rng.getrandbits(32):08x}.chunk.js",
        lambda: f"/reports/{rng.randint(2020, 2030)}-{rng.randint(1, 12):02d}-27/summary.pdf",
        lambda: f"/search/products?q=item{rng.randint(1, 10**6)}&page={rng.randint(1, 50)}",
        lambda: f"/users/user{rng.randint(1, 10**5)}@example.com/preferences",
        lambda: f"/files/{uuid.UUID(int=rng.getrandbits(128))}.json",
    ]
    return [rng.choice(shapes)() for _ in range(count)]


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, ``repeats`` rounds, so machine load hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            samples[name].append(run())
    return samples


def stmt_ns(stmt: str, namespace: dict[str, object], number: int) -> Callable[[], float]:
    """ns per run of ``stmt`` (a statement string keeps harness overhead to timeit's loop)."""
    return lambda: (
        timeit.timeit(stmt, number=number, globals=namespace, timer=time.thread_time) / number * 1e9
    )


def each_ns(function: Callable[[str], object], paths: list[str]) -> Callable[[], float]:
    """ns per call of ``function`` over every path once (a fresh function per run allowed)."""

    def run() -> float:
        started = time.thread_time_ns()
        for path in paths:
            function(path)
        return (time.thread_time_ns() - started) / len(paths)

    return run


def fresh_ns(paths: list[str], *, cold: bool) -> Callable[[], float]:
    """Every path a memo miss: a new PathNormalizer per run; ``cold`` also empties the
    module-wide segment memo, so nothing at all is remembered."""

    def run() -> float:
        if cold:
            normalize_module._cached_segment.cache_clear()
            normalizer = PathNormalizer(cache_size=0)
        else:
            normalizer = PathNormalizer(cache_size=len(paths) + 1)
        return each_ns(normalizer, paths)()

    return run


def run(quick: bool) -> Result:
    number, repeats, distinct = (20_000, 5, 2_000) if quick else (300_000, 15, 20_000)

    paths = realistic_paths(distinct)
    normalize_path(HIT_PATH)  # warm the memo for the hit case
    guard = CardinalityGuard()
    guard.admit("payment-svc", "POST /api/v2/payments/{id}")
    resource = {"service.name": "payment-svc"}
    route_attrs = {"http.request.method": "POST", "http.route": "/api/v2/payments/{id}"}
    path_attrs = {"http.request.method": "GET", "url.path": HIT_PATH}
    client_attrs = {
        "http.request.method": "GET",
        "url.full": f"https://api.example.com{HIT_PATH}?expand=items",
        "server.address": "api.example.com",
        "server.port": 443,
    }
    db_attrs = {"db.system": "postgresql", "db.statement": "SELECT * FROM orders WHERE id = %s"}
    namespace: dict[str, object] = {
        "path": HIT_PATH,
        "normalize_path": normalize_path,
        "naive": NAIVE.sub,
        "derive_operation": derive_operation,
        "service_name": service_name,
        "admit": guard.admit,
        "resource": resource,
        "route_attrs": route_attrs,
        "path_attrs": path_attrs,
        "client_attrs": client_attrs,
        "db_attrs": db_attrs,
        "CLIENT": SpanKind.CLIENT,
        "name": "GET /api/v2/users/123",
        "empty": {},
    }
    cases = {
        "baseline: path.split('/'), same path": stmt_ns("path.split('/')", namespace, number),
        "normalize_path, memo hit": stmt_ns("normalize_path(path)", namespace, number),
        f"baseline: path.split('/'), {distinct:,} distinct paths": each_ns(
            lambda p: p.split("/"), paths
        ),
        f"baseline: naive digit regex, {distinct:,} distinct paths": each_ns(
            lambda p: NAIVE.sub("/*", p), paths
        ),
        "normalize_path, memo miss (segment memo warm)": fresh_ns(paths, cold=False),
        "normalize_path, cold (no memo at all)": fresh_ns(paths, cold=True),
        "derive_operation, http.route": stmt_ns(
            "derive_operation('x', route_attrs)", namespace, number
        ),
        "derive_operation, url.path (memo hit)": stmt_ns(
            "derive_operation('x', path_attrs)", namespace, number
        ),
        "derive_operation, span name": stmt_ns("derive_operation(name, empty)", namespace, number),
        "derive_operation, HTTP client url.full (memo hit)": stmt_ns(
            "derive_operation('GET', client_attrs, kind=CLIENT)", namespace, number
        ),
        "derive_operation, SQL statement (memo hit)": stmt_ns(
            "derive_operation('SELECT', db_attrs, kind=CLIENT)", namespace, number
        ),
        "service_name": stmt_ns("service_name(resource, empty)", namespace, number),
        "CardinalityGuard.admit, known operation": stmt_ns(
            "admit('payment-svc', 'POST /api/v2/payments/{id}')", namespace, number
        ),
    }
    rows = list(interleaved(cases, repeats).items())
    same_path = summary(rows[0][1])[0]
    distinct_split = summary(rows[2][1])[0]
    body = [
        "## Path normalization and operation names",
        "",
        f"{command('bench_normalize', quick)}; {environment()}.",
        f"Hit cases: {number:,} calls per run on `{HIT_PATH}`. Distinct cases: {distinct:,} "
        "generated production-like paths (integer ids, UUIDs, hashed asset names, dates, "
        "e-mails, query strings), each normalized once per run by a fresh normalizer; "
        '"segment memo warm" keeps the module-wide memo of short segments (`api`, `users`, '
        '...) as in steady state, "cold" empties it too. '
        f"Times are CPU time of the calling thread (less sensitive to other load on a shared "
        f"machine than wall time); {repeats} runs, the cases interleaved; median and spread "
        "(max - min). Ratios are against `str.split('/')` of the same input(s).",
        "",
    ]
    table_rows = []
    medians = {}
    for index, (name, samples) in enumerate(rows):
        median, spread = summary(samples)
        medians[name] = median
        base = distinct_split if 2 <= index <= 5 else same_path
        table_rows.append((name, f"{median:,.0f}", f"{spread:,.0f}", f"{median / base:.1f}x"))
    body.append(table(["case", "ns/call (median)", "spread (ns)", "vs split"], table_rows))
    hit = medians["normalize_path, memo hit"]
    miss = medians["normalize_path, memo miss (segment memo warm)"]
    return Result(
        "normalize",
        "\n".join(body),
        [
            Metric(
                "normalize_path, memo hit",
                hit,
                "ns/call",
                vs_baseline=f"{hit / same_path:.1f}x str.split",
            ),
            Metric(
                "normalize_path, memo miss",
                miss,
                "ns/call",
                vs_baseline=f"{miss / distinct_split:.1f}x str.split",
            ),
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    main_for(run, __doc__, argv)


if __name__ == "__main__":
    main()
