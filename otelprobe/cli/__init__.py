"""The `otelprobe` command: one entry point, one module per command family.

Each command's module is imported only when that command runs, so `otelprobe validate` does not pay
for gRPC or LightGBM imports.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn

from otelprobe import __version__

# command -> (module, one-line help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("otelprobe.cli.probe", "probe one URL once and print its phase waterfall"),
    "run": ("otelprobe.cli.run", "probe every target of a config file on its schedule"),
    "validate": ("otelprobe.cli.validate", "check a config file; report every problem (exit 1 if any)"),
    "sidecar": (
        "otelprobe.cli.sidecar",
        "receive probe spans over OTLP, detect SLO violations and attribute their causes",
    ),
    "demo": ("otelprobe.cli.demo", "run lab targets with a fault and probe them (no Collector needed)"),
    "lab": (
        "otelprobe.cli.lab",
        "fault lab: record labeled scenarios, generate campaigns, serve fault servers",
    ),
    "train": ("otelprobe.cli.train", "fit the attribution model on labeled lab recordings"),
    "attribute": (
        "otelprobe.cli.attribute",
        "replay recordings into attributed SLO violations (JSON lines)",
    ),
    "evaluate": (
        "otelprobe.cli.evaluate",
        "score the model and its baselines on held-out labeled recordings",
    ),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the problem (exit 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_printable(message)} (see {self.prog} --help)\n")

    def _get_values(self, action: argparse.Action, arg_strings: list[str]) -> Any:
        # Python 3.11's argparse drops a "--" given as an option's value (`--window=--`), so the
        # command would receive [] where it reads a string; keep it as the string it is.
        if arg_strings == ["--"] and action.option_strings and action.nargs is None:
            value = self._get_value(action, "--")
            self._check_value(action, value)
            return value
        return super()._get_values(action, arg_strings)


def _printable(text: str) -> str:
    """`text` with control characters escaped: an argument echoed in an error (a stray carriage
    return, an escape sequence) must neither split the one-line message nor drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="otelprobe", description="OpenTelemetry-native active prober with exact phase timing."
    )
    parser.add_argument("--version", action="version", version=f"otelprobe {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args))
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc, args.command)
        if extra is None:
            return _internal_error(exc, command=parser.prog + " " + args.command, traceback=args.verbose >= 2)
        print(
            f"{parser.prog} {args.command} needs the {extra!r} extra (no module {exc.name!r}):"
            f" pip install 'otelprobe[{extra}]'",
            file=sys.stderr,
        )
        return EXIT_MISSING_EXTRA
    except Exception as exc:  # a bug: one line a user can report; the traceback only with -vv
        return _internal_error(exc, command=parser.prog + " " + args.command, traceback=args.verbose >= 2)


# `pip install otelprobe` is the light prober; these come with pyproject's extras.
_EXTRA_OF_MODULE: Final = {
    "numpy": "attribution",
    "pandas": "attribution",
    "lightgbm": "attribution",
    "sklearn": "attribution",
    "matplotlib": "attribution",
    "aiohttp": "lab",
    "multidict": "lab",
}
_EXTRA_OF_COMMAND: Final = {"sidecar": "sidecar", "demo": "lab,sidecar"}
EXIT_MISSING_EXTRA: Final = 69  # sysexits.h EX_UNAVAILABLE


def missing_extra(exc: ModuleNotFoundError, command: str) -> str | None:
    """The extra to install when `command` failed on a module an extra provides, else None."""
    top = (exc.name or "").partition(".")[0]
    if top not in _EXTRA_OF_MODULE:
        return None
    return _EXTRA_OF_COMMAND.get(command, _EXTRA_OF_MODULE[top])


INTERNAL_ERROR: Final = "internal error"
EXIT_INTERNAL_ERROR: Final = 70  # sysexits.h EX_SOFTWARE


def _internal_error(exc: Exception, *, command: str, traceback: bool) -> int:
    """Print an unexpected exception as one line (and, if asked, its traceback), secrets redacted.

    Every bad input is meant to be caught where it is read and reported as such (exit 2); reaching
    here is a bug, which tests/cli/test_hostile_cli.py looks for.
    """
    import traceback as tb

    from otelprobe.settings.secrets import redact_text as redact

    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    print(
        redact(f"{command}: {INTERNAL_ERROR}: {type(exc).__name__}: {first}"[:500])
        + ("" if traceback else " (run with -vv for the traceback)"),
        file=sys.stderr,
    )
    if traceback:
        print(redact("".join(tb.format_exception(exc))), file=sys.stderr, end="")
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
