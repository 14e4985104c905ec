"""otelprobe: an OpenTelemetry-native active prober with exact phase timing and root-cause attribution."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
