"""``python -m otelcost.cli``: the ``otelcost`` command without the console script."""

from __future__ import annotations

import sys

from otelcost.cli import main

sys.exit(main())
