"""`otelprobe probe URL`: one probe, no config file; the kind comes from the URL's scheme (DESIGN §7).

Options map one-to-one to config fields, so what works here works in a config file. Exit codes:
0 the probe succeeded, 1 it failed, 2 bad usage (an invalid URL or option).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any, Final

from pydantic import BaseModel

from otelprobe.cli.probe_url import SCHEME_KINDS, UsageError, build_config, one_line, parse_probe_url
from otelprobe.results import ProbeResult

__all__ = ["SCHEME_KINDS", "UsageError", "add_arguments", "run", "target_config"]

_IP_FAMILIES: Final = {"4": "ip4", "6": "ip6", "prefer6": "prefer_ip6", "all": "all", "any": "any"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", help="what to probe: http(s)://, dns://, tcp://, tls://, icmp://, grpc(s)://, ws(s)://"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per attempt instead of the waterfall"
    )
    parser.add_argument("--name", help="target name (default: the URL, credentials redacted)")
    parser.add_argument("--timeout", default="10s", help="probe deadline, e.g. 5s (config: timeout)")
    parser.add_argument("--ip", choices=sorted(_IP_FAMILIES), help="IP family (config: ip)")
    parser.add_argument(
        "--resolver", metavar="HOST[:PORT]", help="DNS server for this probe (config: resolver.server)"
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify TLS certificates (config: tls.verify)"
    )
    parser.add_argument("--ca", metavar="FILE", help="CA bundle to verify with (config: tls.ca_file)")
    parser.add_argument("--sni", metavar="NAME", help="TLS server name / SNI (config: tls.sni)")
    parser.add_argument("--cert", metavar="FILE", help="client certificate (config: tls.client_cert)")
    parser.add_argument("--key", metavar="FILE", help="client key (config: tls.client_key)")
    parser.add_argument("-X", "--method", help="HTTP method (config: method)")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="NAME: VALUE", help="request header"
    )
    parser.add_argument("-d", "--data", help="request body (config: body)")
    parser.add_argument("--http-version", choices=["1.1", "2", "auto"], help="config: http_version")
    parser.add_argument(
        "--expect-status", action="append", metavar="CODES", help="e.g. 200-299 (config: expect.status)"
    )
    parser.add_argument("--expect-body", action="append", metavar="REGEX", help="config: expect.body_regex")
    parser.add_argument("--max-redirects", type=int, help="config: redirects.max (0 = do not follow)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any config field by its path, value in YAML: --set ocsp=true --set expect.cert_fail_before=7d",
    )
    parser.add_argument("--vantage", help="vantage name on the telemetry (default: host name)")
    parser.add_argument("--otlp-endpoint", metavar="URL", help="also export the trace over OTLP/HTTP to URL")
    parser.add_argument(
        "--otlp-file", metavar="PATH", help="also append the trace to an OTLP JSON lines file"
    )


def config_overrides(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The config fields the options set, in config-file form (aliases, "5s" durations)."""
    fields: dict[str, Any] = {"timeout": args.timeout, "interval": _interval_for(args.timeout)}
    if args.ip:
        fields["ip"] = _IP_FAMILIES[args.ip]
    if args.resolver:
        fields["resolver"] = {"server": args.resolver}
    tls: dict[str, Any] = {}
    if args.insecure:
        tls["verify"] = False
    for option, key in (("ca", "ca_file"), ("sni", "sni"), ("cert", "client_cert"), ("key", "client_key")):
        if getattr(args, option):
            tls[key] = getattr(args, option)
    if tls:
        fields["tls"] = tls
    if kind == "http":
        if args.method:
            fields["method"] = args.method
        if args.header:
            fields["headers"] = dict(_split_header(h) for h in args.header)
        if args.data is not None:
            fields["body"] = args.data
        if args.http_version:
            fields["http_version"] = args.http_version
        expect: dict[str, Any] = {}
        if args.expect_status:
            expect["status"] = [code.strip() for item in args.expect_status for code in item.split(",")]
        if args.expect_body:
            expect["body_regex"] = args.expect_body
        if expect:
            fields["expect"] = expect
        if args.max_redirects is not None:
            fields["redirects"] = {"follow": args.max_redirects > 0, "max": args.max_redirects}
    for assignment in args.set:
        _set_field(fields, assignment)
    return fields


