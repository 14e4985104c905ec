"""The sidecar's own config file: `load_sidecar_config(path) -> SidecarConfig`, problems as file:line: field.

Read by `otelprobe sidecar CONFIG` before anything starts, and again on reload. The file is parsed
by the prober config's line-keeping YAML loader with the same `${VAR}` / `${file:PATH}`
substitution (config/envsubst.py: every substituted value is registered as a secret and redacted
from logs), and validated by the pydantic models below; every problem is reported, not only the
first. docs/sidecar.md documents each key; examples/sidecar/sidecar.yaml is a complete example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator

from otelprobe.config import envsubst, read_config_file
from otelprobe.config import problems as _problems
from otelprobe.config.document import PathKey, format_path, parse
from otelprobe.config.file_references import unreadable_files
from otelprobe.errors import ConfigError, ConfigProblem
from otelprobe.settings.common import StrictModel
from otelprobe.settings.durations import Duration, Size, parse_duration

AUTO: Final = "auto"
DEFAULT_GRPC_PORT: Final = 4327
DEFAULT_HTTP_PORT: Final = 4328
DEFAULT_API_PORT: Final = 8787
TLS_FILE_KEYS: Final = frozenset({"cert_file", "key_file", "client_ca_file"})
"""The receiver's TLS files, checked readable when the config is loaded."""
"""Next to a Collector's 4317/4318 without clashing with them."""


def _auto_or_duration(value: object) -> object:
    if value == AUTO:
        return value
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"{exc}, or 'auto'") from None


class TLSServerConfig(StrictModel):
    """TLS of the receiver; `client_ca_file` makes it mTLS (clients need a certificate it signed)."""

    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    client_ca_file: str | None = None


class ReceiverConfig(StrictModel):
    """The OTLP receiver (traces in; OTLP/gRPC and OTLP/HTTP, protobuf or JSON, gzip)."""

    host: str = Field("127.0.0.1", min_length=1, description="listen address; loopback unless configured")
    grpc_port: int | None = Field(DEFAULT_GRPC_PORT, ge=0, le=65535, description="null: no gRPC listener")
    http_port: int | None = Field(DEFAULT_HTTP_PORT, ge=0, le=65535, description="null: no HTTP listener")
    max_queue: int = Field(256, ge=1, le=100_000, description="requests waiting to be read, at most")
    max_body_bytes: Size = Field(4 * 1024**2, alias="max_body", gt=0, description="per request, inflated")
    retry_after_s: Duration = Field(1.0, alias="retry_after", gt=0, description="back-off hint when full")
    bearer_token: SecretStr | None = Field(None, description="require `Authorization: Bearer <token>`")
    tls: TLSServerConfig | None = None

    @model_validator(mode="after")
    def _some_listener(self) -> ReceiverConfig:
        if self.grpc_port is None and self.http_port is None:
            raise ValueError("give grpc_port or http_port (or both)")
        return self

    @field_validator("bearer_token")
    @classmethod
    def _token_not_blank(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().strip():
            raise ValueError("the bearer token is empty (an unset variable?)")
        return token


class APIConfig(StrictModel):
    """The HTTP API (/v1/incidents, /v1/attributions, /v1/slos, /healthz, /metrics)."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int | None = Field(DEFAULT_API_PORT, ge=0, le=65535, description="null: no API")
    bearer_token: SecretStr | None = Field(None, description="required on every path but /healthz")


class LimitsConfig(StrictModel):
    """Bounds on memory: nothing the sidecar holds grows without them."""

    max_series: int = Field(
        10_000, ge=1, le=1_000_000, description="(target, vantage) series; oldest evicted"
    )
    max_open_windows: int = Field(64, ge=1, le=10_000, description="window slots open at once")
    max_seen_traces: int = Field(200_000, ge=1, le=10_000_000, description="trace ids kept to spot retries")
    max_pending_traces: int = Field(50_000, ge=1, le=10_000_000, description="traces waiting for their root")
    max_recent: int = Field(500, ge=1, le=100_000, description="closed incidents and attributions kept")


class ExportConfig(StrictModel):
    """Where the sidecar's own telemetry goes (slo.violation spans, log records, metrics)."""

    endpoint: str = Field(min_length=1, description="http(s)://host:port (OTLP/HTTP) or host:port (gRPC)")
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="e.g. authorization; secrets")
    insecure: bool = Field(False, description="gRPC without TLS")
    timeout_s: Duration = Field(10.0, alias="timeout", gt=0)
    metric_interval_s: Duration = Field(60.0, alias="metric_interval", gt=0)
    service_name: str = Field("otelprobe-sidecar", min_length=1)


