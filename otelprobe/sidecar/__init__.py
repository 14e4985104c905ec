"""The sidecar next to the Collector: it receives probe spans over OTLP and attributes SLO breaks.

Data flow (DESIGN §2): receiver -> windows/features -> SLO detector -> model -> attribution, whose
records go back out as telemetry. `receiver` only decodes OTLP; the later stages consume its
ExportTraceServiceRequest stream.
"""
