"""The operator HTTP target: a small router over health, status and the route modules.

Route modules (`handlers.jobs_api`, `handlers.web`) each expose `route(request, deps)` returning a
response, or None when the path is not theirs. A PermanentError becomes a 4xx JSON answer; a
TransientError propagates (HTTP 500: try again).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from errors import PermanentError

if TYPE_CHECKING:
    from app.deps import Deps

ROUTE_MODULES = ("handlers.jobs_api", "handlers.web")


def _route_modules() -> list[Any]:
    modules = []
    for name in ROUTE_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def handle(request: Any, deps: Deps) -> Any:
    path = (request.path or "/").rstrip("/") or "/"
    try:
        if path == "/healthz" and request.method == "GET":
            return {"status": "ok", "service": "caf-operator"}
        if path == "/status" and request.method == "GET":
            return status(request, deps)
        for module in _route_modules():
            response = module.route(request, deps)
            if response is not None:
                return response
        if path == "/" and request.method == "GET":
            return {"status": "ok", "service": "caf-operator"}
    except PermanentError as exc:
        return {"error": str(exc)}, getattr(exc, "http_status", 400)
    return {"error": f"no such page: {request.method} {path}"}, 404


def status(request: Any, deps: Deps) -> Any:
    """`GET /status` with a bearer token: the caller's tenant's counts; every tenant's for `auth.admins`."""
    from database.session import unit_of_work
    from database.status import summary
    from database.tenancy import tenant_session
    from handlers import auth

    try:
        identity = auth.authenticate(request, deps.settings.auth)
    except auth.Unauthorized as exc:
        return {"error": str(exc)}, 401, {"WWW-Authenticate": 'Bearer realm="caf"'}
    if identity.subject in deps.settings.auth.admins:
        with unit_of_work(deps.sessions) as session:
            return summary(session=session)
    with tenant_session(deps.tenant_sessions, identity.tenant) as session:
        return summary(session=session, tenant=identity.tenant)
