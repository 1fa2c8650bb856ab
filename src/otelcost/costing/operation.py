"""Service and operation names for pricing, derived from span data (docs/operations.md).

These helpers run on the span processor's worker thread for every span, so they never raise
on attribute values: anything that is not a ``str`` is ignored, strings are cut to
``MAX_VALUE_CHARS`` before use, control/format characters are removed and lone surrogates
become U+FFFD (so names always encode as UTF-8 JSON and print safely).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Collection, Container, Mapping
from typing import TypeAlias

from opentelemetry.trace import SpanKind

from otelcost.costing.normalize import (
    _MAX_CACHED_SEGMENT,
    PathNormalizer,
    _cached_segment,
    normalize_path,
    normalize_segment,
)

try:  # the compiled server rule (setup.py builds it where a C compiler is); else Python
    from otelcost.costing import _speedups
except ImportError:
    _speedups = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_OPERATION",
    "DEFAULT_SERVICE",
    "MAX_OPERATION_CHARS",
    "MAX_VALUE_CHARS",
    "NAMING_ATTRIBUTES",
    "OTHER",
    "RULE_DATABASE",
    "RULE_GENAI",
    "RULE_HTTP_CLIENT",
    "RULE_HTTP_SERVER",
    "RULE_MESSAGING",
    "RULE_RPC",
    "RULE_SPAN_NAME",
    "CardinalityGuard",
    "PathRule",
    "derive_operation",
    "explain_operation",
    "naming_keys",
    "path_rule",
    "routed",
    "service_name",
]

DEFAULT_SERVICE = "unknown_service"
"""Service name when neither the resource nor the span names a real one."""

DEFAULT_OPERATION = "unknown_operation"
"""Operation name for a span with no usable attribute and an empty name."""

OTHER = "OTHER"
"""The operation a CardinalityGuard returns once a service has too many distinct ones."""

MAX_VALUE_CHARS = 1024
"""Attribute values and span names are cut to this many characters before use."""

MAX_OPERATION_CHARS = 512
"""Derived operation names are cut to this many characters."""

# HTTP methods named by the semantic conventions; anything else becomes "_OTHER" as the
# conventions require, so arbitrary client-chosen methods cannot create new operations.
_HTTP_METHODS = frozenset(
    ("CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE")
)
_OTHER_METHOD = "_OTHER"

# C0/C1 controls and everything else str.isprintable() rejects except plain separators:
# format characters (bidi overrides, zero-width), unassigned and private-use code points.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]+"
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
_NAME_NEEDS_WORK = re.compile(r"[0-9@%/]")


def _clean(value: object) -> str | None:
    """A usable string from an attribute value, or None (non-strings, blank strings)."""
    if not isinstance(value, str):
        return None
    if len(value) > MAX_VALUE_CHARS:
        value = value[:MAX_VALUE_CHARS]
    if not value.isprintable():
        if _SURROGATE.search(value):
            value = _SURROGATE.sub("\ufffd", value)
        value = _UNPRINTABLE.sub("", _WHITESPACE.sub(" ", value))
    value = value.strip()
    return value or None


def _is_default_service(name: str) -> bool:
    # The SDK fills in "unknown_service" or "unknown_service:<executable>" when unset.
    return name == DEFAULT_SERVICE or name.startswith(DEFAULT_SERVICE + ":")


def service_name(
    resource_attributes: Mapping[str, object], attributes: Mapping[str, object]
) -> str:
    """The service a span is priced under.

    The resource's ``service.name``, unless it is missing or the SDK default
    (``unknown_service`` / ``unknown_service:<executable>``); then the span attribute
    ``service.name``; then ``"unknown_service"``. The SDK default is not returned as is
    because its ``:`` would split pricing keys (``service:operation``) in the wrong place.
    """
    for source in (resource_attributes, attributes):
        name = _clean(source.get("service.name"))
        if name is not None and not _is_default_service(name):
            return name
    return DEFAULT_SERVICE


def _method(attributes: Mapping[str, object]) -> str | None:
    raw = _clean(attributes.get("http.request.method"))
    if raw is None:
        raw = _clean(attributes.get("http.method"))
    if raw is None:
        return None
    if raw in _HTTP_METHODS:
        return raw
    upper = raw.upper()
    return upper if upper in _HTTP_METHODS else _OTHER_METHOD


def _with_method(method: str | None, target: str) -> str:
    return target if method is None else f"{method} {target}"


def _normalize_name(name: str, normalize: Callable[[str], str]) -> str:
    """Words starting with "/" are paths for ``normalize``; the others get the segment rules."""
    if _NAME_NEEDS_WORK.search(name) is None:
        return name
    return " ".join(
        normalize(word) if word.startswith("/") else normalize_segment(word)
        for word in name.split(" ")
    )


def _first(attributes: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    """The first key's value that is a usable string (stable names come first in ``keys``)."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and (value := _clean(value)) is not None:
            return value
    return None