class ToleranceConfig(StrictModel):
    """How much worse than the live model a candidate may be on a held-out slice and still win."""

    ac1: float = Field(0.01, ge=0, le=1, description="AC@1 points (0.01 = one point) it may lose")
    false_attributions: float = Field(
        0.005, ge=0, le=1, description="share of healthy windows it may attribute beyond the live model"
    )


class LearningConfig(StrictModel):
    """Operator feedback, retraining in a background process, the promotion gate, the model registry.

    Active when `state_dir` is set (feedback, windows and models live there)."""

    enabled: bool = Field(True, description="false: no feedback, no retraining, no registry")
    lab_recordings: list[str] | None = Field(
        None, description="lab recordings retraining starts from; default: the model's own training data"
    )
    eval_recordings: list[str] = Field(
        # Both shipped held-out campaigns: the standard profile and the shifted one (other RTTs,
        # resolvers, servers), so a candidate that trades one environment for another is refused.
        default_factory=lambda: ["data/lab/eval-402", "data/lab/shifted-503"],
        min_length=1,
        description="labeled lab campaigns the gate scores both models on",
    )
    feedback_weight: float = Field(
        3.0, gt=0, le=1000, description="weight of a confirmed window vs a lab one"
    )
    feedback_per_incident: bool = Field(
        True, description="every confirmed incident weighs the same in total, however many windows it has"
    )
    feedback_cap_share: float | None = Field(
        0.05,
        gt=0,
        le=10,
        description="a cause's confirmed windows weigh at most this share of its lab windows; null: no cap",
    )
    holdout_share: float = Field(
        0.3, ge=0, lt=1, description="newest confirmed incidents held out for the gate (time split)"
    )
    tolerance: ToleranceConfig = ToleranceConfig()
    retrain_every_s: Duration | None = Field(
        86400.0, alias="retrain_every", gt=0, description="scheduled retraining; null: on demand only"
    )
    min_new_feedback: int = Field(1, ge=0, description="a scheduled retrain waits for this much new feedback")
    rounds: int = Field(
        150, ge=5, le=5000, description="boosting rounds of a candidate whose live model records none"
    )
    seed: int = Field(7, description="seed of a candidate whose live model records none")
    crossfit_folds: int = Field(
        5, ge=0, le=50, description="trained confirmed incidents scored out of fold by the gate; 0: not"
    )
    keep_models: int = Field(5, ge=2, le=1000, description="model versions kept in the registry")
    max_window_rows: int = Field(
        20_000, ge=100, le=10_000_000, description="feature rows of incident windows kept for feedback"
    )
    table_cache: str | None = Field(
        None, min_length=1, description="window-table cache; default state_dir/tables"
    )
    timeout_s: Duration = Field(
        1800.0, alias="timeout", gt=0, description="a retrain running longer is stopped"
    )


class OutputConfig(StrictModel):
    jsonl: str | None = Field(None, min_length=1, description="append each attribution as a JSON line")


