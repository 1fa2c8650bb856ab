"""Where pricing tables come from: a dict, a JSON file or an http(s) URL.

Every source returns a whole, validated :class:`PricingTable` or raises PricingError; when
the data did not change (HTTP 304, identical file bytes) it returns the previous table
object, which keeps that table's memoised resolutions warm.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

from otelcost._version import __version__
from otelcost.errors import PricingError
from otelcost.pricing.table import PricingTable

if TYPE_CHECKING:  # the HTTP modules load when an HttpPricingSource is created
    import http.client
    import ssl

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DictPricingSource",
    "FilePricingSource",
    "HttpPricingSource",
    "PricingSource",
    "as_source",
    "load_document",
    "parse_bytes",
    "redact_url",
]

DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
_CHUNK: Final = 64 * 1024
_SCHEMES: Final = ("http", "https")


@runtime_checkable
class PricingSource(Protocol):
    """Anything that can produce a pricing table.

    ``fetch()`` returns a complete :class:`PricingTable` (build it with
    :meth:`PricingTable.parse`) or raises; :class:`~otelcost.PricingCache` turns any exception
    into a PricingError and keeps its current table. Returning the same table object as last
    time means "unchanged". ``fetch`` is never called concurrently by one cache.
    """

    def fetch(self) -> PricingTable: ...


def load_document(data: bytes, origin: str) -> object:
    """Decode a JSON pricing document strictly: no NaN/Infinity, no duplicate keys."""
    try:
        return json.loads(data, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise PricingError(f"{origin}: invalid JSON: nested too deeply") from None
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise PricingError(f"{origin}: invalid JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                # Two prices for one key: whichever JSON parser wins, one of them is silently lost.
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a valid JSON number")


def parse_bytes(data: bytes, origin: str) -> PricingTable:
    """Decode and validate a JSON pricing document; errors start with ``origin``."""
    try:
        return PricingTable.parse(load_document(data, origin))
    except PricingError as exc:
        if str(exc).startswith(f"{origin}: "):
            raise
        raise PricingError(f"{origin}: {exc}") from None


class DictPricingSource:
    """A pricing document held in memory; each fetch validates its current contents."""

    def __init__(self, doc: Mapping[str, object]) -> None:
        self._doc = doc

    def fetch(self) -> PricingTable:
        return PricingTable.parse(self._doc)

    def __repr__(self) -> str:
        return f"DictPricingSource(<{len(self._doc)} keys>)"


class _StaticSource:
    """A table given directly: every fetch returns it."""

    def __init__(self, table: PricingTable) -> None:
        self._table = table

    def fetch(self) -> PricingTable:
        return self._table

    def __repr__(self) -> str:
        return f"_StaticSource({self._table!r})"


class FilePricingSource:
    """A JSON pricing file, re-read on every fetch (at most ``max_bytes``)."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._last: tuple[bytes, PricingTable] | None = None  # swapped whole, never torn

    def fetch(self) -> PricingTable:
        origin = str(self._path)
        try:
            with self._path.open("rb") as fh:
                data = _read_file(fh, self._max_bytes, origin)
        except OSError as exc:
            raise PricingError(f"{origin}: cannot read: {exc.strerror or exc}") from None
        last = self._last
        if last is not None and last[0] == data:
            return last[1]
        table = parse_bytes(data, origin)
        self._last = (data, table)
        return table

    def __repr__(self) -> str:
        return f"FilePricingSource({str(self._path)!r})"


def _read_file(fh: IO[bytes], max_bytes: int, origin: str) -> bytes:
    data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PricingError(f"{origin}: larger than the {max_bytes}-byte limit")
    return data


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo and the query string become ``***``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))


