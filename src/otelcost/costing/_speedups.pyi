"""The ending hook's planned path in C (optional: built by setup.py where a compiler is)."""

from collections.abc import Callable
from typing import Any

__all__ = ["EndingHook", "Planner"]

class Planner:
    """``CostSpanProcessor._price_planned`` in C: True having priced the span, False having
    done nothing."""

    def __init__(
        self,
        processor: Any,
        coster: Any,
        pricing: Any,
        tally: Any,
        fallback: Callable[[Any, Any], bool],
        binding_type: type[tuple[Any, ...]],
        binding_fields: tuple[int, ...],
        context_type: type,
        no_usage: object,
        nanos_per_unit: int,
        shift: int,
        min_start_ns: int,
        shape_type: type,
        named_type: type,
    ) -> None: ...
    def __call__(self, span: Any, /) -> bool: ...

class EndingHook:
    """``CostSpanProcessor._on_ending`` in C around a Planner."""

    def __init__(
        self, planner: Planner, processor: Any, hooks: tuple[Callable[[Any], object], ...]
    ) -> None: ...
    def __call__(self, span: Any, /) -> None: ...
