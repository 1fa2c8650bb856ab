"""Static pricing tables built from LLM model-price catalogs, for teams that review every price.

Three sources: the `genai-prices` library's installed data, LiteLLM's
``model_prices_and_context_window.json`` format and OpenLIT's ``pricing.json`` format.
Each builds a pricing document (docs/pricing.md) keyed by GenAI operation (``*:chat gpt-4o``:
``gen_ai.operation.name`` and the requested model) whose ``per_unit`` rates use the
conventions' token attributes, with usage tiers (above 200K input tokens the whole call
costs more) and, from genai-prices, dated prices. A table built this way charges what the
catalog charges for the models it names; what it cannot express (regex model names,
time-of-day prices, images, audio, web searches) is left out and listed in
:attr:`Imported.skipped`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from otelcost.errors import PricingError
from otelcost.money import DEFAULT_CURRENCY
from otelcost.pricing._genai import (
    CACHE_READ,
    CACHE_WRITE,
    CACHE_WRITE_1H,
    INPUT,
    OUTPUT,
    REASONING,
)

if TYPE_CHECKING:  # the llm extra: imported when --from genai-prices runs
    from genai_prices.types import ModelInfo, ModelPrice

__all__ = ["Imported", "from_genai_prices", "from_litellm", "from_openlit"]

_MILLION: Final = Decimal(1_000_000)
_THOUSAND: Final = Decimal(1_000)
# genai-prices price fields (per million tokens) by the conventions' attribute they price.
_GENAI_PRICES_UNITS: Final = {
    "input_mtok": INPUT,
    "output_mtok": OUTPUT,
    "cache_read_mtok": CACHE_READ,
    "cache_write_mtok": CACHE_WRITE,
    "cache_write_1h_mtok": CACHE_WRITE_1H,
    "output_reasoning_mtok": REASONING,
}
# LiteLLM fields (per token) likewise; ``<field>_above_<N>k_tokens`` are their tiers.
_LITELLM_UNITS: Final = {
    "input_cost_per_token": INPUT,
    "output_cost_per_token": OUTPUT,
    "cache_read_input_token_cost": CACHE_READ,
    "cache_creation_input_token_cost": CACHE_WRITE,
    "cache_creation_input_token_cost_above_1hr": CACHE_WRITE_1H,
    "output_cost_per_reasoning_token": REASONING,
}
_LITELLM_TIER: Final = re.compile(r"(?P<field>.+)_above_(?P<k>\d+)k_tokens")
_LITELLM_OPERATIONS: Final = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "responses": "chat",
}


@dataclass
class Imported:
    """A pricing document built from a catalog, and what the catalog had that it left out."""

    document: dict[str, Any]
    skipped: list[str] = field(default_factory=list)


def _imported(catalog: str, version: str, prices: dict[str, Any], skipped: list[str]) -> Imported:
    """The USD table of ``prices`` (keys sorted, so a diff of two imports reads well)."""
    return Imported(
        {
            "version": version,
            "currency": DEFAULT_CURRENCY,
            "source": f"otelcost pricing import --from {catalog}",
            "prices": dict(sorted(prices.items())),
        },
        skipped,
    )


def _rate(value: Decimal, per: Decimal = Decimal(1)) -> float:
    return float(value / per)


def _unit_rate(base: float, tiers: list[dict[str, float]]) -> float | dict[str, Any]:
    if not tiers:
        return base
    # Tiers follow the call's input tokens, as the catalogs' "above 200K tokens" prices do.
    return {"rate": base, "tiers": sorted(tiers, key=lambda t: t["above"]), "by": INPUT}


# --- genai-prices --------------------------------------------------------------------------


def from_genai_prices(
    *, providers: Iterable[str] = (), operation: str = "chat", version: str | None = None
) -> Imported:
    """A table of the genai-prices models (of ``providers``, else of every provider).

    Raises PricingError when the library is not installed or a provider is unknown.
    """
    try:
        from genai_prices import __version__, data_snapshot
    except ImportError:
        raise PricingError(
            "--from genai-prices needs the genai-prices library: pip install 'otelcost[llm]'"
        ) from None
    snapshot = data_snapshot.get_snapshot()
    wanted = list(providers)
    known = {p.id for p in snapshot.providers}
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise PricingError(
            f"unknown provider(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    prices: dict[str, Any] = {}
    owners: dict[str, str] = {}
    skipped: list[str] = []
    for provider in snapshot.providers:
        if wanted and provider.id not in wanted:
            continue
        for model in provider.models:
            where = f"{provider.id}/{model.id}"
            entry = _genai_prices_entry(model, where, skipped)
            if entry is None:
                continue
            names, regexes = _model_names(model.match)
            if regexes:
                skipped.append(f"{where}: model names matched by regex {', '.join(regexes)}")
            for name in names:
                key = f"*:{operation} {name}"
                if key in owners:  # genai-prices takes the first model that matches too
                    skipped.append(f"{where}: {key!r} already prices {owners[key]}")
                    continue
                owners[key] = where
                prices[key] = entry
    return _imported(
        f"genai-prices (genai-prices {__version__})",
        version or f"genai-prices-{__version__}",
        prices,
        skipped,
    )


def _model_names(match: object) -> tuple[list[str], list[str]]:
    """Glob patterns for the model names a genai-prices match clause accepts, and the
    regexes it has that a glob cannot express."""
    names: list[str] = []
    regexes: list[str] = []
    for clause in _flatten(match):
        if (equals := getattr(clause, "equals", None)) is not None:
            names.append(equals)
        elif (prefix := getattr(clause, "starts_with", None)) is not None:
            names.append(prefix + "*")
        elif (suffix := getattr(clause, "ends_with", None)) is not None:
            names.append("*" + suffix)
        elif (part := getattr(clause, "contains", None)) is not None:
            names.append(f"*{part}*")
        else:
            regexes.append(str(getattr(clause, "regex", clause)))
    return names, regexes


def _flatten(match: object) -> Iterable[object]:
    either = getattr(match, "or_", None)
    if either is not None:
        for clause in either:
            yield from _flatten(clause)
    else:
        yield match  # "and" clauses and regexes end up in the regex list


def _genai_prices_entry(
    model: ModelInfo, where: str, skipped: list[str]
) -> dict[str, Any] | list[dict[str, Any]] | None:
    from genai_prices.types import ModelPrice, StartDateConstraint

    if isinstance(model.prices, ModelPrice):
        return _genai_prices_price(model.prices, where, skipped)
    # Conditional prices: the last one in force applies, so start dates become a schedule.
    items: list[dict[str, Any]] = []
    for index, conditional in enumerate(model.prices):
        constraint = conditional.constraint
        price = _genai_prices_price(conditional.prices, where, skipped)
        if price is None:
            return None
        if isinstance(constraint, StartDateConstraint):
            price = {"from": f"{constraint.start_date.isoformat()}T00:00:00Z", **price}
        elif constraint is not None or index:
            skipped.append(f"{where}: prices by time of day")
            return None
        items.append(price)
    return items


def _genai_prices_price(price: ModelPrice, where: str, skipped: list[str]) -> dict[str, Any] | None:
    from genai_prices.types import TieredPrices

    units: dict[str, Any] = {}
    entry: dict[str, Any] = {}
    for name, value in price.__dict__.items():
        if value is None or name.startswith("_"):
            continue
        attr = _GENAI_PRICES_UNITS.get(name)
        if name == "requests_kcount" and isinstance(value, Decimal):
            entry["per_request"] = _rate(value, _THOUSAND)
        elif attr is None:
            skipped.append(f"{where}: {name} (not a token price a span carries)")
        elif isinstance(value, TieredPrices):
            tiers = [{"above": t.start, "rate": _rate(t.price, _MILLION)} for t in value.tiers]
            units[attr] = _unit_rate(_rate(value.base, _MILLION), tiers)
        else:
            units[attr] = _rate(value, _MILLION)
    if INPUT not in units and OUTPUT not in units:
        skipped.append(f"{where}: no token price")
        return None
    entry["per_unit"] = units
    entry["model"] = where
    return entry


# --- LiteLLM -------------------------------------------------------------------------------


def from_litellm(
    doc: object, *, providers: Iterable[str] = (), version: str | None = None
) -> Imported:
    """A table of the models in a LiteLLM ``model_prices_and_context_window.json`` document
    (of ``providers``, by ``litellm_provider``, else all). Raises PricingError for a document
    that is not in that format."""
    if not isinstance(doc, Mapping):
        raise PricingError("LiteLLM prices: the document must be a JSON object of models")
    wanted = set(providers)
    prices: dict[str, Any] = {}
    skipped: list[str] = []
    for name, spec in doc.items():
        if name == "sample_spec" or not isinstance(spec, Mapping):
            continue
        provider = spec.get("litellm_provider")
        if wanted and provider not in wanted:
            continue
        where = f"{provider}/{name}"
        operation = _LITELLM_OPERATIONS.get(str(spec.get("mode", "chat")))
        if operation is None:
            skipped.append(f"{where}: mode {spec.get('mode')!r}")
            continue
        entry = _litellm_entry(spec, where, skipped)
        if entry is not None:
            prices[f"*:{operation} {name}"] = {**entry, "model": where}
    if not prices:
        raise PricingError(
            "LiteLLM prices: no model with a token price (wrong file or --provider?)"
        )
    return _imported("litellm", version or "litellm", prices, skipped)


def _litellm_entry(
    spec: Mapping[str, Any], where: str, skipped: list[str]
) -> dict[str, Any] | None:
    bases: dict[str, float] = {}
    tiers: dict[str, list[dict[str, float]]] = {}
    for name, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        tier = _LITELLM_TIER.fullmatch(name)
        attr = _LITELLM_UNITS.get(tier["field"] if tier else name)
        if attr is None:
            continue
        rate = _rate(Decimal(repr(value)))
        if tier:
            tiers.setdefault(attr, []).append({"above": int(tier["k"]) * 1000, "rate": rate})
        else:
            bases[attr] = rate
    if INPUT not in bases and OUTPUT not in bases:
        skipped.append(f"{where}: no token price")
        return None
    orphans = tiers.keys() - bases.keys()
    if orphans:
        skipped.append(f"{where}: tiers without a base rate for {', '.join(sorted(orphans))}")
    per_unit = {attr: _unit_rate(base, tiers.get(attr, [])) for attr, base in bases.items()}
    return {"per_unit": per_unit}


# --- OpenLIT -------------------------------------------------------------------------------

# OpenLIT prices per 1,000 tokens; its cache prices replace the prompt price for those tokens.
_OPENLIT_CHAT: Final = {
    "promptPrice": INPUT,
    "completionPrice": OUTPUT,
    "cacheReadPrice": CACHE_READ,
    "cacheCreationPrice": CACHE_WRITE,
}


def from_openlit(doc: object, *, version: str | None = None) -> Imported:
    """A table of the ``chat`` and ``embeddings`` models of an OpenLIT ``pricing.json``
    document (prices per 1,000 tokens). Raises PricingError for another format."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("chat"), Mapping):
        raise PricingError("OpenLIT prices: the document must have a 'chat' object of models")
    prices: dict[str, Any] = {}
    skipped = [f"{kind}: not token prices" for kind in doc if kind not in ("chat", "embeddings")]
    for name, spec in doc["chat"].items():
        units = {
            attr: _rate(Decimal(repr(spec[field])), _THOUSAND)
            for field, attr in _OPENLIT_CHAT.items()
            if isinstance(spec, Mapping) and _is_rate(spec.get(field))
        }
        if INPUT in units or OUTPUT in units:
            prices[f"*:chat {name}"] = {"per_unit": units}
        else:
            skipped.append(f"chat/{name}: no token price")
    embeddings = doc.get("embeddings")
    for name, rate in embeddings.items() if isinstance(embeddings, Mapping) else ():
        if _is_rate(rate):
            per_unit = {INPUT: _rate(Decimal(repr(rate)), _THOUSAND)}
            prices[f"*:embeddings {name}"] = {"per_unit": per_unit}
        else:
            skipped.append(f"embeddings/{name}: no token price")
    return _imported("openlit", version or "openlit", prices, skipped)


def _is_rate(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
