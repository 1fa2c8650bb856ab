"""Model-price catalogs: GenAI spans priced from a maintained catalog instead of a typed table.

A pricing-table entry opts in with ``{"catalog": "genai-prices"}``; every span it matches is
then priced by the `genai-prices` library (the ``llm`` extra) from the span's model
(``gen_ai.response.model``, else ``gen_ai.request.model``), provider (``gen_ai.provider.name``,
else ``gen_ai.system``), token usage (``gen_ai.usage.*``, see :mod:`otelcost.pricing._genai`)
and end time (prices change over time). The price is the library's ``calc_price`` exactly,
rounded once to nano-units. Only the data installed with the library is used: nothing is
fetched, at start or later, and an unknown model is a :class:`PricingNotFoundError` naming
it, never a silent $0.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import TYPE_CHECKING, Final, Protocol, cast

from cachetools import LRUCache

from otelcost.errors import PricingError, PricingNotFoundError
from otelcost.money import NANOS_PER_UNIT
from otelcost.pricing._genai import GenAIUsage, model_of, provider_of, require_usage

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider

__all__ = ["CATALOGS", "EXACT", "Catalog", "GenAIPricesCatalog", "catalog", "decimal_to_nanos"]

_MEMO_SIZE: Final = 4096
# Providers named by the semantic conventions that genai-prices knows by another id.
_PROVIDER_ALIASES: Final = {"gcp.gen_ai": "google", "x_ai": "x-ai", "azure.ai.inference": "azure"}
EXACT: Final = Context()
"""The context of otelcost's decimal arithmetic: decimal's defaults, whatever the application
set in its own. Decimal operations without one use the calling thread's context, which
decimal creates on first use and stores in the caller's context variables: in the
application's threads and tasks (where pricing runs), every later context-variable lookup
(OpenTelemetry's current context is one) would walk past it."""
_NANOS: Final = Decimal(NANOS_PER_UNIT, context=EXACT)


def decimal_to_nanos(amount: Decimal) -> int:
    """An exact decimal amount in whole nano-units (half to even)."""
    whole = EXACT.multiply(amount, _NANOS).to_integral_value(ROUND_HALF_EVEN, EXACT)
    sign, digits, exponent = whole.as_tuple()  # int(whole) would use the thread's context
    nanos = int("".join(map(str, digits)) + "0" * cast(int, exponent))  # exponent >= 0
    return -nanos if sign else nanos


class Catalog(Protocol):
    """Prices one GenAI span from a catalog."""

    @property
    def name(self) -> str:
        """The name a table entry gives as ``catalog``."""
        ...

    def charge(
        self, attributes: Mapping[str, object], end_ms: int
    ) -> tuple[int, Mapping[str, float]]:
        """(nano-units, usage by attribute) of the call the span describes, ending at ``end_ms``.

        A failed call (``error.type`` set) without usage costs 0. Raises PricingNotFoundError
        for a model the catalog does not price, PricingError for a span without usage or with
        usage the catalog cannot price.
        """
        ...


class GenAIPricesCatalog:
    """The `genai-prices` catalog, from the data installed with the library (no network).

    Model lookups are memoized by (provider, model) in a bounded LRU cache, misses included;
    the price in force is picked per call from the span's end time.
    """

    name: Final[str] = "genai-prices"

    def __init__(self, memo_size: int = _MEMO_SIZE) -> None:
        try:  # in a context of its own: loading makes decimals (see EXACT)
            self.version, self._snapshot = contextvars.Context().run(_load_snapshot)
        except ImportError:
            raise PricingError(
                "catalog 'genai-prices' needs the genai-prices library: pip install 'otelcost[llm]'"
            ) from None
        self._memo: LRUCache[tuple[str | None, str], tuple[Provider, ModelInfo] | str] = LRUCache(
            memo_size
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GenAIPricesCatalog(version={self.version!r})"

    def lookup(self, provider: str | None, model: str) -> tuple[Provider, ModelInfo]:
        """The catalog's provider and model for a span's names (memoized).

        A provider the catalog does not know is ignored (the model alone decides).
        """
        key = (provider, model)
        with self._lock:  # an LRU read reorders the cache
            found = self._memo.get(key)
        if found is None:
            found = self._find(provider, model)
            with self._lock:
                self._memo[key] = found
        if isinstance(found, str):
            raise PricingNotFoundError(found)
        return found

    def _find(self, provider: str | None, model: str) -> tuple[Provider, ModelInfo] | str:
        provider_id = _PROVIDER_ALIASES.get(provider, provider) if provider else None
        if provider_id is not None:
            try:
                self._snapshot.find_provider(None, provider_id, None)
            except LookupError:
                provider_id = None  # a provider the catalog does not know: the model decides
        try:
            return self._snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            # A known provider prices only its own models (and those it resells), as
            # genai-prices does: a self-hosted model behind an OpenAI-compatible API is
            # not given some other provider's price.
            where = f" (provider {provider!r})" if provider else ""
            return f"model {model!r}{where} is not in the genai-prices {self.version} catalog"

    def charge(
        self, attributes: Mapping[str, object], end_ms: int
    ) -> tuple[int, Mapping[str, float]]:
        usage = require_usage(attributes)
        if usage is None:
            return 0, {}  # the call failed before any token was billed
        model = model_of(attributes)
        if model is None:
            raise PricingNotFoundError(
                "GenAI span without gen_ai.response.model or gen_ai.request.model"
            )
        provider_info, model_info = self.lookup(provider_of(attributes), model)
        when = datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc)
        try:  # in a context of its own: the library's decimals use the thread's
            calc = contextvars.Context().run(
                model_info.calc_price,
                _catalog_usage(usage),
                provider_info,
                genai_request_timestamp=when,
            )
        except ValueError as exc:  # usage the catalog rejects (a part above its total)
            raise PricingError(f"model {model!r}: {exc}") from None
        return decimal_to_nanos(calc.total_price), usage.as_attributes()


def _load_snapshot() -> tuple[str, DataSnapshot]:
    """genai-prices' version and its installed data."""
    from genai_prices import __version__, data_snapshot

    return __version__, data_snapshot.get_snapshot()


def _catalog_usage(usage: GenAIUsage) -> object:
    from genai_prices import Usage

    return Usage(
        input_tokens=usage.input,
        output_tokens=usage.output,
        cache_read_tokens=usage.cache_read or None,
        cache_write_tokens=usage.cache_write or None,
        cache_write_1h_tokens=usage.cache_write_1h or None,
        output_reasoning_tokens=usage.reasoning or None,
    )


CATALOGS: Final = ("genai-prices",)
"""Names a table entry may give as ``catalog``."""

_loaded: dict[str, Catalog] = {}
_loaded_lock = threading.Lock()


def _reset_locks() -> None:
    """A forked child gets new locks: one the parent's pricing held at the fork never opens."""
    global _loaded_lock  # noqa: PLW0603 - the point is to replace the shared lock
    _loaded_lock = threading.Lock()
    for loaded in _loaded.values():
        if isinstance(loaded, GenAIPricesCatalog):
            loaded._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks)


def catalog(name: str) -> Catalog:
    """The catalog called ``name`` (loaded once per process).

    Raises PricingError for an unknown name or a catalog whose library is not installed.
    """
    found = _loaded.get(name)
    if found is not None:
        return found
    if name not in CATALOGS:
        raise PricingError(f"unknown catalog {name!r}; known: {', '.join(CATALOGS)}")
    with _loaded_lock:
        loaded = _loaded.get(name)
        if loaded is None:
            loaded = _loaded[name] = GenAIPricesCatalog()
    return loaded
