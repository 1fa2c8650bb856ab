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
from collections.abc import Callable, Hashable, Mapping
from operator import itemgetter
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.util.types import AttributeValue

from otelcost.costing._calls import RESPONSE_ID, CallDedupe
from otelcost.costing.normalize import _DEFAULT as _DEFAULT_NORMALIZER
from otelcost.costing.operation import (
    DEFAULT_SERVICE,
    OTHER,
    RULE_SPAN_NAME,
    CardinalityGuard,
    PathRule,
    explain_operation,
    naming_keys,
    path_rule,
    routed,
    service_name,
)
from otelcost.errors import PricingError, PricingNotFoundError, PricingStaleError
from otelcost.money import DEFAULT_CURRENCY, from_nanos
from otelcost.pricing import PricingCache, PricingTable
from otelcost.pricing.table import Price, PriceMatch
from otelcost.record import _MAX_TS_MS, _MIN_TS_MS, CostRecord, trusted_record

__all__ = [
    "CURRENCY_MISMATCH",
    "ENVIRONMENT_ATTRIBUTES",
    "INVALID_SPAN",
    "MAX_ERROR_CHARS",
    "NOT_FOUND",
    "NO_USAGE",
    "PRICING_ERROR",
    "STALE",
    "VERSION_ATTRIBUTES",
    "CostFields",
    "Coster",
    "Named",
    "PricingSnapshot",
    "SpanCost",
    "cost_record",
    "deploy_of",
    "span_ids",
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
NO_USAGE: Final = _EMPTY
"""The usage of a span that carries none (one shared empty mapping)."""
# Enum members hash through a Python-level __hash__; their ids hash in C.
_ENTRY_KIND_IDS: Final = frozenset((id(SpanKind.SERVER), id(SpanKind.CONSUMER)))
_SOURCE: Final = "otelcost"
_new_tuple: Final = tuple.__new__
# Naming memo entries (shapes and the Named of each) per Coster, then it starts over; and
# distinct (service, operation) Named objects at most (the guard bounds them already).
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


Plan: TypeAlias = tuple[Mapping[str, AttributeValue], float, float, Price | None]
"""What every span of one operation gets when its charge needs nothing but its duration:
its ``cost.*`` attributes (the constant ones, then ``cost.duration_ms`` and, when
billable, ``cost.amount`` as placeholders: one ``dict.update`` then makes room for all of
them at once, and the two stores that follow replace values), and the flat price it pays
whole (its ``per_request``, ``per_ms`` and itself; None: not billable)."""


class Binding(NamedTuple):
    """An operation's price under one snapshot: the match (None: no key matches), the
    error every span of it gets (None: priced) and the constant ``cost.*`` attributes
    (a plain dict, never modified: ``dict.update`` from a dict is the fast path).
    ``flat``: the match's price when it is flat (``PriceMatch.flat_price``), which a span
    that pays the whole price is charged without reading its attributes.
    ``nested``: the binding of its nested spans where another key prices them (a ``*:``
    key naming the operation before the service's bare ``*``), else None.
    ``entry_plan`` / ``nested_plan``: what an entry / a nested span of the operation gets
    when that is decided by the table alone (see ``_plans``), else None; the ending hook
    then charges a span without calling ``Coster.price``."""

    snapshot: PricingSnapshot
    match: PriceMatch | None
    error: str | None
    attributes: Mapping[str, AttributeValue]
    flat: Price | None = None
    nested: Binding | None = None
    entry_plan: Plan | None = None
    nested_plan: Plan | None = None


# What a Named holds before its first span: no snapshot is ever this one.
_UNBOUND: Final = Binding(PricingSnapshot(None, "", None, None, "unbound"), None, "unbound", {})
# Coster.live before a usable table: never a cache's ``held``.
_NOT_HELD: Final = (None, -math.inf)


class Named:
    """What one kind of span is: its service and operation, and its price per snapshot.

    ``entry_kind``: a SERVER or CONSUMER span, an entry span whatever its parent.
    ``folded``: the cardinality guard folded the operation into OTHER.
    ``deploy``: the (service version, deployment environment) of the span's resource.
    ``binding`` is replaced whole when the snapshot changes (one attribute store), so a
    racing thread sees either binding, never a mix; both compute the same values.
    One Named per (service, operation, kind of span, deploy) per Coster: the sums add per
    Named, and a naming memo miss finds the Named (and its binding) already there.
    """

    __slots__ = (
        "binding",
        "deploy",
        "entry_kind",
        "folded",
        "not_billable",
        "operation",
        "service",
    )

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
        self.binding: Binding = _UNBOUND
        # The running totals' key of its spans that are not billable (one tuple, reused).
        self.not_billable: tuple[Named, None] = (self, None)

    def bind(self, snap: PricingSnapshot) -> Binding:
        """This operation's Binding under ``snap`` (computed once per snapshot)."""
        binding = self.binding
        if binding.snapshot is snap:
            return binding
        match = nested = None
        error = snap.error
        if error is None and snap.table is not None:
            match = snap.table.match(self.service, self.operation)
            if match is None:
                error = _error(NOT_FOUND, f"{self.service}:{self.operation}")
            elif not self.entry_kind:
                nested = snap.table.match(self.service, self.operation, nested=True)
        binding = Binding(snap, match, error, self._attributes(snap, match), _flat_price(match))
        if nested is not None and nested is not match:
            binding = binding._replace(
                nested=Binding(
                    snap, nested, None, self._attributes(snap, nested), _flat_price(nested)
                )
            )
        binding = binding._replace(
            entry_plan=_entry_plan(binding), nested_plan=_nested_plan(binding)
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
        return cost_record(self, trace_id, span_id)


CostFields: TypeAlias = tuple[
    Named,
    Binding,
    int,
    float,
    int,
    Mapping[str, float],
    str | None,
    bool,
    bool,
    SpanContext | tuple[int, int] | None,
]
"""A SpanCost's fields in a plain tuple: what the ending hook queues (one allocation). The
last is the span's context, or just its ``(trace_id, span_id)`` (the compiled planner's: a
queued context would keep a collector-tracked object alive per span);
``span_ids`` reads either."""


def span_ids(context: Any) -> tuple[int, int]:
    """(trace_id, span_id) of a cost's context: the SDK's SpanContext and the compiled
    planner's ``(trace_id, span_id)`` are tuples that start with them; a hand-built span's
    context has them as attributes."""
    if type(context) is tuple or type(context) is SpanContext:
        return context[0], context[1]
    return context.trace_id, context.span_id


def cost_record(cost: CostFields, trace_id: int, span_id: int) -> CostRecord:
    """The CostRecord (schema v1) of a span's SpanCost or CostFields, built without
    per-field validation (``CostRecord.trusted``, without its classmethod frame)."""
    named, binding, nanos, duration_ms, timestamp_ms, usage, error, entry, _, _ = cost
    snap = binding.snapshot
    service_version, environment = named.deploy
    return trusted_record(
        # What format_trace_id/format_span_id return, without their two Python frames.
        "%032x" % trace_id,  # noqa: UP031 - the fastest of the three spellings
        "%016x" % span_id,  # noqa: UP031
        named.service,
        named.operation,
        nanos / 1_000_000_000,  # from_nanos(), inline
        snap.currency,
        duration_ms,
        timestamp_ms,
        snap.region,
        snap.version,
        usage,
        error,
        entry,
        service_version,
        environment,
    )


class _Shape:
    """What the spans of one resource, kind and set of attribute names share, whatever
    their names: the service (None: the resource names none, spans may), which naming
    values to read (an itemgetter: one C call), whether a charge can read more than the
    duration, and the Named of each combination of naming values. ``memo`` holds those
    whose operation does not depend on the span's name (every rule but the span-name
    fallback: a plain WSGI app names each span after its raw path, "GET /users/7"),
    ``by_name`` the others, keyed by (name, values). Spans a raw path or URL names (a server
    span without a route, an HTTP client call) have a ``path_rule``: their values differ per
    request, so ``by_path`` holds the Named of each operation the rule gives (keyed by the
    operation where the resource names the service, else by (service, operation)), and a
    new path costs one run of the rule, not an entry per raw path. ``next``: the
    shape of the same attribute names under another resource or kind."""

    __slots__ = (
        "by_name",
        "by_path",
        "by_route",
        "deploy",
        "keys",
        "kind",
        "memo",
        "next",
        "path_rule",
        "plain",
        "reader",
        "resource",
        "service",
    )

    def __init__(
        self,
        resource: Resource,
        kind: SpanKind,
        names: tuple[str, ...],
        *,
        next_shape: _Shape | None,
        compiled: bool,
    ) -> None:
        self.resource = resource
        self.kind = kind
        self.next = next_shape
        from_resource = service_name(resource.attributes, _EMPTY)
        self.service = None if from_resource == DEFAULT_SERVICE else from_resource
        keys = naming_keys(kind, names)
        if self.service is None and "service.name" in names:
            keys += ("service.name",)
        self.deploy = deploy_of(resource.attributes)
        # A usable route names the span, and then only the route and method are read.
        self.by_route = "http.route" in keys
        # No naming value: len() is a C call whose result is constant for one shape.
        self.reader: Callable[[Mapping[str, object]], Hashable] = itemgetter(*keys) if keys else len
        self.keys = keys  # what the reader reads (the compiled planner reads them itself)
        self.memo: dict[Hashable, Named] = {}
        self.by_name: dict[tuple[str, Hashable], Named] = {}
        self.path_rule = path_rule(kind, names, compiled=compiled)
        self.by_path: dict[str | tuple[str, str], Named] = {}
        # No attribute a charge reads beyond the duration (usage, a GenAI response id):
        # a binding's plan then decides every span of this shape.
        self.plain = RESPONSE_ID not in names and not any(
            name.startswith(_FALLBACK_USAGE_PREFIX) for name in names
        )


class Coster:
    """Derives, guards and prices spans against the current table of a PricingCache.

    ``currency`` is the currency the caller accounts in. The record's currency is the
    table's; a table in another currency is a pricing failure (``currency_mismatch``), so
    amounts in two currencies are never added up in one budget. ``region`` overrides the
    table's region when given. ``compiled``: name spans a raw path names with the compiled
    server rule where it is built (``operation.path_rule``; the same names).
    """

    # What the compiled ending hook reads per span, as members (one line of this object
    # rather than the instance dict's five or six); everything else in the instance dict.
    __slots__ = ("__dict__", "__weakref__", "_normalize", "_shapes", "live")

    def __init__(
        self,
        pricing: PricingCache,
        *,
        currency: str,
        region: str | None,
        max_operations_per_service: int,
        normalizer: Callable[[str], str] | None,
        compiled: bool = False,
    ) -> None:
        self._pricing = pricing
        self._currency = currency
        self._region = region
        # normalize_path's normalizer itself: one call less per path.
        self._normalize = normalizer or _DEFAULT_NORMALIZER
        # Path rules in C where built (operation.path_rule): same results, fewer frames.
        self._compiled = compiled
        self._max_operations = max_operations_per_service
        self._mismatch_warned: set[tuple[str | None, str]] = set()
        # (table, its snapshot), replaced whole: a racing reader never pairs a table with
        # another's snapshot. No table is None.
        self._by_table: tuple[PricingTable | None, PricingSnapshot] = (None, _UNBOUND.snapshot)
        self._failed: PricingSnapshot | None = None
        # What is checked per span instead of calling current(): the cache's ``held``
        # (table, stale time) this was derived from, its PricingSnapshot, and the stale time
        # in epoch nanoseconds, which the ending hook compares with the span's end time (the
        # same clock: the SDK's time_ns) instead of calling the clock; -1 with a cache on
        # another clock (the hook then leaves every span to price()). Set by
        # refresh_live() for a usable table only, replaced whole.
        self.live: tuple[tuple[object, float], PricingSnapshot, int] = (
            _NOT_HELD,
            _UNBOUND.snapshot,
            -1,
        )
        self.clock = pricing.clock
        self.reset_guard()

    @property
    def currency(self) -> str:
        return self._currency

    def reset_guard(self) -> None:
        """Start a new cardinality guard and memo (a forked child: a lock may be held)."""
        self.guard = CardinalityGuard(limit=self._max_operations)
        # (name, attribute names) -> _Shape, whose resource and kind are compared by
        # identity (both hash through Python-level __hash__ methods).
        self._shapes: dict[tuple[str, ...], _Shape] = {}
        self._memo_entries = 0
        self._named_by: dict[tuple[object, ...], Named] = {}
        self.calls = CallDedupe()
        """Recognises the other spans of a GenAI call already charged."""

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
        if cached[0] is table:
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

    def refresh_live(self) -> PricingSnapshot:
        """``snapshot()``, and ``live`` updated when it is a usable table."""
        held = self._pricing.held
        snap = self.snapshot()
        if held is not None and snap.error is None and snap.table is held[0]:
            stale_ns = int(held[1] * 1e9) if self.clock is time.time else -1
            self.live = (held, snap, stale_ns)
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
        # What naming reads (docs/operations.md): the kind, the values of the attributes
        # its rule reads, and the name only when the rule falls back to it. Which
        # attributes those are depends only on the kind and on which attributes the span
        # has, and spans of one instrumentation share those: a repeat span reads its few
        # naming values with the shape's itemgetter (the ending hook inlines this lookup;
        # this is the complete one, misses included). Whether the rule falls back to the
        # name depends on those values alone, so a span is in ``memo`` or ``by_name``.
        names = tuple(attributes)
        shape = self._shapes.get(names)
        while shape is not None and (shape.resource is not resource or shape.kind is not kind):
            shape = shape.next
        if shape is None:
            shape = self._shape(resource, kind, names)
        try:
            values = shape.reader(attributes)
            found = shape.memo.get(values)
            if found is None:
                found = shape.by_name.get((name, values))
        except Exception:  # an unhashable value (a list in a hand-made dict): no memo
            return self._derive(kind, name, attributes, shape)[0]
        rule = shape.path_rule
        if found is None and rule is not None:
            found = self._by_path(rule, kind, attributes, shape, values)
            if found is not None:
                return found
        if found is None:
            found, by_name = self._derive(kind, name, attributes, shape)
            if not shape.by_route or routed(kind, attributes):
                self._count_entry()
                if by_name:
                    shape.by_name[name, values] = found
                else:
                    shape.memo[values] = found
        return found

    def _shape(self, resource: Resource, kind: SpanKind, names: tuple[str, ...]) -> _Shape:
        self._count_entry()
        shapes = self._shapes
        shape = shapes[names] = _Shape(
            resource, kind, names, next_shape=shapes.get(names), compiled=self._compiled
        )
        return shape

    def _count_entry(self) -> None:
        """Count one memo entry; past _MEMO_SIZE (high-cardinality names or values: raw
        paths, ids in span names) the memo starts over, bounded."""
        if self._memo_entries >= _MEMO_SIZE:
            self._shapes = {}
            self._memo_entries = 0
        self._memo_entries += 1

    def _by_path(
        self,
        rule: PathRule,
        kind: SpanKind,
        attributes: Mapping[str, object],
        shape: _Shape,
        values: Hashable,
    ) -> Named | None:
        """The Named of a span its raw path or URL names, memoized on the operation the
        shape's path rule gives (None: too little to go on, the span name decides)."""
        derived = rule(attributes, self._normalize)
        if derived is None:
            return None
        # The shape's own service, the same for all its spans, needs no place in the key:
        # a str key is found by the dict code every request runs (the compiled planner's
        # lookup of it too), with no tuple made, hashed and compared per span.
        service = shape.service or service_name(_EMPTY, attributes)
        key = derived if shape.service else (service, derived)
        found = shape.by_path.get(key)
        if found is None:
            found = self._named_for(kind, service, derived, shape)
            self._count_entry()
            shape.by_path[key] = found
        if "*" not in derived:
            # Nothing volatile in the path ("/health"): its raw values repeat, so memoize
            # them too and the next such span is a plain memo hit (the ending hook's).
            self._count_entry()
            shape.memo[values] = found
        return found

    def _derive(
        self, kind: SpanKind, name: str, attributes: Mapping[str, object], shape: _Shape
    ) -> tuple[Named, bool]:
        """The span's Named, and whether its operation came from its name (the fallback
        rule). Not memoized here: the shape's memo is the memo (derive_operation's own
        would keep one entry per raw path for spans without a route)."""
        service = shape.service or service_name(_EMPTY, attributes)
        derived, rule = explain_operation(name, attributes, self._normalize, kind=kind)
        return self._named_for(kind, service, derived, shape), rule == RULE_SPAN_NAME

    def _named_for(self, kind: SpanKind, service: str, derived: str, shape: _Shape) -> Named:
        """The Named of ``derived`` once the cardinality guard has admitted it (or folded
        it into OTHER)."""
        operation = self.guard.admit(service, derived)
        entry_kind = id(kind) in _ENTRY_KIND_IDS
        folded = operation == OTHER and derived != OTHER
        key = (service, operation, entry_kind, folded, shape.deploy)
        named = self._named_by.get(key)
        if named is None:
            named = Named(
                service, operation, entry_kind=entry_kind, folded=folded, deploy=shape.deploy
            )
            if len(self._named_by) >= _MEMO_SIZE:
                self._named_by.clear()  # services named by span attributes: bounded too
            self._named_by[key] = named
        return named

    def cost(self, span: ReadableSpan, snap: PricingSnapshot | None = None) -> SpanCost:
        """Price one ended span (``price``'s facts as a SpanCost). Never raises for bad span
        data or pricing failures."""
        return _new_tuple(SpanCost, self.price(span, snap))

    def price(self, span: ReadableSpan, snap: PricingSnapshot | None = None) -> CostFields:
        """Price one ended span: the fields of its SpanCost, as a plain tuple (one
        allocation; the ending hook queues it as is). Never raises for bad span data or
        pricing failures.

        Runs on the ending thread for every span, so the common case is inline: it reads
        the SDK ReadableSpan's fields directly (each public property is a Python-level
        call), and a repeat span costs a few dict lookups and its price's arithmetic.
        """
        if snap is None:  # the ending hook: the current table, without a call while fresh
            held, snap, _ = self.live
            if held is not self._pricing.held or self.clock() > held[1]:
                snap = self.refresh_live()
        try:
            attributes: Mapping[str, object] = span._attributes._dict  # type: ignore[union-attr]
        except AttributeError:  # not the SDK's BoundedAttributes (a hand-built span)
            attributes = span.attributes or _EMPTY
        resource, kind, name = span._resource, span._kind, span._name
        # The naming memo's hit inline (see _named).
        shape = self._shapes.get(tuple(attributes))
        while shape is not None and (shape.resource is not resource or shape.kind is not kind):
            shape = shape.next
        named = None
        if shape is not None:
            try:
                named = shape.memo.get(shape.reader(attributes))
            except Exception:  # unhashable: _named derives it without the memo
                named = None
        if named is None:
            named = self._named(resource, kind, name, attributes)
        binding = named.binding
        if binding.snapshot is not snap:
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
            flat = binding.flat
            try:
                if flat is not None and (entry or match.targeted):
                    # A flat price paid whole: match.charge()'s result, without the call.
                    nanos = flat.flat_nanos(duration_ms)
                else:
                    charge = match.charge(
                        entry=entry,
                        duration_ms=duration_ms,
                        attributes=attributes,
                        end_ms=timestamp_ms,
                    )
                    if charge is None:
                        billable = False
                    else:
                        nanos, usage = charge
                        usage = usage or _EMPTY
            except PricingNotFoundError as exc:  # a catalog's unknown model, a dated gap
                error = _error(NOT_FOUND, exc)
            except PricingError as exc:
                error = _error(PRICING_ERROR, exc)
            else:
                # One GenAI call, one charge: its other root spans are not billable. Only
                # spans with a response id can be one of those (most spans: one `in`).
                if (
                    billable
                    and RESPONSE_ID in attributes
                    and not self.calls.first(attributes, timestamp_ms)
                ):
                    nanos, usage, billable = 0, _EMPTY, False
        if error is not None:
            nanos = 0
            if usage is _EMPTY:
                usage = _fallback_usage(attributes)
            if error is binding.error and match is None and not entry and not usage:
                # docs/pricing.md: a nested span that no key prices and that carries no usage is
                # not billable, not an error.
                error, billable = None, False
        return (
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
        )


def _flat_price(match: PriceMatch | None) -> Price | None:
    return None if match is None else match.flat_price


# Plans: what Coster.price decides for a span of a "plain" shape (no GenAI response id,
# no gen_ai.usage.* attribute) with valid times, when the table alone decides it. Anything
# else (errors, usage, catalogs, dated or tiered prices) leaves the plan None.


def _entry_plan(binding: Binding) -> Plan | None:
    """An entry span pays any match whole."""
    flat = binding.flat
    if binding.error is None and flat is not None:
        return _with_placeholders(binding, billable=True), flat.per_request, flat.per_ms, flat
    return None


def _nested_plan(binding: Binding) -> Plan | None:
    """A nested span pays a targeted flat match whole; an untargeted flat match, or no
    match at all, makes it not billable (it carries no usage: the shape is plain)."""
    nested = binding.nested or binding
    match = nested.match
    if match is None:
        if binding.error is None:
            return None
        return _with_placeholders(binding, billable=False), 0.0, 0.0, None
    flat = nested.flat
    if nested.error is None and flat is not None:
        if match.targeted:
            return _with_placeholders(nested, billable=True), flat.per_request, flat.per_ms, flat
        return _with_placeholders(nested, billable=False), 0.0, 0.0, None
    return None


def _with_placeholders(binding: Binding, *, billable: bool) -> dict[str, AttributeValue]:
    attributes = dict(binding.attributes)
    attributes["cost.duration_ms"] = 0.0
    if billable:
        attributes["cost.amount"] = 0.0
    return attributes


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