# -- the attributes each rule reads, stable convention first, then the old name --------------

_GENAI = ("gen_ai.operation.name", "gen_ai.request.model")
_DB_SYSTEM = ("db.system.name", "db.system")
_DB_OPERATION = ("db.operation.name", "db.operation")
_DB_COLLECTION = ("db.collection.name", "db.sql.table", "db.mongodb.collection")
_DB_QUERY = ("db.query.summary", "db.query.text", "db.statement")
_MESSAGING_SYSTEM = ("messaging.system",)
_MESSAGING_OPERATION = (
    "messaging.operation.name",
    "messaging.operation",
    "messaging.operation.type",
)
_MESSAGING_DESTINATION = (
    "messaging.destination.template",
    "messaging.destination.name",
    "messaging.destination",
)
_MESSAGING_TEMPORARY = ("messaging.destination.temporary", "messaging.destination.anonymous")
_RPC = ("rpc.service", "rpc.method")
_HTTP_METHOD = ("http.request.method", "http.method")
_HTTP_PATH = ("url.path", "http.target")
_HTTP_URL = ("url.full", "http.url")
_HTTP_HOST = ("server.address", "net.peer.name")
_HTTP_PORT = ("server.port", "net.peer.port")
_HTTP_SCHEME = ("url.scheme", "http.scheme")

_DB_KEYS = _DB_SYSTEM + _DB_OPERATION + _DB_COLLECTION + _DB_QUERY
_MESSAGING_KEYS = (
    _MESSAGING_SYSTEM + _MESSAGING_OPERATION + _MESSAGING_DESTINATION + _MESSAGING_TEMPORARY
)
# Without http.route: a usable route never reaches the memo that uses these keys.
_SERVER_KEYS = _HTTP_METHOD + _HTTP_PATH + _HTTP_URL
_CLIENT_KEYS = _HTTP_METHOD + _HTTP_URL + _HTTP_HOST + _HTTP_PORT + _HTTP_SCHEME + _HTTP_PATH

NAMING_ATTRIBUTES: tuple[str, ...] = tuple(
    dict.fromkeys(
        ("http.route", *_GENAI, *_DB_KEYS, *_MESSAGING_KEYS, *_RPC, *_SERVER_KEYS, *_CLIENT_KEYS)
    )
)
"""Every span attribute ``derive_operation`` reads: the operation is a function of the span's
kind, its name and these values alone (a caller may memoise on them)."""