class SidecarConfig(StrictModel):
    """The whole file."""

    receiver: ReceiverConfig = ReceiverConfig()
    api: APIConfig = APIConfig()
    model: str = Field("models/default", min_length=1, description="model stem (stem.json + boosters)")
    slo_file: str | None = Field(None, min_length=1, description="SLO file; the default objectives if none")
    window_s: Annotated[float | Literal["auto"], BeforeValidator(_auto_or_duration)] = Field(
        AUTO, alias="window", description="'auto': the model's window_intervals x the probe interval"
    )
    allowed_lateness_s: Duration = Field(10.0, alias="allowed_lateness", le=3600)
    close_after_windows: int = Field(2, ge=1, le=1000, description="quiet windows that close an incident")
    limits: LimitsConfig = LimitsConfig()
    state_dir: str | None = Field(None, min_length=1, description="SQLite state; null: none kept")
    state_interval_s: Duration = Field(
        0.0,
        alias="state_interval",
        le=86400,
        description="baselines saved at most this often; 0: every window",
    )
    export: ExportConfig | None = None
    output: OutputConfig = OutputConfig()
    learning: LearningConfig = LearningConfig()

    @field_validator("window_s")
    @classmethod
    def _window_positive(cls, window: float | str) -> float | str:
        if isinstance(window, float) and not window > 0:
            raise ValueError("the window must be longer than 0 s")
        return window

    def resolved(self, base_dir: Path) -> SidecarConfig:
        """Relative file paths taken from the config file's directory (the default model path
        stays relative to the working directory: the repository's models/default)."""

        def at(path: str | None) -> str | None:
            return None if path is None else str(base_dir / Path(path).expanduser())

        updates: dict[str, object] = {
            "model": at(self.model) if "model" in self.model_fields_set else self.model,
            "slo_file": at(self.slo_file),
            "state_dir": at(self.state_dir),
            "output": self.output.model_copy(update={"jsonl": at(self.output.jsonl)}),
        }
        learning = self.learning
        if learning.model_fields_set & {"lab_recordings", "eval_recordings", "table_cache"}:
            updates["learning"] = learning.model_copy(
                update={
                    "lab_recordings": None
                    if learning.lab_recordings is None
                    else [str(at(p)) for p in learning.lab_recordings],
                    "eval_recordings": [str(at(p)) for p in learning.eval_recordings]
                    if "eval_recordings" in learning.model_fields_set
                    else learning.eval_recordings,
                    "table_cache": at(learning.table_cache),
                }
            )
        tls = self.receiver.tls
        if tls is not None:
            resolved_tls = tls.model_copy(
                update={
                    "cert_file": at(tls.cert_file),
                    "key_file": at(tls.key_file),
                    "client_ca_file": at(tls.client_ca_file),
                }
            )
            updates["receiver"] = self.receiver.model_copy(update={"tls": resolved_tls})
        return self.model_copy(update=updates)


def load_sidecar_config(path: str | Path) -> SidecarConfig:
    """Load, validate and resolve a sidecar config file (YAML or JSON).

    Raises:
        ConfigError: with every problem found, each as `file:line: field: message`.
    """
    path = Path(path)
    text = read_config_file(path)
    base_dir = path.resolve().parent
    return load_sidecar_text(text, str(path), base_dir=base_dir).resolved(base_dir)


def load_sidecar_text(
    text: str, filename: str = "<sidecar>", *, base_dir: Path | None = None
) -> SidecarConfig:
    """Load a sidecar config from text (paths left as written).

    Raises:
        ConfigError: with every problem found.
    """
    substitution_problems: list[ConfigProblem] = []

    def substitute(value: str, key: PathKey, line: int) -> str | None:
        result = envsubst.substitute(value, base_dir=base_dir or Path.cwd())
        for message in result.problems:
            substitution_problems.append(ConfigProblem(filename, line, format_path(key), message))
        return result.value if result.changed else None

    doc = parse(text, filename, substitute, json_syntax=filename.lower().endswith(".json"))
    problems = [*doc.problems, *substitution_problems]
    if doc.data is None and doc.problems:
        raise ConfigError(problems)
    if doc.data is None:
        doc.data = {}  # an empty file: every default
    if not isinstance(doc.data, dict):
        message = "a sidecar config must be a mapping (receiver:, model:, ...)"
        raise ConfigError([*problems, ConfigProblem(filename, 1, "", message)])
    try:
        config = SidecarConfig.model_validate(doc.data)
    except ValidationError as exc:
        found = _problems.problems_from(exc, doc, filename, SidecarConfig, frozenset())
        unresolved = {p.path for p in substitution_problems}
        problems.extend(p for p in found if p.path not in unresolved)
        config = None
    if config is not None and base_dir is not None:
        # The receiver reads its certificate and key once, at start: a bad path is this file's
        # problem, at its line, not a "cannot listen" later.
        problems.extend(unreadable_files(doc, filename, keys=TLS_FILE_KEYS, base_dir=base_dir))
    if problems or config is None:
        raise ConfigError(sorted(problems, key=lambda p: (p.line is None, p.line or 0)))
    return config
