"""Pricing one ended span: service, operation, what the price applies to, and the cost.

Runs wherever the processor prices: on the thread that ends the span (the SDK's ending
hook) or on the copy path's pricing worker. It never raises for span data and does no I/O.
Repeat spans cost a few dict lookups: what naming and price matching depend on (the span's
resource, kind, name and the few attributes naming reads) maps to a memoized ``Named``,
which keeps the PriceMatch and the constant ``cost.*`` attributes of the current table.

A ``SpanCost`` is the single result every output is built from: the ``cost.*`` span
attributes, the per-span CostRecord and the sums, so their amounts are equal by
construction.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Final, NamedTuple

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.util.types import AttributeValue

from otelcost.costing._calls import RESPONSE_ID, CallDedupe
from otelcost.costing.normalize import normalize_path
from otelcost.costing.operation import (
    NAMING_ATTRIBUTES,
    OTHER,
    CardinalityGuard,
    derive_operation,
    service_name,
)
from otelcost.errors import PricingError, PricingNotFoundError, PricingStaleError
from otelcost.money import DEFAULT_CURRENCY, from_nanos
from otelcost.pricing import PricingCache, PricingTable
from otelcost.pricing.table import PriceMatch
from otelcost.record import _MAX_TS_MS, _MIN_TS_MS, CostRecord

__all__ = [
    "CURRENCY_MISMATCH",
    "ENVIRONMENT_ATTRIBUTES",
    "INVALID_SPAN",
    "MAX_ERROR_CHARS",
    "NOT_FOUND",
    "PRICING_ERROR",
    "STALE",
    "VERSION_ATTRIBUTES",
    "Coster",
    "Named",
    "PricingSnapshot",
    "SpanCost",
    "deploy_of",
]

_logger = logging.getLogger(__name__)

MAX_ERROR_CHARS: Final = 120
"""``cost.error`` and the record's error are at most this long: reason, then the key."""

# Error reasons: the text before ":" in CostRecord.error and the cost.error attribute.
STALE: Final = "pricing_stale"
NOT_FOUND: Final = "pricing_not_found"
CURRENCY_MISMATCH: Final = "currency_mismatch"
PRICING_ERROR: Final = "pricing_error"
INVALID_SPAN: Final = "invalid_span"

# Without a price we do not know which attributes are usage; GenAI token counts are the
# usage inputs that matter for re-pricing, so an unpriced record keeps those.
_FALLBACK_USAGE_PREFIX: Final = "gen_ai.usage."
_EMPTY: Final[Mapping[str, float]] = MappingProxyType({})
# Enum members hash through a Python-level __hash__; their ids hash in C.
_ENTRY_KIND_IDS: Final = frozenset((id(SpanKind.SERVER), id(SpanKind.CONSUMER)))
_SOURCE: Final = "otelcost"
_new_tuple: Final = tuple.__new__
_NAMING_SET: Final = frozenset(NAMING_ATTRIBUTES)


def _no_values(attributes: Mapping[str, object]) -> object:
    return ()


# One reader per set of present naming attributes, shared by every Coster.
_readers: dict[tuple[str, ...], Callable[[Mapping[str, object]], object]] = {}
_MEMO_SIZE: Final = 8_192


def _error(reason: str, detail: object) -> str:
    text = f"{reason}: {detail}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


class PricingSnapshot:
    """One pricing table (or the reason there is none), shared by every span priced with it."""

    __slots__ = ("currency", "error", "region", "table", "version")

    def __init__(
        self,
        table: PricingTable | None,
        currency: str,
        region: str | None,
        version: str | None,
        error: str | None,
    ) -> None:
        self.table = table
        self.currency = currency
        self.region = region
        self.version = version
        self.error = error


class Binding(NamedTuple):
    """An operation's price under one snapshot: the match (None: no key matches), the
    error every span of it gets (None: priced) and the constant ``cost.*`` attributes
    (a plain dict, never modified: ``dict.update`` from a dict is the fast path).
    ``nested``: the binding of its nested spans where another key prices them (a ``*:``
    key naming the operation before the service's bare ``*``), else None."""

    snapshot: PricingSnapshot
    match: PriceMatch | None
    error: str | None
    attributes: Mapping[str, AttributeValue]
    nested: Binding | None = None


