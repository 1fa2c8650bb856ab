"""Span → price: name the operation, find the price, compute the cost, hand it on.

:mod:`.processor` (the span processor), :mod:`.coster` (one span's cost), :mod:`.operation`
and :mod:`.normalize` (what a span is called), :mod:`.enrich` (cost.* attributes),
:mod:`.install` and :mod:`.auto` (one-line and zero-code setup).
"""
