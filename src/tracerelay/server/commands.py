"""``tracerelay serve`` and ``tracerelay keys``: what the command line runs for the server.

Registered in ``tracerelay.cli``, which imports this module only when one of
these commands runs, so the SDK's commands never load FastAPI.
"""

from __future__ import annotations

import argparse
import os
import time

from tracerelay.server.settings import ServerSettings

__all__ = ["keys", "serve"]


def _settings(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        database_url=args.database_url,
        redis_url=getattr(args, "redis_url", None),
        bootstrap_key=getattr(args, "bootstrap_key", None),
        retention_days=getattr(args, "retention_days", None),
        rate_limit_events_per_s=getattr(args, "rate_limit", None),
    )


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted."""
    import uvicorn

    from tracerelay.server.app import create_app
    from tracerelay.server.runtime import tune_gc

    settings = _settings(args)
    print(f"tracerelay serve: http://{settings.host}:{settings.port} ({settings.database_url})")
    app = create_app(settings)
    import tracerelay.server.storage.migrate  # noqa: F401 - alembic and SQLAlchemy, frozen too

    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
    )
    return 0


def keys(args: argparse.Namespace) -> int:
    """``keys create|list|revoke``."""
    from tracerelay.server.app import open_store
    from tracerelay.server.keys import make_key

    store = open_store(_settings(args))
    try:
        if args.action == "create":
            scopes = frozenset(s.strip() for s in args.scopes.split(",") if s.strip())
            try:
                key, stored = make_key(store, args.project, scopes, name=args.name)
            except ValueError as exc:
                print(f"tracerelay keys: {exc}")
                return 2
            print(f"created key {stored.key_id} for project {args.project!r}, "
                  f"scopes {','.join(sorted(stored.scopes))}")  # fmt: skip
            print(key)
            return 0
        if args.action == "list":
            for k in store.list_keys():
                state = "revoked" if k.revoked_at is not None else "active"
                made = time.strftime("%Y-%m-%d %H:%M", time.gmtime(k.created_at))
                print(f"{k.key_id}  {k.project_name:<16} {','.join(sorted(k.scopes)):<20} "
                      f"{state:<8} {made} UTC  {k.name or ''}")  # fmt: skip
            return 0
        if not args.key_id:
            print("tracerelay keys revoke: give the KEY_ID that `tracerelay keys list` shows")
            return 2
        if not store.revoke_key(args.key_id, time.time()):
            print(f"tracerelay keys revoke: no key {args.key_id!r}")
            return 1
        print(f"revoked {args.key_id}")
        return 0
    finally:
        store.close()


def demo(args: argparse.Namespace) -> int:
    """``tracerelay demo --serve``: a server on SQLite in this process, the demo workload
    sent to it over HTTP, then where to look; serves until interrupted (or ``--exit``)."""
    import threading

    import uvicorn

    import tracerelay
    from tracerelay.demo import run_demo
    from tracerelay.server.app import create_app, open_store
    from tracerelay.server.keys import make_key

    settings = ServerSettings(port=args.port, database_url=f"sqlite:///{args.database}")
    store = open_store(settings)
    try:
        # A fresh key per run: the demo never depends on a key printed earlier.
        key, _ = make_key(store, "demo", frozenset({"ingest", "read"}), name="tracerelay demo")
    finally:
        store.close()
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tracerelay-demo-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            print(f"tracerelay demo: the server did not start on port {settings.port}")
            return 1
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]  # --port 0: the one bound
    url = f"http://{settings.host}:{port}"
    client = tracerelay.init(
        service="tracerelay-demo", exporter="http", endpoint=url, api_key=key, environ={}
    )
    try:
        trace_ids = run_demo(args.traces)
    finally:
        flushed = tracerelay.shutdown()
    metrics = client.metrics()
    print(f"tracerelay demo: {metrics['items_processed']} records of {len(trace_ids)} agent runs "
          f"stored in {os.path.abspath(args.database)} by the server at {url}")  # fmt: skip
    print("look at a trace (spans flat and as a tree):")
    for trace_id in trace_ids:
        print(f"  curl -s -H 'Authorization: Bearer {key}' {url}/v1/traces/{trace_id}")
    print(f"API description: {url}/docs   server metrics: {url}/metrics")
    try:
        if not args.exit:
            print("serving until Ctrl-C", flush=True)
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(30)
    return 0 if flushed and not metrics["items_failed"] else 1
