"""Span names and attribute keys: the span contract of DESIGN §3 as constants.

Stable semantic-convention keys come from opentelemetry-semantic-conventions; incubating ones
(dns.*, tls.*, rpc.*) are re-exported here so an upstream rename changes one file. Our own keys live
under `probe.*`, `otelprobe.*` and `lab.*`. Outside this module no literal span name appears in
otelprobe/.
"""

from __future__ import annotations

from typing import Final

# --- span names -------------------------------------------------------------------------------
SPAN_DNS_LOOKUP: Final = "dns.lookup"
SPAN_TCP_CONNECT: Final = "tcp.connect"
SPAN_TLS_HANDSHAKE: Final = "tls.handshake"
SPAN_HTTP_REQUEST: Final = "http.request"
SPAN_HTTP_TTFB: Final = "http.ttfb"
SPAN_HTTP_TRANSFER: Final = "http.transfer"
SPAN_ICMP_ECHO: Final = "icmp.echo"
SPAN_RPC_CALL: Final = "rpc.call"
SPAN_WS_MESSAGE: Final = "websocket.message"
SPAN_TRACEROUTE_HOP: Final = "traceroute.hop"
SPAN_STARTTLS: Final = "starttls.negotiate"
SPAN_TCP_DIALOGUE: Final = "tcp.dialogue"
SPAN_SLO_VIOLATION: Final = "slo.violation"
ROOT_SPAN_PREFIX: Final = "probe "

# The phases of an HTTP probe, in wire order (DESIGN §3).
HTTP_PHASES: Final = (
    SPAN_DNS_LOOKUP,
    SPAN_TCP_CONNECT,
    SPAN_TLS_HANDSHAKE,
    SPAN_HTTP_REQUEST,
    SPAN_HTTP_TTFB,
    SPAN_HTTP_TRANSFER,
)

# --- span event names -------------------------------------------------------------------------
EVENT_DNS_RETRANSMIT: Final = "probe.dns.retransmit"
"""On `dns.lookup`: a UDP query sent again (same ID and question) after its try timed out."""

# --- resource ---------------------------------------------------------------------------------
SERVICE_NAME: Final = "service.name"
SERVICE_INSTANCE_ID: Final = "service.instance.id"
SERVICE_VERSION: Final = "service.version"
OTELPROBE_VANTAGE: Final = "otelprobe.vantage"
OTELPROBE_TENANT: Final = "otelprobe.tenant"
"""The tenant of the target (config `tenants:`), on every span and metric of its probes."""

