"""Pricing lookups: ns per PricingCache.get_price / PricingTable.resolve, memo hit and miss.

Baseline: a plain dict lookup of the same (service, operation) tuple in the same run.
Run ``python -m bench.bench_pricing [--quick]``; it rewrites the ``pricing`` section of
docs/performance.md.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable, Sequence

from bench._report import Metric, Result, command, environment, main_for, summary, table
from otelcost.pricing import Price, PricingCache, PricingTable

SERVICES = 50
EXACT_PER_SERVICE = 20
GLOBS_PER_SERVICE = 5


def build_prices() -> dict[str, Price | None]:
    """A realistic table: per service exact routes, a few globs and a fallback, plus '*' keys."""
    prices: dict[str, Price | None] = {}
    for s in range(SERVICES):
        for r in range(EXACT_PER_SERVICE):
            prices[f"svc{s}:GET /api/v2/resource{r}/*"] = Price(per_ms=1e-6 * (r + 1))
            prices[f"svc{s}:POST /api/v2/resource{r}"] = Price(per_ms=2e-6, per_request=1e-6)
        for g in range(GLOBS_PER_SERVICE):
            prices[f"svc{s}:GET /internal/{g}/*/items/*"] = Price(per_ms=3e-6)
        prices[f"svc{s}:*"] = Price(per_ms=1e-7)
    prices["*:GET /health"] = None
    prices["*:*"] = Price(per_ms=5e-7)
    return prices


def interleaved(cases: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run every case once per round, ``repeats`` rounds, so machine load hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            samples[name].append(run())
    return samples


def hit_ns(stmt: str, namespace: dict[str, object], number: int) -> Callable[[], float]:
    """One timing of ``number`` runs of the statement ``stmt``, in ns per run.

    A statement string (not a lambda) keeps the harness overhead to the timeit loop itself.
    """
    return lambda: timeit.timeit(stmt, number=number, globals=namespace) / number * 1e9


def miss_ns(prices: dict[str, Price | None], lookups: list[tuple[str, str]]) -> Callable[[], float]:
    """Resolve each (service, operation) once on a fresh table (empty memo): the match cost."""

    def run() -> float:
        fresh = PricingTable(prices, memo_size=len(lookups) + 1)
        resolve = fresh.resolve
        started = time.perf_counter_ns()
        for service, operation in lookups:
            resolve(service, operation)
        return (time.perf_counter_ns() - started) / len(lookups)

    return run


def run(quick: bool) -> Result:
    number, repeats, distinct = (20_000, 5, 2_000) if quick else (500_000, 15, 20_000)

    prices = build_prices()
    cache = PricingCache(prices, ttl=3600, refresh_interval=600)
    cache.refresh()
    current = cache.current()
    service, operation = "svc7", "POST /api/v2/resource3"
    plain = {tuple(key.split(":", 1)): price for key, price in prices.items()}
    key = (service, operation)
    assert current.resolve(service, operation) is plain[key]  # warms the memo

    namespace: dict[str, object] = {
        "get": plain.get,
        "resolve": current.resolve,
        "get_price": cache.get_price,
        "service": service,
        "operation": operation,
    }
    exact = [
        (f"svc{s}", f"POST /api/v2/resource{r}")
        for s in range(SERVICES)
        for r in range(EXACT_PER_SERVICE)
    ]
    fallback = [(f"svc{i % SERVICES}", f"GET /other/{i}") for i in range(distinct)]
    globs = EXACT_PER_SERVICE + GLOBS_PER_SERVICE
    cases = {
        "baseline: dict.get((service, operation))": hit_ns(
            "get((service, operation))", namespace, number
        ),
        "PricingTable.resolve, memo hit": hit_ns("resolve(service, operation)", namespace, number),
        "PricingCache.get_price, memo hit": hit_ns(
            "get_price(service, operation)", namespace, number
        ),
        f"resolve miss: exact key ({len(exact)} keys)": miss_ns(prices, exact),
        f"resolve miss: {globs} globs scanned, then svc:* ({distinct:,} keys)": miss_ns(
            prices, fallback
        ),
    }
    rows = list(interleaved(cases, repeats).items())
    baseline = summary(rows[0][1])[0]
    body = [
        "## Pricing lookups",
        "",
        f"{command('bench_pricing', quick)}; {environment()}.",
        f"Table of {len(prices)} entries: {SERVICES} services with {EXACT_PER_SERVICE} exact "
        f"routes, {globs} globs and a `svc:*` fallback each, plus `*:` keys. "
        f"Hits: {number:,} calls per run; misses: a fresh table (empty memo) per run, each "
        f"(service, operation) resolved once. {repeats} runs, the cases interleaved; "
        "median and spread (max - min) over the runs.",
        "",
    ]
    table_rows = []
    medians = {}
    for name, samples in rows:
        median, spread = summary(samples)
        medians[name] = median
        table_rows.append((name, f"{median:,.0f}", f"{spread:,.0f}", f"{median / baseline:.1f}x"))
    body.append(table(["case", "ns/call (median)", "spread (ns)", "vs dict lookup"], table_rows))
    hit = medians["PricingCache.get_price, memo hit"]
    miss = medians[f"resolve miss: exact key ({len(exact)} keys)"]
    return Result(
        "pricing",
        "\n".join(body),
        [
            Metric(
                "Pricing lookup, memo hit (PricingCache.get_price)",
                hit,
                "ns/call",
                vs_baseline=f"{hit / baseline:.1f}x dict.get",
            ),
            Metric(
                "Pricing lookup, memo miss (exact key)",
                miss,
                "ns/call",
                vs_baseline=f"{miss / baseline:.1f}x dict.get",
            ),
        ],
    )


def main(argv: Sequence[str] | None = None) -> None:
    main_for(run, __doc__, argv)


if __name__ == "__main__":
    main()
