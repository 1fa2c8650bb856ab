"""The ending hook's planned path and the server path rule in C (optional: built by setup.py
where a compiler is)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "Cell",
    "EndingHook",
    "Forwarder",
    "Planner",
    "QueuePut",
    "ServerRule",
    "memory_rows",
    "snapshot",
]

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
        min_start_ns: int,
        shape_type: type,
        named_type: type,
    ) -> None: ...
    def __call__(self, span: Any, /) -> bool: ...
    def forget_threads(self) -> None:
        """Forget the threads' totals dicts it keeps (a forked child's tally has new ones)."""

class EndingHook:
    """``CostSpanProcessor._on_ending`` in C around a Planner."""

    def __init__(
        self, planner: Planner, processor: Any, hooks: tuple[Callable[[Any], object], ...]
    ) -> None: ...
    def __call__(self, span: Any, /) -> None: ...

class Forwarder:
    """``CostSpanProcessor.on_start`` (``python_on_end`` None) or ``on_end`` in C on the
    ending-hook path: forwards to ``processors``; on_end calls ``python_on_end`` for any
    span it would do more than forward; a span whose attributes are ``planner``'s last
    priced is known priced without a look at them."""

    def __init__(
        self,
        processor: Any,
        processors: tuple[Any, ...],
        python_on_end: Callable[[Any, Any], None] | None,
        planner: Planner | None = None,
    ) -> None: ...
    def __call__(self, span: Any, /, *args: Any, **kwargs: Any) -> None: ...

class QueuePut:
    """``BatchPipeline.put`` in C: queue ``item`` unless ``queue`` holds ``capacity`` items,
    calling ``wake()`` when it reaches ``batch``; else ``drop(1)``. True if queued."""

    capacity: int
    def __init__(
        self,
        queue: Any,
        capacity: int,
        batch: int,
        wake: Callable[[], object],
        drop: Callable[[int], object],
    ) -> None: ...
    def __call__(self, item: Any, /) -> bool: ...

class ServerRule:
    """``operation._server_rule``'s rule in C for common paths; ``fallback`` (that rule) for
    the rest."""

    def __init__(
        self,
        fallback: Callable[[Mapping[str, object], Callable[[str], str]], str | None],
        path_keys: tuple[str, ...],
        method_key: str | None,
        methods: frozenset[str],
        normalizer_type: type,
        segment: Callable[[str], str],
        max_value: int,
        max_operation: int,
        max_segment: int,
    ) -> None: ...
    def __call__(
        self, attributes: Mapping[str, object], normalize: Callable[[str], str], /
    ) -> str | None: ...

def memory_rows(
    costs: Sequence[Any], totals: dict[tuple[str, str], list[int]], context_type: type, /
) -> tuple[Any, ...]:
    """``otelcost.exporters.memory._python_rows`` in C: the rows one after another in one
    tuple, untracked by the collector when it holds only plain values."""

class Cell:
    """A priced total ``(nanos, spans)`` the planner adds a span into in place; reads as that
    pair (``len`` 2, ``[0]``, ``[1]``)."""

    def __init__(self, nanos: int, spans: int) -> None: ...
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> int: ...

def snapshot(totals: dict[Any, Any], /) -> dict[Any, Any]:
    """A copy of a totals dict, each :class:`Cell` read as its pair."""
