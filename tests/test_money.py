"""Currency amounts and nano-units: the round trip the module promises, and where it ends."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from otelcost.money import ROUND_TRIP_BOUND, from_nanos, to_nanos


@given(st.integers(-ROUND_TRIP_BOUND + 1, ROUND_TRIP_BOUND - 1))
def test_nanos_survive_the_float_round_trip_below_2_51(nanos: int) -> None:
    assert to_nanos(from_nanos(nanos)) == nanos


def test_the_bound_is_real_one_nano_is_lost_above_it() -> None:
    """4470521724410497 (> 2**52) comes back one nano-unit short: exact paths must carry
    the integer, not the float."""
    assert to_nanos(from_nanos(4_470_521_724_410_497)) == 4_470_521_724_410_496