# --- otelprobe's own keys ---------------------------------------------------------------------
PROBE_KIND: Final = "probe.kind"
PROBE_TARGET: Final = "probe.target"
PROBE_SUCCESS: Final = "probe.success"
PROBE_ATTEMPT: Final = "probe.attempt"
PROBE_PHASE: Final = "probe.phase"
PROBE_ERROR_DETAIL: Final = "probe.error.detail"
PROBE_REDIRECT_COUNT: Final = "probe.http.redirect_count"
PROBE_BODY_BYTES: Final = "probe.http.body_bytes"
PROBE_CONNECT_ABANDONED: Final = "probe.connect.abandoned"  # a tcp.connect attempt another address beat
PROBE_HTTP_HOP: Final = "probe.http.hop"  # redirect hop index (0 = the configured URL) on phases
PROBE_HTTP_FINAL_URL: Final = "probe.http.final_url"  # after redirects, credentials redacted
PROBE_IP_FAMILY: Final = "probe.ip_family"
PROBE_TLS_CERT_REMAINING: Final = "probe.tls.cert.remaining"
PROBE_TLS_CHAIN_NOT_AFTER: Final = "probe.tls.chain.earliest_not_after"
PROBE_TLS_HOSTNAME_VERIFIED: Final = "probe.tls.hostname_verified"
PROBE_TLS_CHAIN_TRUSTED: Final = "probe.tls.chain_trusted"
PROBE_TLS_OCSP_STATUS: Final = "probe.tls.ocsp.status"
PROBE_DNS_RCODE: Final = "probe.dns.rcode"
PROBE_DNS_AUTHORITATIVE: Final = "probe.dns.authoritative"
PROBE_DNS_SOA_SERIAL: Final = "probe.dns.soa_serial"
PROBE_DNS_AD: Final = "probe.dns.authenticated_data"
PROBE_DNS_TRANSPORT: Final = "probe.dns.transport"
PROBE_DNS_QUERY_TYPE: Final = "probe.dns.query_type"
PROBE_DNS_QUERY_CLASS: Final = "probe.dns.query_class"
PROBE_DNS_ANSWER_COUNT: Final = "probe.dns.answer_count"
PROBE_DNS_TCP_FALLBACK: Final = "probe.dns.tcp_fallback"
PROBE_DNS_DNSSEC_VALIDATED: Final = "probe.dns.dnssec.validated"
PROBE_DNS_DNSSEC_ANCHORED: Final = "probe.dns.dnssec.anchored"
PROBE_DNS_BOOTSTRAP: Final = "probe.dns.bootstrap"
PROBE_DNS_ATTEMPTS: Final = "probe.dns.attempts"
"""On `dns.lookup` over UDP: tries sent by the query that needed the most (1 = no retransmit)."""
PROBE_DNS_ATTEMPT: Final = "probe.dns.attempt"
"""On a `probe.dns.retransmit` event: which try (2, 3, ...) this send was."""
PROBE_DNS_ANSWERED_ATTEMPT: Final = "probe.dns.answered_attempt"
"""On `dns.lookup` over UDP: the try whose answer ended the lookup (each try has its own socket)."""
PROBE_DNS_MISSING_FAMILY: Final = "probe.dns.missing_family"
"""On `dns.lookup` (`ip: any` / `prefer_ip6`): `ip4` or `ip6`, the family the probe went on without."""
PROBE_DNS_MISSING_REASON: Final = "probe.dns.missing_reason"
"""Why that family is missing: `late` (not answered within the resolution delay) or its error detail."""
PROBE_TCP_STARTTLS: Final = "probe.tcp.starttls"
PROBE_TCP_DIALOGUE_STEP: Final = "probe.tcp.dialogue.step"
PROBE_TLS_SERVER_SANS: Final = "probe.tls.server.sans"
PROBE_TLS_CHAIN_LENGTH: Final = "probe.tls.chain.length"
PROBE_TLS_CHAIN_SUBJECTS: Final = "probe.tls.chain.subjects"
PROBE_TLS_CHAIN_ISSUERS: Final = "probe.tls.chain.issuers"
PROBE_TLS_CHAIN_HASHES: Final = "probe.tls.chain.hash.sha256"
PROBE_TLS_CHAIN_NOT_BEFORE: Final = "probe.tls.chain.not_before"
PROBE_TLS_CHAIN_NOT_AFTER_ALL: Final = "probe.tls.chain.not_after"
PROBE_TLS_SERVER_NAME: Final = "probe.tls.server_name"
PROBE_TLS_OCSP_STAPLED: Final = "probe.tls.ocsp.stapled"
PROBE_TLS_OCSP_RESPONSE_STATUS: Final = "probe.tls.ocsp.response_status"
PROBE_TLS_OCSP_THIS_UPDATE: Final = "probe.tls.ocsp.this_update"
PROBE_TLS_OCSP_NEXT_UPDATE: Final = "probe.tls.ocsp.next_update"
PROBE_TLS_OCSP_REVOCATION_TIME: Final = "probe.tls.ocsp.revocation_time"
PROBE_TLS_OCSP_REVOCATION_REASON: Final = "probe.tls.ocsp.revocation_reason"
PROBE_TLS_OCSP_VERIFIED: Final = "probe.tls.ocsp.verified"
PROBE_TLS_OCSP_STALE: Final = "probe.tls.ocsp.stale"
PROBE_TLS_CERT_EXPIRY_WARNING: Final = "probe.tls.cert.expiry_warning"
PROBE_ICMP_SEQUENCE: Final = "probe.icmp.sequence"
PROBE_ICMP_LOSS_RATIO: Final = "probe.icmp.loss_ratio"
PROBE_ICMP_RTT_MIN: Final = "probe.icmp.rtt.min"
PROBE_ICMP_RTT_AVG: Final = "probe.icmp.rtt.avg"
PROBE_ICMP_RTT_MAX: Final = "probe.icmp.rtt.max"
PROBE_ICMP_RTT_STDDEV: Final = "probe.icmp.rtt.stddev"
PROBE_HOP_TTL: Final = "probe.traceroute.ttl"
PROBE_GRPC_SERVING_STATUS: Final = "probe.grpc.serving_status"
PROBE_WS_CLOSE_CODE: Final = "probe.websocket.close_code"
PROBE_ICMP_PACKETS_SENT: Final = "probe.icmp.packets_sent"
PROBE_ICMP_PACKETS_RECEIVED: Final = "probe.icmp.packets_received"
PROBE_ICMP_REPLY_TTL: Final = "probe.icmp.reply_ttl"
PROBE_ICMP_RESPONDER: Final = "probe.icmp.responder"
PROBE_TRACEROUTE_REPLY: Final = "probe.traceroute.reply"
PROBE_TRACEROUTE_REACHED: Final = "probe.traceroute.reached"
PROBE_TRACEROUTE_METHOD: Final = "probe.traceroute.method"
PROBE_TRACEROUTE_HOPS: Final = "probe.traceroute.hops"
PROBE_TRACEROUTE_DESTINATION: Final = "probe.traceroute.destination"
PROBE_TRACEROUTE_ERROR: Final = "probe.traceroute.error"
PROBE_GRPC_MESSAGE: Final = "probe.grpc.message"
PROBE_WS_MESSAGE_INDEX: Final = "probe.websocket.message.index"
PROBE_WS_SUBPROTOCOL: Final = "probe.websocket.subprotocol"
# slo.violation spans, log records and metrics of the sidecar (docs/sidecar.md).
OTELPROBE_SLO_NAME: Final = "otelprobe.slo.name"
"""The first SLO the window violates; `otelprobe.slo.names` lists every one."""
OTELPROBE_SLO_NAMES: Final = "otelprobe.slo.names"
OTELPROBE_SLO_OBJECTIVE: Final = "otelprobe.slo.objective"
OTELPROBE_SLO_WINDOW: Final = "otelprobe.slo.window"
"""A burn-rate rule window as written in the SLO file ("1h", "5m")."""
OTELPROBE_CAUSE: Final = "otelprobe.cause"
OTELPROBE_CAUSE_SCOPE: Final = "otelprobe.cause.scope"
OTELPROBE_CAUSE_SCORE: Final = "otelprobe.cause.score"
OTELPROBE_MODEL_VERSION: Final = "otelprobe.model.version"
OTELPROBE_WINDOW_START: Final = "otelprobe.window.start"
OTELPROBE_WINDOW_END: Final = "otelprobe.window.end"
OTELPROBE_WINDOW_PROBES: Final = "otelprobe.window.probes"
OTELPROBE_WINDOW_FAILED: Final = "otelprobe.window.failed"
OTELPROBE_INCIDENT_ID: Final = "otelprobe.incident.id"
EVENT_SLO_VIOLATION: Final = "otelprobe.slo.violation"
"""The event name of the sidecar's log record (body: the DESIGN §6 JSON)."""
LAB_FAULT_CAUSE: Final = "lab.fault.cause"
LAB_FAULT_SCOPE: Final = "lab.fault.scope"
LAB_FAULT_INCIDENT: Final = "lab.fault.incident"
"""The lab incident (labels.jsonl `incident`) whose cause and scope the span carries."""
LAB_FAULT_CAUSES: Final = "lab.fault.causes"
"""Every overlapping incident's cause, in start order, where more than one fault hit a probe."""

