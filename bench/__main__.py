"""``python -m bench``: every benchmark and the summary of targets (see bench/run.py)."""

from __future__ import annotations

import sys

from bench.run import main

sys.exit(main())
