"""``import otelcost.processor`` keeps working: the code lives in
:mod:`otelcost.costing.processor`."""

from otelcost.costing.processor import *  # noqa: F403
from otelcost.costing.processor import __all__  # noqa: F401