# --- semantic conventions (stable) ------------------------------------------------------------
ERROR_TYPE: Final = "error.type"
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
NETWORK_PROTOCOL_NAME: Final = "network.protocol.name"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_LOCAL_PORT: Final = "network.local.port"
NETWORK_TRANSPORT: Final = "network.transport"
NETWORK_TYPE: Final = "network.type"
USER_AGENT_SYNTHETIC_TYPE: Final = "user_agent.synthetic.type"

# --- semantic conventions (incubating; re-exported so a rename touches one file) --------------
DNS_QUESTION_NAME: Final = "dns.question.name"
DNS_ANSWERS: Final = "dns.answers"
TLS_PROTOCOL_NAME: Final = "tls.protocol.name"
TLS_PROTOCOL_VERSION: Final = "tls.protocol.version"
TLS_CIPHER: Final = "tls.cipher"
TLS_NEXT_PROTOCOL: Final = "tls.next_protocol"
TLS_ESTABLISHED: Final = "tls.established"
TLS_SERVER_NOT_AFTER: Final = "tls.server.not_after"
TLS_SERVER_NOT_BEFORE: Final = "tls.server.not_before"
TLS_SERVER_SUBJECT: Final = "tls.server.subject"
TLS_SERVER_ISSUER: Final = "tls.server.issuer"
TLS_SERVER_HASH_SHA256: Final = "tls.server.hash.sha256"
RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_GRPC_STATUS_CODE: Final = "rpc.grpc.status_code"

# --- metric names -----------------------------------------------------------------------------
METRIC_PROBE_DURATION: Final = "probe.duration"
METRIC_PROBE_SUCCESS: Final = "probe.success"
METRIC_TLS_CERT_REMAINING: Final = "probe.tls.cert.remaining"
METRIC_HTTP_CLIENT_DURATION: Final = "http.client.request.duration"
METRIC_DNS_LOOKUP_DURATION: Final = "dns.lookup.duration"
METRIC_EXPORT_DROPPED: Final = "otelprobe.export.dropped"
METRIC_PROBE_LATENESS: Final = "otelprobe.scheduler.lateness"
METRIC_VIOLATIONS_OPEN: Final = "otelprobe.sidecar.violations.open"
METRIC_SLO_BURN_RATE: Final = "otelprobe.slo.burn_rate"
METRIC_TENANT_PREFIX: Final = "otelprobe.tenant."
"""Per-tenant scheduler metrics: otelprobe.tenant.{started,delayed,throttled,skipped,shed} (counters),
otelprobe.tenant.{in_flight,limit,circuit_open} (gauges), each with `otelprobe.tenant`."""

# Attribute value of `user_agent.synthetic.type` on every HTTP probe.
SYNTHETIC_TYPE_TEST: Final = "test"
