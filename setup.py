"""The optional compiled accelerator of the ending hook (otelcost.costing._speedups).

Everything else is in pyproject.toml. Without a C compiler the extension is skipped
(``optional=True``) and otelcost runs in pure Python, with the same results.
"""

import sys

from setuptools import Extension, setup

# Python's float arithmetic, bit for bit: no fused multiply-add (MSVC does not contract
# by default). Optimized for size, after Python's own -O flag: in a server the planner
# runs with its code evicted from the CPU caches between spans, so the lines of code it
# touches cost more than the instructions it executes (docs/design-decisions.md §1).
_FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off", "-Os"]

setup(
    ext_modules=[
        Extension(
            "otelcost.costing._speedups",
            ["src/otelcost/costing/_speedups.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
    ]
)
