"""The HTTP(S) scaffolding the loopback service fakes share: one JSON-answering handler, one starter.

A fake supplies `answer(method, path, headers, raw)` returning (status, headers, payload); a
status of None drops the connection without replying (the call took effect, the reply is lost).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Answer = Callable[[str, str, dict[str, str], bytes], tuple[int | None, dict[str, str], Any]]


class LoopbackServer(ThreadingHTTPServer):
    """A threading server on a free 127.0.0.1 port; call `shutdown()` (and `server_close()`) after."""

    daemon_threads = True

    def __init__(self, answer: Answer, content_type: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.content_type = content_type


def serve(answer: Answer, *, name: str, content_type: str = "application/json",
          tls: tuple[Path, Path] | None = None) -> tuple[LoopbackServer, str]:
    """Start serving `answer` (over HTTPS with `tls` = (certificate chain, key)); returns the server and its URL."""
    server = LoopbackServer(answer, content_type)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, args=(0.01,), name=name, daemon=True).start()
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, reply_headers, payload = self.server.answer(method, self.path, headers, raw)
        if status is None:  # a lost reply: close the connection without answering
            self.close_connection = True
            return
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {**reply_headers, "Content-Type": self.server.content_type}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass
