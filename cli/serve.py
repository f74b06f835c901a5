"""`caf serve`: all three functions in one local server, with the local bus pumping events."""

from __future__ import annotations

import threading
import time
from typing import Any

import typer

from cli.context import console, open_deps

MOUNTS = {"/gcs": ("handle_raw_file", "cloudevent"), "/pubsub": ("handle_pubsub", "cloudevent")}


def build_app() -> Any:
    """One WSGI app: `/` operator, `/gcs` raw-file CloudEvents, `/pubsub` Pub/Sub CloudEvents."""
    import functions_framework
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from config.settings import PROJECT_ROOT

    source = str(PROJECT_ROOT / "main.py")
    root = functions_framework.create_app("operator", source, "http")
    mounts = {path: functions_framework.create_app(target, source, sig) for path, (target, sig) in MOUNTS.items()}
    root.wsgi_app = DispatcherMiddleware(root.wsgi_app, {p: a.wsgi_app for p, a in mounts.items()})
    return root


def attach_local_bus(deps: Any) -> Any:
    """Make the local bus deliver through the real `handle_pubsub` CloudEvent path."""
    from adapters.publisher.local import LocalBus
    from cli import local_delivery

    bus = deps.publisher
    if isinstance(bus, LocalBus):
        local_delivery.attach(bus)
    return bus


def _pump(bus: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        if not bus.drain():
            time.sleep(0.05)


def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="Port (0 = any free port)."),
) -> None:
    """Host handle_raw_file (/gcs/), handle_pubsub (/pubsub/) and operator (/) locally."""
    from werkzeug.serving import make_server

    deps = open_deps(log_default="WARNING")
    bus = attach_local_bus(deps)
    server = make_server(host, port, build_app(), threaded=True)
    stop = threading.Event()
    if hasattr(bus, "drain"):
        threading.Thread(target=_pump, args=(bus, stop), daemon=True, name="caf-bus").start()
    console.print(f"CAF serving on http://{host}:{server.server_port}  (/gcs/, /pubsub/, /)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
