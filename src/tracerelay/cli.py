"""The ``tracerelay`` command line: one subcommand per function, dispatched by argparse.

``main()`` is the console script declared in ``pyproject.toml``. A subcommand is
a function taking the parsed arguments and returning the exit code, registered
with ``@command(name, help, arg(...), ...)``; adding one (serve, doctor, spool,
keys, mock) touches nothing else here. Exit codes: 0 success, 1 the command
failed, 2 bad usage or configuration (argparse's own convention), 130 when
interrupted. A ``ConfigError`` (say, a bad ``TRACERELAY_*`` variable) is printed
as its message with its code and fix, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracerelay._version import __version__
from tracerelay.errors import ConfigError, TracerelayError

__all__ = ["arg", "command", "main"]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class _Argument:
    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    arguments: tuple[_Argument, ...]
    handler: Handler


_COMMANDS: dict[str, _Command] = {}


def arg(*flags: str, **options: Any) -> _Argument:
    """One argument of a subcommand: the same parameters as ``ArgumentParser.add_argument``."""
    return _Argument(flags, options)


def command(name: str, help: str, *arguments: _Argument) -> Callable[[Handler], Handler]:
    """Register the decorated function as subcommand ``name``; it returns the exit code."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = _Command(name, help, arguments, handler)
        return handler

    return register


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def _error(message: str) -> None:
    print(f"tracerelay: error: {message}", file=sys.stderr)


# -- subcommands -------------------------------------------------------------------


@command(
    "demo",
    "run a traced sample agent workload and export its traces",
    arg(
        "--traces",
        type=_bounded_int(1, 1000),
        default=3,
        metavar="N",
        help="agent runs to trace, one trace each (default: 3)",
    ),
    arg(
        "--exporter",
        choices=("console", "jsonl"),
        default="console",
        help="print trees to the terminal, or append JSON lines to a file (default: console)",
    ),
    arg(
        "--output",
        metavar="PATH",
        help="file for jsonl (default: $TRACERELAY_EXPORT_FILE or tracerelay-spans.jsonl)",
    ),
)
def _demo(args: argparse.Namespace) -> int:
    import tracerelay
    from tracerelay.demo import run_demo

    options: dict[str, Any] = {"service": "tracerelay-demo", "exporter": args.exporter}
    if args.output is not None:
        if args.exporter != "jsonl":
            _error("--output needs --exporter jsonl.")
            return 2
        options["export_file"] = args.output
    client = tracerelay.init(**options)
    try:
        run_demo(args.traces)
    finally:
        flushed = tracerelay.shutdown()
    failed = client.metrics()["items_failed"]
    if args.exporter == "jsonl":
        path = os.path.abspath(client.config.export_file)
        written = client.metrics()["items_processed"] - failed
        print(f"tracerelay: wrote {written} records ({args.traces} traces) to {path}")
    if failed or not flushed:
        _error(f"{failed} records could not be exported" if failed else "the final flush timed out")
        return 1
    return 0


# -- entry point -------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracerelay",
        description="Self-hostable tracing for Python services and LLM/agent apps.",
    )
    parser.add_argument("--version", action="version", version=f"tracerelay {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    subparsers.required = True
    for spec in _COMMANDS.values():
        sub = subparsers.add_parser(spec.name, help=spec.help, description=spec.help)
        for argument in spec.arguments:
            sub.add_argument(*argument.flags, **argument.options)
        sub.set_defaults(handler=spec.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    Usage errors exit through argparse (``SystemExit(2)``), as a shell expects.
    """
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        _error(str(exc))
        return 2
    except TracerelayError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
