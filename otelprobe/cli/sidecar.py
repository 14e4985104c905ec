"""`otelprobe sidecar CONFIG`: receive probe spans over OTLP, detect SLO violations, attribute them.

Runs until SIGTERM/SIGINT (which close every pending window, save the state and flush the
exporters); SIGHUP re-reads the config file and the model. `--check` validates the config and the
model, then exits (0 valid, 1 not). `--watch` also draws the live terminal view (sidecar/watch.py)
of open incidents; `otelprobe sidecar watch --api URL` draws it for a sidecar running elsewhere.

Talking to a running sidecar's API (docs/sidecar-api.md, "Learning"):

    otelprobe sidecar feedback INCIDENT --cause packet_loss --scope vantage [--by NAME] [--note TEXT]
    otelprobe sidecar feedback INCIDENT --not-an-incident
    otelprobe sidecar models [--json]
    otelprobe sidecar retrain
    otelprobe sidecar rollback [--version v0002]

Each exits 0 on success, 1 when the sidecar refuses (the problem's detail on stderr), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from otelprobe.scheduling.loop_signals import signals_on_loop

_logger = logging.getLogger("otelprobe.sidecar")
API_COMMANDS = ("feedback", "models", "retrain", "rollback")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        help="sidecar config file (YAML or JSON; docs/sidecar.md),"
        " or watch | feedback | models | retrain | rollback",
    )
    parser.add_argument("incident", nargs="?", help="feedback: the incident id")
    parser.add_argument("--check", action="store_true", help="validate the config and the model, then exit")
    parser.add_argument("--watch", action="store_true", help="also show open incidents live in this terminal")
    parser.add_argument("--api", default="http://127.0.0.1:8787", help="watch: the sidecar API's URL")
    parser.add_argument("--token", help="watch: the API's bearer token (or OTELPROBE_SIDECAR_TOKEN)")
    parser.add_argument("--once", action="store_true", help="watch: print one screen and exit")
    parser.add_argument("--cause", help="feedback: the confirmed cause (DESIGN §5)")
    parser.add_argument(
        "--scope", choices=("vantage", "target", "path"), help="feedback: the confirmed scope"
    )
    parser.add_argument("--not-an-incident", action="store_true", help="feedback: it was no incident")
    parser.add_argument("--by", help="feedback: who confirms (default: $USER)")
    parser.add_argument("--note", help="feedback: a free-text note")
    parser.add_argument(
        "--series", action="append", metavar="TARGET/VANTAGE", help="feedback: only these member series"
    )
    parser.add_argument("--start", help="feedback: when the cause began (RFC 3339; optional)")
    parser.add_argument("--end", help="feedback: when it ended (RFC 3339; optional)")
    parser.add_argument(
        "--version", dest="model_version", help="rollback: to this version (default: previous)"
    )
    parser.add_argument("--json", action="store_true", help="models: print the registry as JSON")


def _api_command(args: argparse.Namespace) -> int:
    import getpass
    import json
    import os

    from otelprobe.sidecar.api_client import APIError, call, feedback_body, models_table

    token = args.token or os.environ.get("OTELPROBE_SIDECAR_TOKEN")
    command = args.config
    try:
        if command == "feedback":
            if not args.incident:
                print("otelprobe sidecar feedback: give the incident id", file=sys.stderr)
                return 2
            if args.not_an_incident == bool(args.cause or args.scope):
                print(
                    "otelprobe sidecar feedback: give --cause and --scope, or --not-an-incident",
                    file=sys.stderr,
                )
                return 2
            body = feedback_body(
                cause=args.cause,
                scope=args.scope,
                not_an_incident=args.not_an_incident,
                by=args.by or os.environ.get("USER") or getpass.getuser(),
                note=args.note,
                series=args.series,
                start=args.start,
                end=args.end,
            )
            path = f"/v1/incidents/{args.incident}/feedback"
            answer = asyncio.run(call(args.api, "POST", path, token, body))
            what = (
                "not an incident" if answer["not_an_incident"] else f"{answer['cause']} ({answer['scope']})"
            )
            print(
                f"incident {answer['incident']}: {what} by {answer['by']}; {answer['windows']} windows kept"
            )
        elif command == "models":
            answer = asyncio.run(call(args.api, "GET", "/v1/models", token))
            print(json.dumps(answer, indent=1) if args.json else models_table(answer))
        elif command == "retrain":
            answer = asyncio.run(call(args.api, "POST", "/v1/models/retrain", token, {}))
            job = answer["retrain"]
            print(f"retraining {job['version']} started; `otelprobe sidecar models` shows the outcome")
        else:
            body = {"version": args.model_version} if args.model_version else {}
            answer = asyncio.run(call(args.api, "POST", "/v1/models/rollback", token, body))
            print(f"rolled back: {answer['live']} is live (was {answer['previous']})")
    except APIError as exc:
        print(f"otelprobe sidecar {command}: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.config in API_COMMANDS:
        return _api_command(args)
    if args.config == "watch":
        import os

        from otelprobe.sidecar.watch import watch

        token = args.token or os.environ.get("OTELPROBE_SIDECAR_TOKEN")
        return asyncio.run(watch(args.api, token, once=args.once))
    from otelprobe.attribution.model import ModelError
    from otelprobe.attribution.slo_file import load_slo_file
    from otelprobe.errors import ConfigError
    from otelprobe.sidecar.config import load_sidecar_config
    from otelprobe.sidecar.model_watch import load_checked

    try:
        config = load_sidecar_config(args.config)
        if config.slo_file:
            load_slo_file(config.slo_file)
        if args.check:
            load_checked(config.model)
    except ConfigError as exc:
        from otelprobe.settings.secrets import redact

        for problem in exc.problems:
            print(redact(str(problem)), file=sys.stderr)  # a problem may quote a secret's value
        return 1
    except ModelError as exc:
        print(f"{args.config}: model: {exc}", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.config}: valid")
        return 0
    # The sidecar's own status lines (listening, violations, reloads) show at the default level.
    if logging.getLogger().level > logging.WARNING or not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING)
    if args.watch and config.api.port is None:
        print(f"{args.config}: --watch needs the API (api.port is null)", file=sys.stderr)
        return 1
    if args.watch:  # the view owns the terminal; problems still go to stderr
        logging.getLogger("otelprobe.sidecar").setLevel(logging.ERROR)
    return asyncio.run(_serve(config, args.config, watching=args.watch))


async def _serve(config: object, path: str, *, watching: bool = False) -> int:
    from otelprobe.attribution.model import ModelError
    from otelprobe.sidecar.config import SidecarConfig
    from otelprobe.sidecar.service import SidecarService

    assert isinstance(config, SidecarConfig)
    try:
        service = SidecarService(config, path)
    except ModelError as exc:
        print(f"{path}: model: {exc}", file=sys.stderr)
        return 1
    try:
        await service.start()
    except OSError as exc:
        print(f"{path}: cannot listen: {exc}", file=sys.stderr)
        await service.stop()
        return 1
    callbacks = {
        signal.SIGHUP: service.request_reload,
        signal.SIGTERM: service.request_stop,
        signal.SIGINT: service.request_stop,
    }
    # Not loop.add_signal_handler: it loses a signal when the loop is behind on cross-thread
    # wake-ups (the slot worker, gRPC's poller), see scheduling/loop_signals.py.
    with signals_on_loop(asyncio.get_running_loop(), callbacks):
        view: asyncio.Task[int] | None = None
        if watching:
            from otelprobe.sidecar.watch import watch

            token = config.api.bearer_token
            url = f"http://{config.api.host}:{service.api_port}"
            view = asyncio.create_task(watch(url, token.get_secret_value() if token else None))
        try:
            await service.run_until_stopped()
        finally:
            if view is not None:
                view.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await view
    return 0
