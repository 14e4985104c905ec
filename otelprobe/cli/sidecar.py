"""`otelprobe sidecar CONFIG`: receive probe spans over OTLP, detect SLO violations, attribute them.

Runs until SIGTERM/SIGINT (which close every pending window, save the state and flush the
exporters); SIGHUP re-reads the config file and the model. `--check` validates the config and the
model, then exits (0 valid, 1 not). `--watch` also draws the live terminal view (sidecar/watch.py)
of open incidents; `otelprobe sidecar watch --api URL` draws it for a sidecar running elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

_logger = logging.getLogger("otelprobe.sidecar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sidecar config file (YAML or JSON; docs/sidecar.md), or 'watch'")
    parser.add_argument("--check", action="store_true", help="validate the config and the model, then exit")
    parser.add_argument("--watch", action="store_true", help="also show open incidents live in this terminal")
    parser.add_argument("--api", default="http://127.0.0.1:8787", help="watch: the sidecar API's URL")
    parser.add_argument("--token", help="watch: the API's bearer token (or OTELPROBE_SIDECAR_TOKEN)")
    parser.add_argument("--once", action="store_true", help="watch: print one screen and exit")


def run(args: argparse.Namespace) -> int:
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
        from otelprobe.config.secrets import redact

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
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, service.request_reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.request_stop)
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
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0
