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
import re
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
        choices=("console", "jsonl", "http"),
        default="console",
        help="print trees to the terminal, append JSON lines to a file, or send to a server "
        "(default: console)",
    ),
    arg(
        "--output",
        metavar="PATH",
        help="file for jsonl (default: $TRACERELAY_EXPORT_FILE or tracerelay-spans.jsonl)",
    ),
    arg("--endpoint", help="server for http (default: $TRACERELAY_ENDPOINT or 127.0.0.1:4319)"),
    arg(
        "--serve",
        action="store_true",
        help="start a tracerelay server on SQLite here, send the workload to it, keep serving",
    ),
    arg("--port", type=int, default=4319, help="with --serve: port (default: 4319)"),
    arg(
        "--database",
        default=".tracerelay/demo.db",
        help="with --serve: SQLite file (default: .tracerelay/demo.db)",
    ),
    arg("--exit", action="store_true", help="with --serve: stop once the workload is stored"),
)
def _demo(args: argparse.Namespace) -> int:
    import tracerelay
    from tracerelay.demo import run_demo

    if args.serve:
        return int(_server_commands().demo(args))
    options: dict[str, Any] = {"service": "tracerelay-demo", "exporter": args.exporter}
    if args.output is not None:
        if args.exporter != "jsonl":
            _error("--output needs --exporter jsonl.")
            return 2
        options["export_file"] = args.output
    if args.endpoint is not None:
        if args.exporter != "http":
            _error("--endpoint needs --exporter http.")
            return 2
        options["endpoint"] = args.endpoint
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
    if args.exporter == "http":
        metrics = client.metrics()
        print(
            f"tracerelay: sent {metrics['items_processed']} records ({args.traces} traces) to "
            f"{client.config.endpoint}; {metrics['items_spooled']} waiting in the spool"
        )
    if failed or not flushed:
        _error(f"{failed} records could not be exported" if failed else "the final flush timed out")
        return 1
    return 0


def _flag(match: re.Match[str]) -> str:
    return "--" + match.group(1).replace("_", "-")


def _rate(name: str) -> _Argument:
    return arg(
        f"--rate-{name.replace('_', '-')}",
        dest=f"rate_{name}",
        type=float,
        default=0.0,
        metavar="R",
        help=f"fraction of ingest requests that get the {name.replace('_', ' ')} fault (0–1)",
    )


