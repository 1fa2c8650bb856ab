"""The standard library's HTTP machinery as :class:`~otelcost.pricing.sources.HttpPricingSource`
uses it: timeouts per read, a redirect policy, error reasons.

Its own module so that ``http.client``, ``urllib.request``, ``ssl`` and ``email`` load only
when an http(s) pricing source is created, not with every ``import otelcost``.
"""

from __future__ import annotations

import http.client
import ssl
import time
import urllib.error
import urllib.request
from typing import IO, Any
from urllib.parse import SplitResult, urlsplit

from otelcost.errors import PricingError
from otelcost.pricing.sources import _SCHEMES, redact_url


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{text} ({type(exc).__name__})"


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follow redirects only within http(s), never to plain http from https, same host only;
    at most 5 in a row, never to a URL already visited, and not past the total timeout."""

    max_redirections = 5
    # urllib's default (4) lets a loop between two URLs run 9 requests before it stops.
    max_repeats = 1

    def __init__(self, origin: SplitResult, allowed_hosts: frozenset[str]) -> None:
        self._origin_scheme = origin.scheme.lower()
        self._origin_host = (origin.hostname or "").lower()
        self._allowed = allowed_hosts

    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        target = urlsplit(newurl)
        scheme, host = target.scheme.lower(), (target.hostname or "").lower()
        refusal = None
        if scheme not in _SCHEMES:
            refusal = f"to a {scheme or 'relative'} URL"
        elif self._origin_scheme == "https" and scheme == "http":
            refusal = "from https to http"
        elif host != self._origin_host and host not in self._allowed:
            refusal = f"to another host ({host}; allow it with allow_redirect_hosts)"
        deadline: float | None = getattr(req, "otelcost_deadline", None)
        if refusal is None and deadline is not None and time.monotonic() > deadline:
            refusal = "after the total timeout"
        if refusal is not None:
            fp.close()
            raise PricingError(
                f"{redact_url(req.full_url)}: refused HTTP {code} redirect {refusal}"
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.otelcost_deadline = deadline  # type: ignore[attr-defined]
            if host != self._origin_host:
                new.remove_header("Authorization")
        return new


class _HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, /, *, read_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # under the connect timeout; reads then use the read timeout
        self.sock.settimeout(self._read_timeout)


class _HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, /, *, read_timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()  # TCP connect and TLS handshake, both under the connect timeout
        self.sock.settimeout(self._read_timeout)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, read_timeout: float) -> None:
        super().__init__()
        self._read_timeout = read_timeout

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_HTTPConnection, req, read_timeout=self._read_timeout)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, read_timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._read_timeout = read_timeout
        self._ssl_context = context

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            _HTTPSConnection, req, context=self._ssl_context, read_timeout=self._read_timeout
        )
