"""Pricing API faults under a live instrumented app: down, slow, garbage, 50 MB, redirect loop.

The HTTP source's own limits (timeouts, size cap, redirect policy) are tested in
tests/pricing/test_pricing_sources.py; here is what the application sees. The refresher keeps
the last good table until its ttl runs out; after that every span is left unpriced with
``cost.error`` = ``pricing_stale: ...`` (counted per reason, never a silent $0) until a
refresh succeeds, and requests are never slowed down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from _stack import PRICING, Ledger, Stack, assert_latency

from _wait import wait_for
from otelcost import _json
from otelcost.pricing import HttpPricingSource, PricingCache, PricingTable

_BODY = _json.dumps(PRICING)
_CHUNK = b" " * (1024 * 1024)


class PricingAPI:
    """A pricing endpoint on a fixed loopback port that can misbehave, stop and come back."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.stopped = threading.Event()  # releases slow handlers at the end
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/pricing"

    def start(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.respond(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self.port = self._httpd.server_address[1]
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd = None

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "ok":
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(_BODY)))
            handler.end_headers()
            handler.wfile.write(_BODY)
        elif self.mode == "slow":
            self.stopped.wait(5)
        elif self.mode == "garbage":
            handler.send_response(200)
            handler.end_headers()
            handler.wfile.write(b"<html>502 Bad Gateway</html>")
        elif self.mode == "huge":
            handler.send_response(200)  # no Content-Length: only the size cap stops it
            handler.end_headers()
            try:
                for _ in range(50):
                    handler.wfile.write(_CHUNK)
            except OSError:
                pass
        elif self.mode == "redirect_loop":
            handler.send_response(302)
            handler.send_header("Location", "/pricing")
            handler.end_headers()


@pytest.fixture
def api() -> Iterator[PricingAPI]:
    server = PricingAPI()
    yield server
    server.stopped.set()
    if server._httpd is not None:
        server.stop()


class WatchedSource(HttpPricingSource):
    """The HTTP source, noting the thread of every fetch (each may wait up to its 1 s total
    timeout on a faulty API: no request may ever be the one waiting)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, connect_timeout=0.3, read_timeout=0.3, total_timeout=1.0)
        self.threads: list[str] = []

    def fetch(self) -> PricingTable:
        self.threads.append(threading.current_thread().name)
        return super().fetch()


def _cache(api: PricingAPI) -> PricingCache:
    source = WatchedSource(api.url)
    return PricingCache(source, ttl=1.0, refresh_interval=0.25, retry_initial=0.05)


def _assert_fetched_off_the_request_path(cache: PricingCache) -> None:
    """Every fetch but the test's own first one ran on the cache's refresh thread."""
    source = cache._source
    assert isinstance(source, WatchedSource)
    fetched = set(source.threads[1:])
    assert fetched == {"otelcost-pricing-refresh"}, fetched


def _stale(stack: Stack) -> int:
    unpriced: dict[str, int] = stack.processor.stats()["unpriced"]
    return unpriced.get("pricing_stale", 0)


_MODES = {
    "down": "Connection refused",
    "slow": "timed out",
    "garbage": "invalid JSON",
    "huge": "exceeds the 8388608-byte limit",
    "redirect_loop": "redirect not followed",
}


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(_MODES))
def test_pricing_api_fault_leaves_spans_unpriced_never_slow(
    api: PricingAPI, stack_args: dict[str, str], mode: str
) -> None:
    cache = _cache(api)
    cache.refresh()
    cache.start()
    stack = Stack(pricing=cache, **stack_args)
    try:
        baseline = stack.drive(1.2)
        assert _stale(stack) == 0
        with stack.driving() as faulted:
            if mode == "down":
                api.stop()
            else:
                api.mode = mode
            wait_for(lambda: _stale(stack) > 0, 15, "the table to go stale")
            error = cache.stats()["last_error"]
            if mode == "down":
                api.start()
            api.mode = "ok"
            wait_for(lambda: cache.stats()["consecutive_failures"] == 0, 15, "a refresh")
            priced = stack.processor.stats()["spans_priced"]
            wait_for(lambda: stack.processor.stats()["spans_priced"] > priced, 15, "pricing")
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
    finally:
        stack.close()
        cache.stop()
    assert error is not None and _MODES[mode] in error, error
    assert_latency(baseline, faulted)
    _assert_fetched_off_the_request_path(cache)
    ledger.check()
    assert set(ledger.processor["unpriced"]) == {"pricing_stale"}
    assert not ledger.dropped


def test_pricing_api_down_at_start(api: PricingAPI, stack_args: dict[str, str]) -> None:
    api.stop()
    cache = _cache(api)
    with pytest.raises(Exception, match="refused"):
        cache.refresh()
    cache.start()
    stack = Stack(pricing=cache, **stack_args)
    try:
        faulted = stack.drive(1.0)
        assert stack.processor.stats()["spans_priced"] == 0
        api.start()
        wait_for(lambda: cache.last_sync is not None, 15, "the first table")
        baseline = stack.drive(1.0)
        stack.flush()
        ledger = Ledger.read(stack, **stack_args)
    finally:
        stack.close()
        cache.stop()
    assert_latency(baseline, faulted)
    _assert_fetched_off_the_request_path(cache)
    ledger.check()
    # Spans are priced on the worker with the table current then: the last ones ended
    # while the API was down may already find the first table.
    stats = ledger.processor
    assert 0 < stats["unpriced"]["pricing_stale"] <= len(faulted)
    assert stats["spans_priced"] + stats["spans_unpriced"] == len(faulted) + len(baseline)
