"""Pricing sources: dict, JSON file and HTTP (served by a real local http.server)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from otelcost.errors import PricingError, PricingStaleError
from otelcost.pricing import (
    DictPricingSource,
    FilePricingSource,
    HttpPricingSource,
    Price,
    PricingCache,
    PricingTable,
)
from otelcost.pricing._http import _RedirectPolicy

DOC = {"version": "v1", "currency": "USD", "prices": {"svc:op": {"per_ms": 1e-6}, "*:*": None}}
DOC_V2 = {"version": "v2", "prices": {"svc:op": {"per_ms": 2e-6}}}
BODY = json.dumps(DOC).encode()

Respond = Callable[[BaseHTTPRequestHandler], None]


class PricingServer:
    """A real HTTP(S) server on a free loopback port; tests map paths to responders."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Respond] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.partition("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        # Clients that give up mid-response (the point of several tests) are not errors here.
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        scheme = "https" if isinstance(self.httpd.socket, ssl.SSLSocket) else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[PricingServer]:
    srv = PricingServer()
    yield srv
    srv.close()


def send(
    handler: BaseHTTPRequestHandler,
    body: bytes,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def with_etag(body: bytes, etag: str) -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("If-None-Match") == etag:
            handler.send_response(304)
            handler.send_header("ETag", etag)
            handler.end_headers()
        else:
            send(handler, body, headers={"ETag": etag})

    return respond


# -- dict and file -------------------------------------------------------------------------------


def test_dict_source_validates_on_every_fetch() -> None:
    doc: dict[str, object] = {"svc:op": {"per_ms": 1e-6}}
    source = DictPricingSource(doc)
    assert source.fetch().resolve("svc", "op") == Price(per_ms=1e-6)
    doc["svc:op"] = {"per_ms": -1}
    with pytest.raises(PricingError, match=r"'svc:op'\.per_ms"):
        source.fetch()


def test_cache_from_a_dict() -> None:
    cache = PricingCache(DOC)
    cache.refresh()
    assert cache.get_price("svc", "op") == Price(per_ms=1e-6)


def test_cache_from_a_table() -> None:
    table = PricingTable.parse(DOC)
    cache = PricingCache(table)
    assert cache.refresh() is table


@pytest.mark.parametrize("as_path", [str, Path])
def test_file_source(tmp_path: Path, as_path: Callable[[Path], object]) -> None:
    path = tmp_path / "pricing.json"
    path.write_bytes(BODY)
    cache = PricingCache(as_path(path))  # type: ignore[arg-type]
    first = cache.refresh()
    assert cache.get_price("svc", "op") == Price(per_ms=1e-6)
    assert cache.refresh() is first  # same bytes: the same table, memo kept warm
    path.write_text(json.dumps(DOC_V2))
    assert cache.refresh().version == "v2"
    assert cache.stats()["refreshes_unchanged"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"svc:op": {"per_ms": NaN}}', "NaN is not a valid JSON number"),
        (b'{"svc:op": {"per_ms": Infinity}}', "Infinity is not a valid JSON number"),
        (b'{"svc:op": null, "svc:op": {"per_ms": 1}}', "duplicate key 'svc:op'"),
        (b"\xff\xfe\x00garbage", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
        (b'{"svc:op": {"per_ms": -1}}', "'svc:op'.per_ms"),
        (b"[1, 2]", "document: must be a JSON object"),
    ],
)
def test_file_with_bad_content_fails_naming_file_and_key(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "pricing.json"
    path.write_bytes(content)
    with pytest.raises(PricingError) as caught:
        FilePricingSource(path).fetch()
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_file_failures_keep_the_previous_table(tmp_path: Path) -> None:
    path = tmp_path / "pricing.json"
    path.write_bytes(BODY)
    cache = PricingCache(path)
    good = cache.refresh()
    path.write_text('{"svc:op": {"per_ms": "free"}}')
    with pytest.raises(PricingError, match="per_ms"):
        cache.refresh()
    path.unlink()
    with pytest.raises(PricingError, match="cannot read"):
        cache.refresh()
    assert cache.current() is good


def test_file_over_the_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "pricing.json"
    path.write_bytes(BODY)
    assert len(FilePricingSource(path, max_bytes=len(BODY)).fetch()) == 2
    with pytest.raises(PricingError, match=f"larger than the {len(BODY) - 1}-byte limit"):
        FilePricingSource(path, max_bytes=len(BODY) - 1).fetch()


def test_directory_is_not_a_pricing_file(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read"):
        FilePricingSource(tmp_path).fetch()


# -- HTTP ----------------------------------------------------------------------------------------


def test_http_source_loads_and_sends_identity(server: PricingServer) -> None:
    server.routes["/pricing"] = lambda h: send(h, BODY)
    cache = PricingCache(server.url("/pricing"))
    cache.refresh()
    assert cache.get_price("svc", "op") == Price(per_ms=1e-6)
    _, headers = server.requests[-1]
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("otelcost/")


def test_http_etag_304_reuses_the_previous_table(server: PricingServer) -> None:
    server.routes["/pricing"] = with_etag(BODY, '"abc"')
    source = HttpPricingSource(server.url("/pricing"))
    cache = PricingCache(source)
    first = cache.refresh()
    assert "If-None-Match" not in server.requests[0][1]
    assert cache.refresh() is first
    assert server.requests[1][1]["If-None-Match"] == '"abc"'
    assert cache.stats()["refreshes_unchanged"] == 1
    server.routes["/pricing"] = with_etag(json.dumps(DOC_V2).encode(), '"def"')
    assert cache.refresh().version == "v2"
    assert cache.version == "v2"


def test_http_304_renews_the_sync_time(server: PricingServer) -> None:
    now = [1_764_236_400.0]
    server.routes["/pricing"] = with_etag(BODY, '"abc"')
    cache = PricingCache(server.url("/pricing"), ttl=10, refresh_interval=5, clock=lambda: now[0])
    cache.refresh()
    now[0] += 8
    cache.refresh()  # 304
    now[0] += 8
    assert cache.get_price("svc", "op") == Price(per_ms=1e-6)
    assert cache.last_sync == 1_764_236_408_000


def test_http_304_without_a_previous_table_is_an_error(server: PricingServer) -> None:
    def not_modified(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(304)
        handler.end_headers()

    server.routes["/pricing"] = not_modified
    with pytest.raises(PricingError, match="HTTP 304"):
        HttpPricingSource(server.url("/pricing")).fetch()


@pytest.mark.parametrize("status", [500, 503, 404, 401])
def test_http_error_status_keeps_the_old_table(server: PricingServer, status: int) -> None:
    server.routes["/pricing"] = lambda h: send(h, BODY)
    cache = PricingCache(server.url("/pricing"))
    good = cache.refresh()
    server.routes["/pricing"] = lambda h: send(h, b'{"error": "down"}', status=status)
    with pytest.raises(PricingError, match=f"HTTP {status}"):
        cache.refresh()
    assert cache.current() is good
    assert f"HTTP {status}" in str(cache.stats()["last_error"])


def test_http_invalid_body_names_the_key(server: PricingServer) -> None:
    server.routes["/pricing"] = lambda h: send(h, b'{"prices": {"svc:op": {"per_ms": -5}}}')
    with pytest.raises(PricingError) as caught:
        HttpPricingSource(server.url("/pricing")).fetch()
    assert str(caught.value) == (
        f"{server.url('/pricing')}: prices['svc:op'].per_ms: must be a finite number >= 0, got -5.0"
    )


def test_http_slow_response_times_out(server: PricingServer) -> None:
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        send(handler, BODY)

    server.routes["/pricing"] = slow
    source = HttpPricingSource(server.url("/pricing"), read_timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(PricingError, match="timed out"):
            source.fetch()
        assert time.monotonic() - started < 5.0
    finally:
        release.set()


def test_http_trickling_body_hits_the_total_timeout(server: PricingServer) -> None:
    stop = threading.Event()

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(BODY)))
        handler.end_headers()
        for byte in BODY:
            if stop.wait(0.05):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    server.routes["/pricing"] = trickle
    source = HttpPricingSource(server.url("/pricing"), read_timeout=1.0, total_timeout=0.3)
    try:
        with pytest.raises(PricingError, match=r"not complete within 0\.3 s"):
            source.fetch()
    finally:
        stop.set()


def test_http_connection_refused(server: PricingServer) -> None:
    url = server.url("/pricing")
    server.close()
    with pytest.raises(PricingError, match="refused"):
        HttpPricingSource(url, connect_timeout=1.0).fetch()


def test_http_declared_oversize_body_is_refused_before_reading(server: PricingServer) -> None:
    def declared(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        handler.wfile.write(b"{")

    server.routes["/pricing"] = declared
    with pytest.raises(PricingError, match="response of 52428800 bytes exceeds"):
        HttpPricingSource(server.url("/pricing"), max_bytes=1024 * 1024).fetch()


def test_http_streamed_50mb_body_is_cut_off_not_loaded(server: PricingServer) -> None:
    total = 50 * 1024 * 1024
    chunk = b" " * (1024 * 1024)

    def stream(handler: BaseHTTPRequestHandler) -> None:
        # No Content-Length: HTTP/1.0 close-delimited body, so only the cap can stop it.
        handler.send_response(200)
        handler.end_headers()
        try:
            while server.bytes_sent < total:
                handler.wfile.write(chunk)
                server.bytes_sent += len(chunk)
        except OSError:
            pass

    server.routes["/pricing"] = stream
    with pytest.raises(PricingError, match="response exceeds the 8388608-byte limit"):
        HttpPricingSource(server.url("/pricing")).fetch()
    time.sleep(0.2)  # let the server notice the closed connection
    assert server.bytes_sent < total


def test_http_redirect_on_the_same_host_is_followed(server: PricingServer) -> None:
    def moved(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "/v2/pricing")
        handler.end_headers()

    server.routes["/pricing"] = moved
    server.routes["/v2/pricing"] = lambda h: send(h, BODY)
    assert HttpPricingSource(server.url("/pricing")).fetch().version == "v1"
    assert [path for path, _ in server.requests] == ["/pricing", "/v2/pricing"]


def test_http_redirect_to_another_host_is_refused_unless_allowed(server: PricingServer) -> None:
    def moved(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(301)
        handler.send_header("Location", server.url("/elsewhere", host="localhost"))
        handler.end_headers()

    server.routes["/pricing"] = moved
    server.routes["/elsewhere"] = lambda h: send(h, BODY)
    url = server.url("/pricing").replace("http://", "http://user:s3cret@")
    with pytest.raises(PricingError, match=r"refused HTTP 301 redirect to another host \(localh"):
        HttpPricingSource(url).fetch()
    assert len(server.requests) == 1

    allowed = HttpPricingSource(url, allow_redirect_hosts=["LOCALHOST"])
    assert allowed.fetch().version == "v1"
    (_, first), (_, second) = server.requests[1:]
    assert "Authorization" in first
    assert "Authorization" not in second  # credentials stay with the original host


def test_http_redirect_to_another_scheme_is_refused(server: PricingServer) -> None:
    def moved(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", "file:///etc/passwd?key=s3cret")
        handler.end_headers()

    server.routes["/pricing"] = moved
    with pytest.raises(PricingError, match="HTTP 302 redirect not followed") as caught:
        HttpPricingSource(server.url("/pricing")).fetch()
    assert "s3cret" not in str(caught.value)


def test_http_redirect_from_https_to_http_is_refused() -> None:
    policy = _RedirectPolicy(urlsplit("https://pricing.example/p"), frozenset())
    request = urllib.request.Request("https://pricing.example/p")
    with pytest.raises(PricingError, match="refused HTTP 302 redirect from https to http"):
        policy.redirect_request(
            request, io.BytesIO(), 302, "Found", HTTPMessage(), "http://pricing.example/p"
        )


def test_http_credentials_are_sent_but_never_shown(server: PricingServer) -> None:
    server.routes["/pricing"] = lambda h: send(h, b"{}", status=500)
    url = server.url("/pricing?token=t0psecret").replace("http://", "http://alice:pa%40ss@")
    source = HttpPricingSource(url, headers={"X-Team": "sre"})
    cache = PricingCache(source)
    with pytest.raises(PricingError) as caught:
        cache.refresh()
    _, headers = server.requests[-1]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:pa@ss").decode()
    assert headers["X-Team"] == "sre"
    shown = " ".join([str(caught.value), repr(source), repr(cache), str(cache.stats())])
    for secret in ("alice", "pa%40ss", "pa@ss", "t0psecret"):
        assert secret not in shown
    assert f"http://***@127.0.0.1:{server.port}/pricing?***" in str(caught.value)
    with pytest.raises(PricingStaleError) as stale:
        cache.current()
    assert "t0psecret" not in str(stale.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/p.json", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http:///nohost", "has no host"),
    ],
)
def test_http_source_rejects_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpPricingSource(url)


@pytest.mark.parametrize("name", ["connect_timeout", "read_timeout", "total_timeout", "max_bytes"])
def test_http_source_rejects_non_positive_limits(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        HttpPricingSource("http://127.0.0.1/p", **{name: 0})  # type: ignore[arg-type]


def test_refresher_over_http_survives_an_outage(server: PricingServer) -> None:
    server.routes["/pricing"] = with_etag(BODY, '"1"')
    cache = PricingCache(server.url("/pricing"), ttl=60, refresh_interval=0.05, retry_initial=0.01)
    cache.refresh()
    server.routes["/pricing"] = lambda h: send(h, b"oops", status=502)
    cache.start()
    try:
        deadline = time.monotonic() + 10
        while cache.stats()["refreshes_failed"] < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.get_price("svc", "op") == Price(per_ms=1e-6)
        server.routes["/pricing"] = with_etag(json.dumps(DOC_V2).encode(), '"2"')
        while cache.version != "v2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.version == "v2"
    finally:
        cache.stop()


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (PEM: key and certificate in one file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    pem = tmp_path / "server.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(pem), "-out", str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem.write_text(pem.read_text() + (tmp_path / "cert.pem").read_text())
    return pem


def test_https_source_verifies_the_server_certificate(certificate: Path) -> None:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate)
    server = PricingServer(tls)
    try:
        server.routes["/pricing"] = with_etag(BODY, '"1"')
        with pytest.raises(PricingError, match="CERTIFICATE_VERIFY_FAILED"):
            HttpPricingSource(server.url("/pricing")).fetch()
        trusted = ssl.create_default_context(cafile=str(certificate))
        source = HttpPricingSource(server.url("/pricing"), ssl_context=trusted)
        first = source.fetch()
        assert first.version == "v1"
        assert source.fetch() is first  # ETag/304 over TLS too
    finally:
        server.close()