def _set_field(fields: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` to the nested config mapping; the value is parsed as YAML."""
    import yaml

    path, sep, raw = assignment.partition("=")
    keys = [key for key in path.strip().split(".") if key]
    if not sep or not keys:
        raise ValueError(f"invalid --set {assignment!r}: expected FIELD=VALUE, e.g. expect.status=200")
    node = fields
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"invalid --set {assignment!r}: {key} is not a mapping")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid --set {assignment!r}: {exc}") from exc


def target_config(args: argparse.Namespace) -> BaseModel:
    """The target config the arguments describe; UsageError (one line) if the URL or an option is bad."""
    kind, _ = parse_probe_url(args.url)
    try:
        overrides = config_overrides(args, kind)
    except ValueError as exc:
        raise UsageError(one_line(str(exc))) from None
    config = build_config(args.url, args.name, overrides)
    _check_tls_files(config)
    _check_exports(args)
    return config


def _check_exports(args: argparse.Namespace) -> None:
    """--otlp-endpoint must be an http(s) URL, and --otlp-file a file that can be appended to:
    checked before probing, so that a bad one is bad usage (exit 2), not a lost trace."""
    from pathlib import Path

    from otelprobe.settings.addresses import parse_url
    from otelprobe.settings.secrets import redact_url

    if args.otlp_endpoint is not None:
        try:
            parse_url(args.otlp_endpoint, {"http", "https"})
        except ValueError as exc:
            raise UsageError(f"--otlp-endpoint {redact_url(args.otlp_endpoint)!r}: {exc}") from None
    if args.otlp_file is not None:
        path = Path(args.otlp_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("ab"):
                pass
        except OSError as exc:
            raise UsageError(f"--otlp-file {args.otlp_file!r}: {exc.strerror or exc}") from None


def _check_tls_files(config: BaseModel) -> None:
    """--ca, --cert and --key are read now: a file that is missing or not PEM is bad usage (exit 2),
    not a probe failure, and never an OpenSSL traceback."""
    from otelprobe.errors import TLSError
    from otelprobe.probes.tls import check_client_tls
    from otelprobe.settings.common import TLSClientConfig

    tls = getattr(config, "tls", None)
    if not isinstance(tls, TLSClientConfig) or not (tls.ca_file or tls.client_cert):
        return
    try:
        check_client_tls(tls)
    except TLSError as exc:
        raise UsageError(one_line(str(exc))) from None


def run(args: argparse.Namespace) -> int:
    try:
        config = target_config(args)
    except UsageError as exc:
        print(f"otelprobe probe: {exc}", file=sys.stderr)
        return 2
    results = asyncio.run(_probe_once(config, args))
    if args.json:
        for result in results:
            print(json.dumps(result.to_json(), default=str))
    else:
        from otelprobe.cli.waterfall import render

        print("\n\n".join(render(r, color=sys.stdout.isatty()) for r in results))
    return 0 if results and all(r.success for r in results) else 1


async def _probe_once(config: BaseModel, args: argparse.Namespace) -> list[ProbeResult]:
    import socket

    from otelprobe.probes import PROBE_TYPES
    from otelprobe.probes.base import ProbeContext

    kind = str(getattr(config, "kind"))  # noqa: B009  (config is one of the union's members)
    ctx = ProbeContext(vantage=args.vantage or socket.gethostname())
    probe: Any = PROBE_TYPES[kind](config, ctx)  # type: ignore[call-arg]
    try:
        results: list[ProbeResult] = await probe.run(1)
    finally:
        await probe.aclose()
    if args.otlp_endpoint or args.otlp_file:
        await _export(results, ctx.vantage, args)
    return results


async def _export(results: list[ProbeResult], vantage: str, args: argparse.Namespace) -> None:
    from otelprobe.config.telemetry import TelemetryConfig
    from otelprobe.telemetry.pipeline import Telemetry

    exporters: list[dict[str, Any]] = []
    if args.otlp_endpoint:
        exporters.append({"type": "otlp_http", "endpoint": args.otlp_endpoint})
    if args.otlp_file:
        exporters.append({"type": "file", "path": args.otlp_file})
    telemetry = Telemetry(TelemetryConfig.model_validate({"exporters": exporters}), vantage=vantage)
    for result in results:
        telemetry.record(result, None)
    await telemetry.shutdown()


def _interval_for(timeout: str) -> str:
    from otelprobe.settings.durations import parse_duration

    try:
        return f"{max(parse_duration(timeout), 30.0)}s"
    except ValueError:
        return "30s"


def _split_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"invalid header {text!r}: expected 'Name: value'")
    return name.strip(), value.strip()