# Rules, as reported by explain_operation().
RULE_GENAI = "genai"
RULE_DATABASE = "database"
RULE_MESSAGING = "messaging"
RULE_RPC = "rpc"
RULE_HTTP_SERVER = "http.server"
RULE_HTTP_CLIENT = "http.client"
RULE_SPAN_NAME = "span name"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,30})://([^/?#]*)(.*)", re.DOTALL)
_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:]*)(?::([0-9]{1,5}))?")
_IP_LITERAL = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]*\]")
# A command or SQL verb: the first word of a query, when no operation attribute exists.
_VERB = re.compile(r"\s*([A-Za-z]{1,32})\b")
# The table a plain SQL statement works on: identifiers only (at most 63 characters, as in
# PostgreSQL), never a value; string literals are blanked first so none can pose as a table.
_IDENT = r'"?[A-Za-z_][A-Za-z0-9_$]{0,62}"?(?:\."?[A-Za-z_][A-Za-z0-9_$]{0,62}"?)?(?![A-Za-z0-9_$])'
_SQL_STRING = re.compile(r"'[^']*'")
_SQL_TABLE = re.compile(
    rf"\s*(?:SELECT\b.*?\bFROM|DELETE\s+FROM|INSERT\s+INTO|UPDATE|MERGE\s+INTO)\s+({_IDENT})",
    re.IGNORECASE | re.DOTALL,
)


def _genai(attributes: Mapping[str, object]) -> str | None:
    operation = _clean(attributes.get("gen_ai.operation.name"))
    if operation is None:
        return None
    # The model is kept verbatim: "gpt-5.6-luna" and "gpt-5.6" are priced apart.
    model = _clean(attributes.get("gen_ai.request.model"))
    return operation if model is None else f"{operation} {model}"


def _database(attributes: Mapping[str, object]) -> str | None:
    system = _first(attributes, _DB_SYSTEM)
    if system is None:
        return None
    query = _first(attributes, _DB_QUERY)
    operation = _first(attributes, _DB_OPERATION)
    if operation is None and query is not None:
        # "GET key", "SELECT * FROM orders WHERE ...": only the first word, never the rest.
        verb = _VERB.match(query)
        operation = verb.group(1).upper() if verb is not None else None
    collection = _first(attributes, _DB_COLLECTION)
    if collection is None and query is not None and operation is not None:
        table = _SQL_TABLE.match(_SQL_STRING.sub("''", query) if "'" in query else query)
        collection = table.group(1).replace('"', "") if table is not None else None
    words = [system]
    if operation is not None:
        words.append(normalize_segment(operation))
    if collection is not None:
        words.append(normalize_segment(collection))
    return " ".join(words)


def _messaging(attributes: Mapping[str, object]) -> str | None:
    system = _first(attributes, _MESSAGING_SYSTEM)
    if system is None:
        return None
    words = [system]
    operation = _first(attributes, _MESSAGING_OPERATION)
    if operation is not None:
        words.append(normalize_segment(operation))
    if any(attributes.get(key) is True for key in _MESSAGING_TEMPORARY):
        words.append("(temporary)")
    else:
        destination = _first(attributes, _MESSAGING_DESTINATION)
        if destination is not None:
            words.append(normalize_segment(destination))
    return " ".join(words)


def _rpc(attributes: Mapping[str, object]) -> str | None:
    method = _clean(attributes.get("rpc.method"))
    if method is None:
        return None
    service = _clean(attributes.get("rpc.service"))
    if service is not None:
        return f"{service}/{method}"
    # Newer conventions put the full name ("pkg.Service/Method") in rpc.method alone.
    return method if "/" in method else None


def _route(route: str) -> str:
    """A route template as the server sees it: one leading "/", no trailing one.

    Django reports ``health/`` (and ``^health/$`` for regex routes), Flask and Starlette
    ``/health``: all three become ``/health``, like the normalized request path.
    """
    if route.startswith("^"):
        route = route[1:].removesuffix("$")
    return "/" + route.strip("/")


def _http_server(attributes: Mapping[str, object], normalize: Callable[[str], str]) -> str | None:
    """A server span without a usable route (``_server_route`` names those)."""
    path = _first(attributes, _HTTP_PATH)
    if path is None:
        path = _first(attributes, _HTTP_URL)  # Django 404s: only http.url
    if path is None:
        return None
    return _with_method(_method(attributes), normalize(path))


PathRule: TypeAlias = Callable[[Mapping[str, object], Callable[[str], str]], str | None]
"""A naming rule for spans a raw path or URL names (``path_rule``)."""