class Named:
    """What one kind of span is: its service and operation, and its price per snapshot.

    ``entry_kind``: a SERVER or CONSUMER span, an entry span whatever its parent.
    ``folded``: the cardinality guard folded the operation into OTHER.
    ``deploy``: the (service version, deployment environment) of the span's resource.
    ``binding`` is replaced whole when the snapshot changes (one attribute store), so a
    racing thread sees either binding, never a mix; both compute the same values.
    """

    __slots__ = ("binding", "deploy", "entry_kind", "folded", "operation", "service")

    def __init__(
        self,
        service: str,
        operation: str,
        *,
        entry_kind: bool,
        folded: bool,
        deploy: tuple[str | None, str | None] = (None, None),
    ) -> None:
        self.service = service
        self.deploy = deploy
        self.operation = operation
        self.entry_kind = entry_kind
        self.folded = folded
        self.binding: Binding | None = None

    def bind(self, snap: PricingSnapshot) -> Binding:
        """This operation's Binding under ``snap`` (computed once per snapshot)."""
        binding = self.binding
        if binding is not None and binding.snapshot is snap:
            return binding
        match = nested = None
        error = snap.error
        if error is None and snap.table is not None:
            match = snap.table.match(self.service, self.operation)
            if match is None:
                error = _error(NOT_FOUND, f"{self.service}:{self.operation}")
            elif not self.entry_kind:
                nested = snap.table.match(self.service, self.operation, nested=True)
        binding = Binding(snap, match, error, self._attributes(snap, match))
        if nested is not None and nested is not match:
            binding = binding._replace(
                nested=Binding(snap, nested, None, self._attributes(snap, nested))
            )
        self.binding = binding
        return binding

    def _attributes(
        self, snap: PricingSnapshot, match: PriceMatch | None
    ) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "cost.currency": snap.currency,
            "cost.source": _SOURCE,
            "cost.operation": self.operation,
        }
        if snap.region is not None:
            attributes["cost.pricing_region"] = snap.region
        if snap.version is not None:
            attributes["cost.pricing_version"] = snap.version
        if match is not None:
            attributes["cost.price_key"] = match.key
        return attributes


class SpanCost(NamedTuple):
    """The priced facts of one span. Plain values only, never the span.

    ``billable`` is False for a nested span that no key targets and that carries no usage
    (docs/pricing.md): no amount, no error, not in the sums. ``error`` set means unpriced.
    """

    named: Named
    binding: Binding
    nanos: int
    duration_ms: float
    timestamp_ms: int
    usage: Mapping[str, float]
    error: str | None
    entry: bool
    billable: bool
    context: SpanContext | None

    @property
    def service(self) -> str:
        return self.named.service

    @property
    def operation(self) -> str:
        return self.named.operation

    @property
    def amount(self) -> float:
        return from_nanos(self.nanos)

    @property
    def currency(self) -> str:
        return self.binding.snapshot.currency

    @property
    def region(self) -> str | None:
        return self.binding.snapshot.region

    @property
    def pricing_version(self) -> str | None:
        return self.binding.snapshot.version

    @property
    def price_key(self) -> str | None:
        match = self.binding.match
        return None if match is None else match.key

    @property
    def reason(self) -> str | None:
        """The machine reason of ``error`` (its text before ":"), or None when priced."""
        return None if self.error is None else self.error.split(":", 1)[0]

    def attributes(self) -> dict[str, AttributeValue]:
        """The ``cost.*`` span attributes of docs/concepts.md: an amount, or an error and no amount;
        neither for a span that is not billable."""
        attrs = dict(self.binding.attributes)
        attrs["cost.duration_ms"] = self.duration_ms
        if self.error is not None:
            attrs["cost.error"] = self.error
        elif self.billable:
            attrs["cost.amount"] = from_nanos(self.nanos)
        return attrs

    def record(self, trace_id: int, span_id: int) -> CostRecord:
        """The CostRecord of this span (schema v1), built without per-field validation."""
        snap = self.binding.snapshot
        return CostRecord.trusted(
            # What format_trace_id/format_span_id return, without their two Python frames.
            format(trace_id, "032x"),
            format(span_id, "016x"),
            self.named.service,
            self.named.operation,
            from_nanos(self.nanos),
            snap.currency,
            self.duration_ms,
            self.timestamp_ms,
            snap.region,
            snap.version,
            self.usage,
            self.error,
            self.entry,
            *self.named.deploy,
        )


