"""Telemetry: probe results -> OpenTelemetry spans and metrics, and the exporters behind them.

Kept import-light: `names` is used by the probes; the SDK is only imported by `pipeline`,
`spans` and `metrics`.
"""