def path_rule(
    kind: SpanKind | None, names: Collection[str], *, compiled: bool = False
) -> PathRule | None:
    """For spans of this kind and these attribute names that a raw path or URL names (a
    server span without ``http.route``, an HTTP client call with a URL), the rule that
    names them: ``rule(attributes, normalize)`` is ``derive_operation``'s result, or None
    when the span has too little (its name decides). None for every other span.

    The raw path differs per request, so a caller memoizing on the values the rule reads
    would keep an entry per request; it can memoize on this result instead. ``compiled``:
    the server rule in C where it is built (same results, see ``_server_rule``)."""
    client = _is_client(kind, names)
    if not client and "http.route" in names:
        return None
    if not any(key in names for key in _RAW_PATH_KEYS):
        return None
    rule = _rule(names, client)[0]
    if rule == RULE_HTTP_SERVER:
        return _server_rule(
            tuple(key for key in _RAW_PATH_KEYS if key in names),
            next((key for key in _HTTP_METHOD if key in names), None),
            compiled=compiled,
        )
    if rule == RULE_HTTP_CLIENT:
        return _cut_client
    return None


_RAW_PATH_KEYS = (*_HTTP_PATH, *_HTTP_URL)


def _server_rule(path_keys: tuple[str, ...], method_key: str | None, *, compiled: bool) -> PathRule:
    """``_http_server`` for spans whose attribute names are known: only the path keys
    present are read, in their order, and the common values (a printable string, a
    standard method) skip ``_clean``; anything else takes the complete code.

    ``compiled``: where the extension is built, ``_speedups.ServerRule`` around this rule:
    a new raw path per request makes it the naming step that runs per span, and in C the
    common case (a printable ASCII path, a standard method, a normalizer without user
    rules) costs no Python frame; it calls this rule for everything else."""

    def rule(attributes: Mapping[str, object], normalize: Callable[[str], str]) -> str | None:
        for key in path_keys:
            path = attributes.get(key)
            if type(path) is str and len(path) <= MAX_VALUE_CHARS and path.isprintable():
                path = path.strip()
            else:
                path = _clean(path)
            if path:
                break
        else:
            return None
        method = None if method_key is None else attributes.get(method_key)
        if type(method) is not str or method not in _HTTP_METHODS:
            method = _method(attributes)
        target = normalize(path)
        return (target if method is None else f"{method} {target}")[:MAX_OPERATION_CHARS]

    if not compiled or _speedups is None:
        return rule
    return _speedups.ServerRule(
        rule,
        path_keys,
        method_key,
        _HTTP_METHODS,
        PathNormalizer,
        _cached_segment,
        MAX_VALUE_CHARS,
        MAX_OPERATION_CHARS,
        _MAX_CACHED_SEGMENT,
    )


def _cut_client(attributes: Mapping[str, object], normalize: Callable[[str], str]) -> str | None:
    operation = _http_client(attributes, normalize)
    return None if operation is None else operation[:MAX_OPERATION_CHARS]


def _port(attributes: Mapping[str, object]) -> int | None:
    for key in _HTTP_PORT:
        value = attributes.get(key)
        if type(value) is int and 0 < value < 65536:
            return value
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 5:
            return int(value)
    return None