@command(
    "mock",
    "run a fake ingest server that injects 413/429/5xx/timeouts/resets, for testing",
    arg("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"),
    arg(
        "--port",
        type=_bounded_int(0, 65535),
        default=4319,
        help="port to listen on; 0 picks a free one (default: 4319)",
    ),
    *(_rate(kind) for kind in ("413", "429", "500", "503", "slow", "reset", "lost_reply")),
    arg(
        "--slow-seconds",
        type=float,
        default=1.0,
        metavar="S",
        help="how long a slow reply takes (default: 1)",
    ),
    arg(
        "--retry-after",
        type=float,
        default=1.0,
        metavar="S",
        help="Retry-After seconds sent with 429/503 (default: 1)",
    ),
    arg(
        "--retry-after-date",
        action="store_true",
        help="send Retry-After as an HTTP date instead of seconds",
    ),
    arg(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds every ingest request takes before its answer (default: 0)",
    ),
    arg(
        "--max-body-bytes",
        type=_bounded_int(1, 2**31),
        default=5_000_000,
        metavar="N",
        help="larger request bodies get 413 (default: 5000000)",
    ),
    arg(
        "--max-decompressed-bytes",
        type=_bounded_int(1, 2**31),
        default=50_000_000,
        metavar="N",
        help="bodies inflating past this get 413 (default: 50000000)",
    ),
    arg("--api-key", metavar="KEY", help="require Authorization: Bearer KEY (default: none)"),
    arg("--seed", type=int, metavar="N", help="seed the fault draws, for reproducible runs"),
    arg(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="stop after this long (default: run until Ctrl-C)",
    ),
    arg(
        "--upstream",
        metavar="URL",
        help="forward what is not faulted to this tracerelay server (a faulty proxy)",
    ),
)
def _mock(args: argparse.Namespace) -> int:
    import signal
    import threading

    from tracerelay.mock import Faults, MockServer, format_stats

    try:
        faults = Faults(
            rate_413=args.rate_413,
            rate_429=args.rate_429,
            rate_500=args.rate_500,
            rate_503=args.rate_503,
            rate_slow=args.rate_slow,
            slow_seconds=args.slow_seconds,
            rate_reset=args.rate_reset,
            rate_lost_reply=args.rate_lost_reply,
            retry_after=args.retry_after,
            retry_after_http_date=args.retry_after_date,
            latency=args.latency,
        )
    except ValueError as exc:
        # Name the flag the user typed, not the Python field behind it.
        flags = re.sub(r"\b(rate_\w+|slow_seconds|retry_after|latency)\b", _flag, str(exc))
        _error(f"{flags}.")
        return 2
    duration: float | None = args.duration
    if duration is not None and not 0 < duration < 1e9:
        _error(f"--duration must be a positive number of seconds, got {duration!r}.")
        return 2
    if args.api_key == "":
        _error("--api-key must not be empty; leave it out to accept any request.")
        return 2
    try:
        server = MockServer(
            args.host,
            args.port,
            faults=faults,
            api_key=args.api_key,
            max_body_bytes=args.max_body_bytes,
            max_decompressed_bytes=args.max_decompressed_bytes,
            seed=args.seed,
            upstream=args.upstream,
        )
    except ValueError as exc:
        _error(str(exc))
        return 2
    try:
        server.start()
    except OSError as exc:
        _error(f"cannot listen on {args.host} port {args.port}: {exc.strerror or exc}.")
        return 1
    stop = threading.Event()
    previous = None
    # SIGTERM (a script's `kill`) ends the run like Ctrl-C: with the summary, exit 0.
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(f"tracerelay mock: listening on {server.url}", flush=True)
        print(f"  faults: {faults.describe()}", flush=True)
        if args.api_key:
            print("  requires: Authorization: Bearer <--api-key>", flush=True)
        until = f"for {duration:g} s" if duration is not None else "until Ctrl-C"
        print(f"  serving {until}", flush=True)
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            print(file=sys.stderr)
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("tracerelay mock: stopped", flush=True)
    for line in format_stats(server.stats()):
        print(f"  {line}", flush=True)
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


@command(
    "spool",
    "inspect, replay or purge the disk spool of undelivered batches",
    arg("action", choices=("inspect", "replay", "purge"), nargs="?", default="inspect"),
    arg("--dir", help="spool folder (default: the one the configured service uses)"),
    arg("--service", help="service whose default spool to use (default: TRACERELAY_SERVICE)"),
    arg("--endpoint", help="server to replay to (default: TRACERELAY_ENDPOINT)"),
    arg("--api-key", help="key to replay with (default: TRACERELAY_API_KEY)"),
    arg("--yes", action="store_true", help="purge without asking"),
)
def _spool(args: argparse.Namespace) -> int:
    from tracerelay.config import make_config
    from tracerelay.delivery.spool import inspect_spool
    from tracerelay.delivery.spool_admin import purge, replay
    from tracerelay.export.http import default_spool_dir
    from tracerelay.resource import detect_resource

    given = {k: v for k, v in {"service": args.service, "endpoint": args.endpoint,
                               "api_key": args.api_key}.items() if v is not None}  # fmt: skip
    config = make_config(**given)
    directory = args.dir or config.spool_dir or default_spool_dir(config.service, config.endpoint)
    if args.action == "inspect":
        _print_spool(inspect_spool(directory))
        return 0
    if args.action == "purge":
        if not args.yes:
            _error("purge deletes undelivered data; run again with --yes to confirm")
            return 2
        files, events, kept = purge(directory)
        print(f"purged {files} batches ({events} events) from {directory}")
        if kept:
            print(f"purged {kept} records kept unprocessed at an exit")
        return 0

    def bar(done: int, total: int, events: int) -> None:
        filled = int(30 * done / total) if total else 30
        print(
            f"\rreplaying [{'#' * filled}{'-' * (30 - filled)}] {done}/{total} batches, "
            f"{events} events",
            end="",
            file=sys.stderr,
            flush=True,
        )

    result = replay(
        directory,
        endpoint=config.endpoint,
        api_key=config.api_key,
        resource=detect_resource(config.service, environment=config.environment),
        timeout=config.timeout,
        progress=bar,
    )
    print(file=sys.stderr)
    print(
        f"replayed {result.batches_sent} batches ({result.events_sent} events) to {config.endpoint}"
    )
    kept = inspect_spool(directory)["pending_records"]
    if kept:
        print(
            f"{kept} records kept unprocessed at an exit are left: the app processes "
            "and sends them at its next start"
        )
    if result.held_by_running:
        print(f"{result.held_by_running} batches belong to running processes; they send their own")
    if result.batches_left:
        _error(
            f"{result.batches_left} batches ({result.events_left} events) could not be sent and "
            "stay in the spool; the warning above says why"
        )
        return 1
    return 0


