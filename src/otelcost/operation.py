"""``import otelcost.operation`` keeps working: the code lives in
:mod:`otelcost.costing.operation`."""

from otelcost.costing.operation import *  # noqa: F403
from otelcost.costing.operation import __all__  # noqa: F401
