"""A FastAPI (ASGI) app priced by otelcost, with budgets and the BudgetGuard middleware.

    python examples/fastapi_app.py                         # 127.0.0.1:8000, shop budget 5 USD/h
    python examples/fastapi_app.py --port 0 --budget 0.00001 --requests 100

The ``shop`` service gets a rolling 1-hour budget of ``--budget`` USD. Its spend is kept by
the budget exporter that ``install(budgets=...)`` adds: in Redis when ``OTELCOST_REDIS_URL``
is set (shared by every replica), else in this process. Once the budget is spent (hard cap)
or the burn rate stays above it, the throttle flag is set and BudgetASGIMiddleware answers
``429`` with ``Retry-After``; ``/health`` stays reachable. Spend reaches the store within
about a second (the processor's export schedule, then the budget exporter's early flush)
and the guard reads the flag at most ``max_staleness`` (1 s) late: requests sent back to
back are refused a second or two after the budget is spent, so send the 100 requests of
the second line over a few seconds. ``--requests N`` makes uvicorn exit after N requests.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

import otelcost
from otelcost.budget import Budget, BudgetASGIMiddleware, BudgetExporter, BudgetGuard
from otelcost.exporters import ConsoleCostExporter

PRICES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prices.json")

app = FastAPI()


@app.get("/users/{user_id}")
async def get_user(user_id: int) -> dict[str, int]:
    return {"user": user_id}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def budget_store(processor: otelcost.CostSpanProcessor) -> object:
    """The store the budget exporter writes to, which the guard reads the flag from."""
    return next(e.store for e in processor.exporters if isinstance(e, BudgetExporter))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--budget", type=float, default=5.0, help="shop's USD per rolling hour")
    parser.add_argument("--requests", type=int, default=0, help="exit after N requests")
    args = parser.parse_args()
    os.environ.setdefault("OTEL_SERVICE_NAME", "shop")

    processor = otelcost.install(  # <- the one line (over several for the budget)
        PRICES,
        exporters=[ConsoleCostExporter()],
        budgets=[Budget("shop", args.budget, period="1h")],
    )

    # A Redis URL gives the guard its own client with short timeouts; else read the store.
    guard = BudgetGuard(os.environ.get("OTELCOST_REDIS_URL") or budget_store(processor))
    app.add_middleware(BudgetASGIMiddleware, guard=guard, service="shop")
    FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])

    sock = socket.socket()
    sock.bind((args.host, args.port))
    sock.listen(128)  # connections queue from now on, before uvicorn starts accepting
    print(f"listening on http://{args.host}:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    config = uvicorn.Config(
        app, log_level="warning", limit_max_requests=args.requests or None, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