def _print_spool(summary: dict[str, Any]) -> None:
    print(f"spool {summary['directory']}")
    if not summary["exists"]:
        print("  (does not exist: nothing was ever spooled here)")
        return
    print(
        f"  {summary['files']} batches, {summary['events']} events, {summary['bytes']} bytes"
        f"; {summary['corrupt']} corrupt set aside"
    )
    if summary["pending_records"]:
        print(
            f"  {summary['pending_records']} records kept unprocessed at an exit "
            f"({summary['pending_files']} files): the app processes and sends them "
            "at its next start"
        )
    for owner, info in sorted(summary["owners"].items()):
        state = "running" if info["alive"] else "gone (replay or the next start sends these)"
        age = info["oldest_age"]
        oldest = "" if age is None else f", oldest {age:.0f} s ago"
        print(f"  {owner}: {info['files']} batches, {info['events']} events{oldest}, {state}")


def _server_commands() -> Any:
    try:
        from tracerelay.server import commands
    except ImportError as exc:
        raise TracerelayError(
            f"the server is not installed ({exc.name} is missing).",
            code="TR-SERVER-MISSING",
            fix="pip install 'tracerelay[server]'.",
        ) from exc
    return commands


_DATABASE = arg(
    "--database-url",
    default=None,
    help="sqlite:///path or postgresql://… (default: TRACERELAY_DATABASE_URL, else "
    "sqlite:///tracerelay.db)",
)


@command(
    "serve",
    "run the tracerelay server (ingest, storage, queries)",
    arg("--host", default=None, help="address to listen on (default: 127.0.0.1)"),
    arg("--port", type=int, default=None, help="port to listen on (default: 4319)"),
    _DATABASE,
    arg("--redis-url", default=None, help="Redis for dedup and rate limits across replicas"),
    arg("--bootstrap-key", default=None, help="the first admin key (default: a new one)"),
    arg("--retention-days", type=float, default=None, help="delete data older than this"),
    arg("--rate-limit", type=float, default=None, help="events per second per key (default: none)"),
)
def _serve(args: argparse.Namespace) -> int:
    return int(_server_commands().serve(args))


@command(
    "keys",
    "create, list or revoke API keys",
    arg("action", choices=("create", "list", "revoke")),
    arg("key_id", nargs="?", help="the key to revoke (revoke only)"),
    arg("--project", default="default", help="project of the new key (created if needed)"),
    arg("--scopes", default="ingest", help="comma-separated: ingest, read, admin"),
    arg("--name", default=None, help="a label for the new key"),
    _DATABASE,
)
def _keys(args: argparse.Namespace) -> int:
    return int(_server_commands().keys(args))


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
