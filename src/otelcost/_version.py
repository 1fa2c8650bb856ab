"""The package's version, alone in a module: the OTLP scope, the metrics meter and the
pricing client's User-Agent name it without loading the whole package."""

from __future__ import annotations

__version__ = "0.1.0"
