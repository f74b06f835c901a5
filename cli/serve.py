"""`caf serve`: all three functions in one local server, with the local bus pumping events.

The server is for one developer's machine, so it refuses what a web page open in that
developer's browser could send it (`LocalGuard`): requests for another Host name (DNS
rebinding), CloudEvents a browser can forge (a cross-site "simple" request), and bodies over
`serve.max_request_bytes`.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import typer

from cli.context import console, open_deps

MOUNTS = {"/gcs": ("handle_raw_file", "cloudevent"), "/pubsub": ("handle_pubsub", "cloudevent")}
UPLOADS = "/uploads/"  # signed uploads: limited by their declared size (handlers.jobs_api), not here
# Content types a cross-site page may POST without a CORS preflight ("simple requests").
_SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")  # noqa: S104 - names of "all interfaces", not a bind
log = logging.getLogger("caf.serve")


class LocalGuard:
    """WSGI middleware in front of `caf serve`'s app.

    - Host: only `allowed_hosts` (lower case, without port) are answered; 400 otherwise.
    - CloudEvent mounts accept only a content type a page cannot send cross-site without a CORS
      preflight (which this server never grants): `application/json` (binary mode with `ce-*`
      headers, or a Pub/Sub push) or `application/cloudevents+json` (structured mode). A missing,
      text/plain or form content type gets 415.
    - Bodies over `max_request_bytes` get 413, announced (Content-Length) or streamed (chunked,
      read at most one byte past the limit), before the app (and functions-framework, which
      reads whole bodies into memory) sees them.
    """

    def __init__(self, app: Callable[..., Any], *, allowed_hosts: Iterable[str], max_request_bytes: int) -> None:
        self.app = app
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.max_request_bytes = max_request_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        host = _host_name(str(environ.get("HTTP_HOST", "")))
        if host not in self.allowed_hosts:
            log.warning("refused a request for Host %r (serve.allowed_hosts)", host[:200])
            return _answer(start_response, 400, "this Host is not served; add it to serve.allowed_hosts")
        path = str(environ.get("PATH_INFO", ""))
        if not path.startswith(UPLOADS):
            refusal = self._limit_body(environ)
            if refusal:
                return _answer(start_response, 413, refusal)
        is_event = path in MOUNTS or path.startswith(tuple(f"{mount}/" for mount in MOUNTS))
        if is_event and not _unforgeable(environ):
            log.warning("refused a CloudEvent that a browser could have sent cross-site (%s)",
                        str(environ.get("CONTENT_TYPE", ""))[:100])
            return _answer(start_response, 415, "send CloudEvents with Content-Type application/json (binary "
                                                "mode, Pub/Sub push) or application/cloudevents+json")
        return self.app(environ, start_response)  # type: ignore[no-any-return]

    def _limit_body(self, environ: dict[str, Any]) -> str | None:
        limit = self.max_request_bytes
        declared = str(environ.get("CONTENT_LENGTH") or "")
        if declared:
            return f"the body is larger than {limit} bytes" if not declared.isdigit() or int(declared) > limit \
                else None
        if not environ.get("wsgi.input_terminated"):
            return None  # no length and not chunked: there is no body to read
        body = environ["wsgi.input"].read(limit + 1)
        if len(body) > limit:
            return f"the body is larger than {limit} bytes"
        environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return None


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _unforgeable(environ: dict[str, Any]) -> bool:
    """A content type a page cannot send cross-site without a CORS preflight (which this server
    never grants): present and not text/plain or a form. Eventarc (binary mode) and Pub/Sub push
    send `application/json`, structured mode `application/cloudevents+json`."""
    content_type = str(environ.get("CONTENT_TYPE", "")).split(";", 1)[0].strip().lower()
    return bool(content_type) and content_type not in _SIMPLE_TYPES


def _answer(start_response: Callable[..., Any], status: int, message: str) -> list[bytes]:
    from werkzeug.http import HTTP_STATUS_CODES

    body = json.dumps({"error": message}).encode()
    start_response(f"{status} {HTTP_STATUS_CODES[status]}", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")])
    return [body]


def allowed_hosts(settings: Any, bind_host: str | None = None) -> list[str]:
    """`serve.allowed_hosts`, plus the address `caf serve` binds when it is a specific one."""
    hosts = list(settings.serve.allowed_hosts)
    if bind_host and bind_host not in _WILDCARDS:
        hosts.append(f"[{bind_host}]" if ":" in bind_host and not bind_host.startswith("[") else bind_host)
    return hosts


def build_app(*, bind_host: str | None = None) -> Any:
    """One WSGI app: `/` operator, `/gcs` raw-file CloudEvents, `/pubsub` Pub/Sub CloudEvents,
    behind LocalGuard (settings of the current Deps)."""
    import functions_framework
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from config.settings import PROJECT_ROOT

    source = str(PROJECT_ROOT / "main.py")
    root = functions_framework.create_app("operator", source, "http")
    mounts = {path: functions_framework.create_app(target, source, sig) for path, (target, sig) in MOUNTS.items()}
    from app.deps import get_deps

    settings = get_deps().settings
    dispatcher = DispatcherMiddleware(root.wsgi_app, {p: a.wsgi_app for p, a in mounts.items()})
    root.wsgi_app = LocalGuard(dispatcher, allowed_hosts=allowed_hosts(settings, bind_host),
                               max_request_bytes=settings.serve.max_request_bytes)
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
    server = make_server(host, port, build_app(bind_host=host), threaded=True)
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
