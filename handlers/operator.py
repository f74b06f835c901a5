"""The operator HTTP target: health and JSON status (the web page comes with operations work)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from handlers.deps import Deps


def handle(request: Any, deps: Deps) -> Any:
    path = (request.path or "/").rstrip("/") or "/"
    if request.method != "GET":
        return {"error": f"method {request.method} not allowed"}, 405
    if path in ("/", "/healthz"):
        return {"status": "ok", "service": "caf-operator"}
    if path == "/status":
        from database.session import unit_of_work
        from database.status import summary

        with unit_of_work(deps.sessions) as session:
            return summary(session=session)
    return {"error": f"no such page: {path}"}, 404
