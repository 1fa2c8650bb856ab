"""``import otelcost.normalize`` keeps working: the code lives in
:mod:`otelcost.costing.normalize`."""

from otelcost.costing.normalize import *  # noqa: F403
from otelcost.costing.normalize import __all__  # noqa: F401
