"""Service and operation names for pricing, derived from span data (DESIGN §4).

These helpers run on the span processor's worker thread for every span, so they never raise
on attribute values: anything that is not a ``str`` is ignored, strings are cut to
``MAX_VALUE_CHARS`` before use, control/format characters are removed and lone surrogates
become U+FFFD (so names always encode as UTF-8 JSON and print safely).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping

from otelcost.costing.normalize import normalize_path, normalize_segment

__all__ = [
    "DEFAULT_OPERATION",
    "DEFAULT_SERVICE",
    "MAX_OPERATION_CHARS",
    "MAX_VALUE_CHARS",
    "OTHER",
    "CardinalityGuard",
    "derive_operation",
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


def derive_operation(
    name: str,
    attributes: Mapping[str, object],
    normalize: Callable[[str], str] = normalize_path,
) -> str:
    """The operation a span is priced under; the first rule that applies wins.

    1. ``http.route`` (a low-cardinality template, used as is), prefixed by the method
       (``http.request.method``, else ``http.method``; methods outside the standard set
       become ``_OTHER``): ``"GET /users/{id}"``;
    2. ``rpc.service`` + ``"/"`` + ``rpc.method``: ``"helloworld.Greeter/SayHello"``;
    3. the method and ``normalize(url.path)``, else ``normalize(http.target)`` (its query
       string dropped): ``"GET /users/*"``;
    4. the span name, its words (split on spaces) normalized: those starting with ``/`` by
       ``normalize``, the others by ``normalize_segment``: ``"GET /users/123"`` ->
       ``"GET /users/*"``, ``"charge card 4242"`` -> ``"charge card *"``,
       ``"SELECT orders"`` unchanged; ``"unknown_operation"`` when the name is empty.

    The method is omitted where no method attribute exists. The result is at most
    ``MAX_OPERATION_CHARS`` characters. ``normalize`` is the path normalizer to use, e.g.
    a ``PathNormalizer`` with user rules.
    """
    method = _method(attributes)
    route = _clean(attributes.get("http.route"))
    if route is not None:
        operation = _with_method(method, route)
    else:
        rpc_service = _clean(attributes.get("rpc.service"))
        rpc_method = _clean(attributes.get("rpc.method")) if rpc_service is not None else None
        if rpc_service is not None and rpc_method is not None:
            operation = f"{rpc_service}/{rpc_method}"
        else:
            path = _clean(attributes.get("url.path"))
            if path is None:
                path = _clean(attributes.get("http.target"))
            if path is not None:
                operation = _with_method(method, normalize(path))
            else:
                cleaned = _clean(name)
                operation = (
                    DEFAULT_OPERATION if cleaned is None else _normalize_name(cleaned, normalize)
                )
    return operation[:MAX_OPERATION_CHARS]


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