class HttpPricingSource:
    """A pricing document served over http(s), fetched with the standard library.

    - ``connect_timeout`` bounds the TCP (and TLS) connect, ``read_timeout`` every socket read,
      ``total_timeout`` the whole exchange including a body that trickles in.
    - ``ETag`` is remembered and sent as ``If-None-Match``; a 304 returns the previous table.
    - The body is read incrementally and abandoned past ``max_bytes`` (also when the
      ``Content-Length`` announces more), so an oversized response is never held in memory.
    - Any status other than 2xx/304 is a PricingError; so is a redirect to another scheme
      than http(s), from https to http, or to another host unless listed in
      ``allow_redirect_hosts`` (credentials are not forwarded to other hosts).
    - Credentials in the URL (``https://user:pass@host/...``) are sent as HTTP Basic auth;
      extra ``headers`` (e.g. ``Authorization: Bearer ...``) are sent as given. Messages and
      the repr show the URL with userinfo and query replaced by ``***``.
    - Proxies come from the usual ``https_proxy``/``no_proxy`` environment variables.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        total_timeout: float = 30.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
        allow_redirect_hosts: Collection[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        import ssl
        import urllib.request

        from otelcost.pricing._http import _HTTPHandler, _HTTPSHandler, _RedirectPolicy

        parts = urlsplit(url)
        if parts.scheme.lower() not in _SCHEMES:
            raise ValueError(f"{redact_url(url)}: only http and https URLs are supported")
        if not parts.hostname:
            raise ValueError(f"{redact_url(url)}: the URL has no host")
        for name, value in (
            ("connect_timeout", connect_timeout),
            ("read_timeout", read_timeout),
            ("total_timeout", total_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self._display = redact_url(url)
        self._headers = {"Accept": "application/json", "User-Agent": f"otelcost/{__version__}"}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            import base64

            token = base64.b64encode(credentials.encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
            netloc = parts.netloc.rpartition("@")[2]
            parts = parts._replace(netloc=netloc)
        self._headers.update(headers or {})
        self._url = urlunsplit(parts)
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_bytes = max_bytes
        redirects = _RedirectPolicy(parts, frozenset(h.lower() for h in allow_redirect_hosts))
        context = ssl_context or ssl.create_default_context()
        self._opener = urllib.request.build_opener(
            redirects,
            _HTTPHandler(read_timeout),
            _HTTPSHandler(read_timeout, context),
        )
        # The last 200's table and ETag, swapped as one tuple so a 304 never pairs them wrongly.
        self._last: tuple[PricingTable, str | None] | None = None

    def __repr__(self) -> str:
        return f"HttpPricingSource({self._display!r})"

    def fetch(self) -> PricingTable:
        import http.client
        import urllib.error
        import urllib.request

        from otelcost.pricing._http import _reason

        last = self._last
        request = urllib.request.Request(self._url, headers=self._headers)
        if last is not None and last[1] is not None:
            request.add_header("If-None-Match", last[1])
        deadline = time.monotonic() + self._total_timeout
        request.otelcost_deadline = deadline  # type: ignore[attr-defined]  # for redirects
        try:
            with self._opener.open(request, timeout=self._connect_timeout) as response:
                body = self._read_body(response, deadline)
                etag = response.headers.get("ETag")
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 304 and last is not None:
                return last[0]
            if 300 <= exc.code < 400 and exc.code != 304:
                # urllib's reason names the target URL, which may carry credentials.
                raise PricingError(
                    f"{self._display}: HTTP {exc.code} redirect not followed "
                    "(not to an http(s) URL, or too many redirects)"
                ) from None
            raise PricingError(f"{self._display}: HTTP {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PricingError(f"{self._display}: {_reason(exc)}") from None
        table = parse_bytes(body, self._display)
        self._last = (table, etag)
        return table

    def _read_body(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise PricingError(
                f"{self._display}: response of {declared} bytes exceeds the "
                f"{self._max_bytes}-byte limit"
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise PricingError(
                    f"{self._display}: response not complete within {self._total_timeout} s"
                )
            # read1 returns after one socket read, so the deadline is checked while a slow
            # body trickles in; asking for one byte past the cap detects an oversized body.
            chunk = response.read1(min(_CHUNK, self._max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > self._max_bytes:
                raise PricingError(
                    f"{self._display}: response exceeds the {self._max_bytes}-byte limit"
                )
            chunks.append(chunk)


SourceLike = PricingSource | PricingTable | Mapping[str, object] | str | os.PathLike[str]


def as_source(source: SourceLike) -> PricingSource:
    """The source for a dict, a table, a JSON path, an http(s) URL or a PricingSource."""
    if isinstance(source, PricingTable):
        return _StaticSource(source)
    if isinstance(source, Mapping):
        return DictPricingSource(source)
    if isinstance(source, str) and "://" in source:
        return HttpPricingSource(source)
    if isinstance(source, str | os.PathLike):
        return FilePricingSource(source)
    if isinstance(source, PricingSource):
        return source
    raise TypeError(
        "pricing source must be a dict, a JSON file path, an http(s) URL, a PricingTable or "
        f"an object with fetch(), got {type(source).__name__}"
    )