def _http_client(attributes: Mapping[str, object], normalize: Callable[[str], str]) -> str | None:
    method = _method(attributes)
    url = _first(attributes, _HTTP_URL)
    scheme = _first(attributes, _HTTP_SCHEME)
    host = _first(attributes, _HTTP_HOST)
    port = _port(attributes)
    path: str | None = None
    parts = _URL.match(url) if url is not None else None
    if parts is not None:
        scheme = scheme or parts.group(1)
        # Drop any user:password@ from the authority: credentials never become names.
        host_port = _HOST_PORT.match(parts.group(2).rpartition("@")[2])
        if host_port is not None:
            host = host or host_port.group(1) or None
            if port is None and host_port.group(2):
                port = int(host_port.group(2))
        path = parts.group(3)
    elif url is not None and url.startswith("/"):
        path = url
    if path is None:
        path = _first(attributes, _HTTP_PATH)
    if host is None:
        return None
    host = host.lower()
    if _IP_LITERAL.fullmatch(host) is None:
        host = normalize_segment(host)  # "shard-17.db.internal" -> "shard-*.db.internal"
    scheme = scheme.lower() if scheme is not None else None
    default = _DEFAULT_PORTS.get(scheme) if scheme is not None else None
    if port is not None and port != default and (scheme is not None or port not in (80, 443)):
        host = f"{host}:{port}"
    # The host leads, so a client call never reads like a server route ("GET /users/*").
    return _with_method(method, host + (normalize(path) if path else ""))


def _span_name(name: str, normalize: Callable[[str], str]) -> str:
    cleaned = _clean(name)
    return DEFAULT_OPERATION if cleaned is None else _normalize_name(cleaned, normalize)


_MEMO_SIZE = 8192
# Memos of derive_operation, each bounded by emptying it when full (no per-hit bookkeeping);
# reads and writes are single dict operations, atomic under the GIL.
# (route, http.request.method, http.method) -> operation, for server spans with a route:
_route_memo: dict[tuple[object, ...], str] = {}
# (rule, normalize, span name, the values of the attributes the rule reads) -> operation:
_memo: dict[tuple[object, ...], str] = {}


def _is_client(kind: SpanKind | None, attributes: Container[str]) -> bool:
    """An outbound call: a CLIENT or PRODUCER span. Without a kind, a span with the stable
    client attribute ``url.full`` and no server ``url.path`` (servers never set url.full)."""
    if kind is None:
        return "url.full" in attributes and "url.path" not in attributes
    return kind is SpanKind.CLIENT or kind is SpanKind.PRODUCER


def _rule(attributes: Container[str], client: bool) -> tuple[str, tuple[str, ...]]:
    """Which rule names the span, and the attributes that rule reads."""
    if "gen_ai.operation.name" in attributes:
        return RULE_GENAI, _GENAI
    if "db.system.name" in attributes or "db.system" in attributes:
        return RULE_DATABASE, _DB_KEYS
    if "messaging.system" in attributes:
        return RULE_MESSAGING, _MESSAGING_KEYS
    if "rpc.method" in attributes:
        return RULE_RPC, _RPC
    if client:
        return RULE_HTTP_CLIENT, _CLIENT_KEYS
    return RULE_HTTP_SERVER, _SERVER_KEYS


def _apply(
    rule: str, name: str, attributes: Mapping[str, object], normalize: Callable[[str], str]
) -> tuple[str, str]:
    """(operation, rule): the rule's name for the span, else (too little to go on) its name."""
    operation = _RULES[rule](attributes, normalize)
    if operation is None:
        rule, operation = RULE_SPAN_NAME, _span_name(name, normalize)
    return operation[:MAX_OPERATION_CHARS], rule


def _remember(memo: dict[tuple[object, ...], str], key: tuple[object, ...], value: str) -> str:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


def _server_route(attributes: Mapping[str, object]) -> str | None:
    route = _clean(attributes.get("http.route"))
    return None if route is None else _with_method(_method(attributes), _route(route))


_RULES: dict[str, Callable[[Mapping[str, object], Callable[[str], str]], str | None]] = {
    RULE_GENAI: lambda attributes, _: _genai(attributes),
    RULE_DATABASE: lambda attributes, _: _database(attributes),
    RULE_MESSAGING: lambda attributes, _: _messaging(attributes),
    RULE_RPC: lambda attributes, _: _rpc(attributes),
    RULE_HTTP_CLIENT: _http_client,
    RULE_HTTP_SERVER: _http_server,
}


_ROUTE_KEYS = ("http.route", *_HTTP_METHOD)