class _ResourceMemo:
    """The naming memo of one Resource (the service comes from it, usually)."""

    __slots__ = ("deploy", "memo", "resource", "service")

    def __init__(self, resource: Resource, service: str | None) -> None:
        self.resource = resource
        self.service = service  # None: the resource names no service; spans may
        self.deploy = deploy_of(resource.attributes)
        self.memo: dict[tuple[object, ...], Named] = {}


class Coster:
    """Derives, guards and prices spans against the current table of a PricingCache.

    ``currency`` is the currency the caller accounts in. The record's currency is the
    table's; a table in another currency is a pricing failure (``currency_mismatch``), so
    amounts in two currencies are never added up in one budget. ``region`` overrides the
    table's region when given.
    """

    def __init__(
        self,
        pricing: PricingCache,
        *,
        currency: str,
        region: str | None,
        max_operations_per_service: int,
        normalizer: Callable[[str], str] | None,
    ) -> None:
        self._pricing = pricing
        self._currency = currency
        self._region = region
        self._normalize = normalizer or normalize_path
        self._max_operations = max_operations_per_service
        self.guard = CardinalityGuard(limit=max_operations_per_service)
        self._mismatch_warned: set[tuple[str | None, str]] = set()
        self._by_table: tuple[PricingTable, PricingSnapshot] | None = None
        self._failed: PricingSnapshot | None = None
        self._resources: dict[int, _ResourceMemo] = {}
        self._naming_keys: dict[tuple[str, ...], Callable[[Mapping[str, object]], object]] = {}
        self.calls = CallDedupe()
        """Recognises the other spans of a GenAI call already charged."""

    @property
    def currency(self) -> str:
        return self._currency

    def reset_guard(self) -> None:
        """Start a new cardinality guard and memo (a forked child: a lock may be held)."""
        self.guard = CardinalityGuard(limit=self._max_operations)
        self._resources = {}
        self._naming_keys = {}
        self.calls = CallDedupe()

    # -- the table --------------------------------------------------------------------

    def snapshot(self) -> PricingSnapshot:
        """The table to price with now, or the reason every span fails. The same object
        while the table (or the failure) is unchanged, so Bindings stay valid."""
        try:
            table = self._pricing.current()
        except PricingStaleError as exc:
            return self._failure(_error(STALE, exc))
        except Exception as exc:  # a broken cache must not stop the pipeline
            return self._failure(_error(PRICING_ERROR, exc))
        cached = self._by_table
        if cached is not None and cached[0] is table:
            return cached[1]
        region = self._region if self._region is not None else table.region
        # A table that declares no currency is in USD (docs/pricing.md), not in whatever
        # currency this service happens to account in.
        currency = table.currency or DEFAULT_CURRENCY
        if currency != self._currency:
            self._warn_mismatch(table.version, currency)
            detail = f"table {table.version!r} is in {currency}, not {self._currency}"
            snap = PricingSnapshot(
                None, self._currency, region, table.version, _error(CURRENCY_MISMATCH, detail)
            )
        else:
            snap = PricingSnapshot(table, self._currency, region, table.version, None)
        self._by_table = (table, snap)
        return snap

    def _failure(self, error: str) -> PricingSnapshot:
        snap = self._failed
        if snap is None or snap.error != error:
            snap = self._failed = PricingSnapshot(None, self._currency, self._region, None, error)
        return snap

    def _warn_mismatch(self, version: str | None, currency: str) -> None:
        key = (version, currency)
        if key not in self._mismatch_warned:
            self._mismatch_warned.add(key)
            _logger.error(
                "otelcost: pricing table %r is in %s but costs are accounted in %s; "
                "spans get cost.error=currency_mismatch until the two agree "
                "(pass currency=%r or set OTELCOST_CURRENCY)",
                version,
                currency,
                self._currency,
                currency,
            )

    # -- one span ---------------------------------------------------------------------

    def named(self, span: ReadableSpan, attributes: Mapping[str, object]) -> Named:
        """Service and operation of ``span`` (memoized on what naming reads)."""
        return self._named(span._resource, span._kind, span._name, attributes)

    def _named(
        self, resource: Resource, kind: SpanKind, name: str, attributes: Mapping[str, object]
    ) -> Named:
        memo = self._resources.get(id(resource))
        if memo is None or memo.resource is not resource:
            memo = self._resource_memo(resource)
        # What naming reads (docs/operations.md): the kind, the name and those of NAMING_ATTRIBUTES
        # the span has. Which ones it has depends only on its attribute names, and spans of
        # one instrumentation share those: that lookup is memoized too, so a repeat span
        # reads its few naming values instead of probing every name naming knows.
        names = tuple(attributes)
        reader = self._naming_keys.get(names)
        if reader is None:
            reader = self._naming_keys_of(names)
        key: tuple[object, ...] = (id(kind), name, reader, reader(attributes))
        if memo.service is None:
            key += (attributes.get("service.name"),)
        try:
            found = memo.memo.get(key)
        except TypeError:  # an unhashable attribute value: name it without the memo
            return self._derive(kind, name, attributes, memo)
        if found is None:
            found = self._derive(kind, name, attributes, memo)
            table = memo.memo
            if len(table) >= _MEMO_SIZE:
                table.clear()  # high-cardinality raw paths: start over, bounded
            table[key] = found
        return found

    def _naming_keys_of(self, names: tuple[str, ...]) -> Callable[[Mapping[str, object]], object]:
        """A reader of the naming values among ``names`` (an itemgetter: one C call).

        Equal readers for equal names: the reader is part of the memo key, so spans with
        other naming attributes but equal values never share an entry."""
        present = tuple(name for name in names if name in _NAMING_SET)
        reader = _readers.get(present)
        if reader is None:
            reader = itemgetter(*present) if present else _no_values
            if len(_readers) < _MEMO_SIZE:  # past that (hostile data) only the memo misses
                reader = _readers.setdefault(present, reader)
        if len(self._naming_keys) >= _MEMO_SIZE:
            self._naming_keys.clear()
        self._naming_keys[names] = reader
        return reader

    def _resource_memo(self, resource: Resource) -> _ResourceMemo:
        from_resource = service_name(resource.attributes, _EMPTY)
        memo = _ResourceMemo(
            resource, None if from_resource == "unknown_service" else from_resource
        )
        resources = self._resources
        if len(resources) >= 64:  # providers come and go in tests; a service has a few
            resources.clear()
        resources[id(resource)] = memo
        return memo

    def _derive(
        self, kind: SpanKind, name: str, attributes: Mapping[str, object], memo: _ResourceMemo
    ) -> Named:
        service = memo.service or service_name(_EMPTY, attributes)
        derived = derive_operation(name, attributes, normalize=self._normalize, kind=kind)
        operation = self.guard.admit(service, derived)
        return Named(
            service,
            operation,
            entry_kind=id(kind) in _ENTRY_KIND_IDS,
            folded=operation == OTHER and derived != OTHER,
            deploy=memo.deploy,
        )

    def cost(self, span: ReadableSpan, snap: PricingSnapshot | None = None) -> SpanCost:
        """Price one ended span. Never raises for bad span data or pricing failures.

        Runs on the ending thread for every span, so it reads the SDK ReadableSpan's fields
        directly (each public property is a Python-level call).
        """
        if snap is None:  # the ending hook: the common case inline, one call less per span
            try:
                table = self._pricing.current()
            except Exception:
                snap = self.snapshot()  # the failure, as snapshot() reports it
            else:
                cached = self._by_table
                snap = cached[1] if cached is not None and cached[0] is table else self.snapshot()
        try:
            attributes: Mapping[str, object] = span._attributes._dict  # type: ignore[union-attr]
        except AttributeError:  # not the SDK's BoundedAttributes (a hand-built span)
            attributes = span.attributes or _EMPTY
        named = self._named(span._resource, span._kind, span._name, attributes)
        binding = named.binding
        if binding is None or binding.snapshot is not snap:
            binding = named.bind(snap)
        parent = span._parent
        entry = named.entry_kind or parent is None or parent.is_remote
        if not entry and binding.nested is not None:
            binding = binding.nested
        start, end = span._start_time or 0, span._end_time or 0
        timestamp_ms = end // 1_000_000
        error = binding.error
        if end < start or not _MIN_TS_MS < timestamp_ms < _MAX_TS_MS:
            # Not an epoch time in nanoseconds (zero, seconds, a clock decades off): the
            # span is not priced, and its record gets the time of pricing instead, so that
            # it still passes CostRecord validation wherever it is consumed.
            duration_ms = 0.0
            error = _error(INVALID_SPAN, f"start_time={start} end_time={end}")
            timestamp_ms = time.time_ns() // 1_000_000
        else:
            duration_ms = (end - start) / 1e6
        nanos = 0
        usage: Mapping[str, float] = _EMPTY
        billable = True
        match = binding.match
        if error is None and match is not None:
            try:
                charge = match.charge(
                    entry=entry, duration_ms=duration_ms, attributes=attributes, end_ms=timestamp_ms
                )
            except PricingNotFoundError as exc:  # a catalog's unknown model, a dated gap
                error = _error(NOT_FOUND, exc)
            except PricingError as exc:
                error = _error(PRICING_ERROR, exc)
            else:
                # One GenAI call, one charge: its other root spans are not billable. Only
                # spans with a response id can be one of those (most spans: one `in`).
                if charge is None or (
                    RESPONSE_ID in attributes and not self.calls.first(attributes, timestamp_ms)
                ):
                    billable = False
                else:
                    nanos, usage = charge
                    usage = usage or _EMPTY
        if error is not None:
            nanos = 0
            if usage is _EMPTY:
                usage = _fallback_usage(attributes)
            if error is binding.error and match is None and not entry and not usage:
                # docs/pricing.md: a nested span that no key prices and that carries no usage is
                # not billable, not an error.
                error, billable = None, False
        # tuple.__new__ directly: NamedTuple's generated __new__ is one more Python frame.
        return _new_tuple(
            SpanCost,
            (
                named,
                binding,
                nanos,
                duration_ms,
                timestamp_ms,
                usage,
                error,
                entry,
                billable,
                span._context,
            ),
        )


