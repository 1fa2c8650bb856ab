"""``import otelcost.enforcer`` keeps working: the code lives in
:mod:`otelcost.stream.enforce`."""

from otelcost.stream.enforce import *  # noqa: F403
from otelcost.stream.enforce import __all__  # noqa: F401