def naming_keys(kind: SpanKind | None, names: Collection[str]) -> tuple[str, ...]:
    """The attributes whose values, with the span's kind and name, decide the operation of
    any span whose attribute names are ``names``: those of ``names`` that the applicable
    rule reads (which rule applies depends on the kind and on which names are present).

    A server span with ``http.route`` reads the route and the method only (never the raw
    path, which differs per request), provided the route is usable: ``routed`` tells.
    Callers may memoise ``derive_operation`` on these values (plus kind and name).
    """
    present = frozenset(names)
    client = _is_client(kind, present)
    keys = _ROUTE_KEYS if not client and "http.route" in present else _rule(present, client)[1]
    return tuple(key for key in keys if key in present)


def routed(kind: SpanKind | None, attributes: Mapping[str, object]) -> bool:
    """Whether ``derive_operation`` names this span by its ``http.route`` (a server span
    whose route is usable): then ``naming_keys`` are the route and the method."""
    return not _is_client(kind, attributes) and _server_route(attributes) is not None


def derive_operation(
    name: str,
    attributes: Mapping[str, object],
    normalize: Callable[[str], str] = normalize_path,
    *,
    kind: SpanKind | None = None,
) -> str:
    """The operation a span is priced under, by what the span is (docs/operations.md).

    ``kind`` is the span's kind (CLIENT and PRODUCER spans are outbound calls); old and
    stable semantic conventions are both read, the stable name first. The first rule whose
    attributes the span has decides:

    1. HTTP server (not CLIENT/PRODUCER, with ``http.route``): the method and the route
       with one leading ``/`` and no trailing one, so Django's ``health/`` and Flask's
       ``/health`` are both ``"GET /health"``; the route template is kept as is:
       ``"GET /users/{id}"``;
    2. GenAI (``gen_ai.operation.name``): the operation and ``gen_ai.request.model``
       verbatim (never normalized): ``"chat gpt-5.6-luna"``;
    3. database or cache (``db.system.name`` / ``db.system``): system, operation
       (``db.operation.name`` / ``db.operation``, else the query's first word) and
       collection (``db.collection.name`` / ``db.sql.table``, else the table a plain
       ``SELECT``/``INSERT``/``UPDATE``/``DELETE`` names): ``"postgresql SELECT orders"``,
       ``"redis GET"``; never the statement's values;
    4. messaging (``messaging.system``): system, operation and destination
       (``"(temporary)"`` for temporary or anonymous ones): ``"kafka send orders"``;
    5. RPC (``rpc.method``): ``rpc.service/rpc.method``: ``"helloworld.Greeter/SayHello"``;
    6. HTTP client (kind CLIENT or PRODUCER; without a kind, a span with ``url.full``
       and no ``url.path``): the method, the downstream host
       (``server.address`` / ``net.peer.name``, else the URL's; ``:port`` unless the
       scheme's default; IP literals kept, host names segment-normalized) and the
       normalized path of ``url.full`` / ``http.url``: ``"GET api.example.com/users/*"``;
    7. HTTP server without a route: the method and the normalized ``url.path`` /
       ``http.target`` / path of ``http.url``: ``"GET /users/*"``;
    8. otherwise, or when a rule finds too little (a client span without a host), the
       span name, its words normalized (those starting with ``/`` by ``normalize``, the
       others by ``normalize_segment``): ``"charge card 4242"`` -> ``"charge card *"``;
       ``"unknown_operation"`` when the name is empty.

    Methods outside the standard set become ``_OTHER``; where no method attribute exists
    the method is left out. The result is at most ``MAX_OPERATION_CHARS`` characters. It
    is memoised on (kind, name, the values of the ``NAMING_ATTRIBUTES`` its rule reads,
    ``normalize``), so a repeat costs a few dict lookups. ``normalize`` is the path
    normalizer, e.g. a ``PathNormalizer`` with user rules; it must be a pure function.
    """
    get = attributes.get
    client = _is_client(kind, attributes)
    route = None if client else get("http.route")
    try:
        if route is not None:
            # The commonest span, a server request with a route, depends on three values.
            key: tuple[object, ...] = (route, get("http.request.method"), get("http.method"))
            found = _route_memo.get(key)
            if found is not None:
                return found
            operation = _server_route(attributes)
            if operation is not None:
                return _remember(_route_memo, key, operation[:MAX_OPERATION_CHARS])
        rule, keys = _rule(attributes, client)
        key = (rule, normalize, name, *map(get, keys))
        found = _memo.get(key)
    except TypeError:  # an unhashable value (a list in a hand-made dict): just compute
        return explain_operation(name, attributes, normalize, kind=kind)[0]
    if found is not None:
        return found
    return _remember(_memo, key, _apply(rule, name, attributes, normalize)[0])