# What names a deploy, first found wins: the stable names of the semantic conventions, then
# the older ones (VCS attributes name the revision where no service.version is set).
VERSION_ATTRIBUTES: Final = (
    "service.version",
    "vcs.ref.head.revision",
    "vcs.repository.ref.revision",
)
ENVIRONMENT_ATTRIBUTES: Final = ("deployment.environment.name", "deployment.environment")


def deploy_of(attributes: Mapping[str, object]) -> tuple[str | None, str | None]:
    """(service version, deployment environment) of a resource; None where it is silent."""
    return _first_text(attributes, VERSION_ATTRIBUTES), _first_text(
        attributes, ENVIRONMENT_ATTRIBUTES
    )


def _first_text(attributes: Mapping[str, object], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = attributes.get(name)
        if value is not None and str(value).strip():
            return str(value).strip()[:256]  # a record's text stays storable and small
    return None


def plain_attributes(span: ReadableSpan) -> Mapping[str, object]:
    """The span's attributes as the plain dict inside the SDK's BoundedAttributes.

    Reading the dict directly avoids a Python-level ``__getitem__`` (and a KeyError for
    every absent key) per lookup. Any other SDK layout falls back to the public view.
    """
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(inner) is dict:
        return inner
    return span.attributes or _EMPTY


def _fallback_usage(attributes: Mapping[str, object]) -> Mapping[str, float]:
    usage: dict[str, float] = {}
    for key, value in attributes.items():
        if (
            key.startswith(_FALLBACK_USAGE_PREFIX)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value >= 0
        ):
            try:
                amount = float(value)
            except OverflowError:  # an int beyond a double: not a usage anyone can price
                continue
            if math.isfinite(amount):
                usage[key] = amount
    return MappingProxyType(usage) if usage else _EMPTY