def explain_operation(
    name: str,
    attributes: Mapping[str, object],
    normalize: Callable[[str], str] = normalize_path,
    *,
    kind: SpanKind | None = None,
) -> tuple[str, str]:
    """``(operation, rule)``: ``derive_operation``'s result and which rule (``RULE_*``) made it."""
    client = _is_client(kind, attributes)
    if not client:
        route = _server_route(attributes)
        if route is not None:
            return route[:MAX_OPERATION_CHARS], RULE_HTTP_SERVER
    rule, _ = _rule(attributes, client)
    return _apply(rule, name, attributes, normalize)


class CardinalityGuard:
    """Bounds the distinct operations per service: beyond ``limit``, operations fold to OTHER.

    ``admit(service, operation)`` returns ``operation`` when the service already uses it or
    has fewer than ``limit`` distinct operations (the operation is then remembered), and
    ``"OTHER"`` otherwise. At most ``max_services`` services are tracked; operations of any
    further service all fold to ``"OTHER"`` (their folds are counted under the key
    ``"OTHER"`` in ``folded_by_service()``), so memory stays below
    ``limit * max_services`` remembered names. Folding the service name itself is the
    caller's choice.

    Thread-safe. Admitting a known operation takes no lock: it is one dict lookup and one
    set membership test, each a single C-level operation on a builtin container (atomic
    under the GIL, and per-object locked on free-threaded builds), and the sets only ever
    grow, under the lock. A racing reader that misses falls through to the locked path,
    which checks again.
    """

    __slots__ = ("_folded", "_folded_by_service", "_lock", "_operations", "limit", "max_services")

    def __init__(self, limit: int = 1000, *, max_services: int = 100) -> None:
        if limit < 0 or max_services < 0:
            raise ValueError(f"limit and max_services must be >= 0, got {limit}, {max_services}")
        self.limit = limit
        self.max_services = max_services
        self._operations: dict[str, set[str]] = {}
        self._folded = 0
        self._folded_by_service: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, service: str, operation: str) -> str:
        """``operation`` if it fits within the service's limit, else ``"OTHER"``."""
        known = self._operations.get(service)
        if known is not None and operation in known:
            return operation
        return self._admit_new(service, operation)

    def _admit_new(self, service: str, operation: str) -> str:
        with self._lock:
            known = self._operations.get(service)
            if known is None and len(self._operations) < self.max_services:
                known = self._operations[service] = set()
            if known is not None:
                if operation in known:
                    return operation
                if len(known) < self.limit:
                    known.add(operation)
                    return operation
                key = service
            else:
                key = OTHER
            self._folded += 1
            self._folded_by_service[key] = self._folded_by_service.get(key, 0) + 1
            return OTHER

    @property
    def folded(self) -> int:
        """How many admits returned ``"OTHER"`` in total."""
        return self._folded

    def folded_by_service(self) -> dict[str, int]:
        """Fold counts per tracked service (untracked services under ``"OTHER"``); a copy."""
        with self._lock:
            return dict(self._folded_by_service)

    def __repr__(self) -> str:
        return (
            f"CardinalityGuard(limit={self.limit}, max_services={self.max_services}, "
            f"services={len(self._operations)}, folded={self._folded})"
        )
