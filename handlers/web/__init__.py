"""The operator page: server-rendered HTML over the metadata database, on the `operator` target.

`route(request, deps)` answers the page's paths and returns None for anything else (the operator
router then tries its other modules). Every page needs a bearer token — the `Authorization`
header, or the HttpOnly cookie set by the login form — and shows only the caller's tenant.
Actions (retry a file, restart a batch) are a GET that shows a confirmation form and a POST that
acts; POSTs authenticated by the cookie carry a CSRF token. No JavaScript.

    /                      overview: counts, last hours' metrics, recent errors and batches
    /files                 files, filtered by status, table and day; /files/ID
    /files/ID/rejected     a file's rejected rows as a page; /files/ID/quarantine the raw NDJSON object
    /files/ID/retry        confirm (GET) / retry (POST) a file in ERROR
    /batches, /batches/ID  batches; one batch with its task DAG as SVG (/batches/ID/dag.svg alone)
    /batches/ID/restart    confirm (GET) / restart (POST) the failed and skipped runs of a batch
    /runs                  task runs with errors and remote ids
    /tables, /tables/D.T   table freshness
    /login, /logout        the browser's sign-in form and sign-out
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from errors import PermanentError

if TYPE_CHECKING:
    from jinja2 import Environment
    from werkzeug.wrappers import Response

    from app.deps import Deps

TEMPLATES = Path(__file__).resolve().parent / "templates"
REFRESH_SECONDS = 5
"""How often a page showing a running batch reloads itself."""
_ID = r"(?P<id>\d{1,18})"
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((name, re.compile(f"^{rx}$")) for name, rx in (
    ("overview", "/"),
    ("files", "/files"),
    ("file", f"/files/{_ID}"),
    ("quarantine", f"/files/{_ID}/quarantine"),
    ("rejected", f"/files/{_ID}/rejected"),
    ("retry", f"/files/{_ID}/retry"),
    ("batches", "/batches"),
    ("batch", f"/batches/{_ID}"),
    ("dag_svg", f"/batches/{_ID}/dag.svg"),
    ("restart", f"/batches/{_ID}/restart"),
    ("runs", "/runs"),
    ("tables", "/tables"),
    ("table", r"/tables/(?P<dataset>[A-Za-z_]\w*)\.(?P<table>[A-Za-z_]\w*)"),
))
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


@dataclass(frozen=True)
class Caller:
    """The authenticated caller: its tenant, its token, and whether the token came from the cookie."""

    tenant: str
    token: str
    from_cookie: bool


def route(request: Any, deps: Deps) -> Response | None:
    """The page for `request`, or None when the path is not the operator page's."""
    path = (request.path or "/").rstrip("/") or "/"
    if path in ("/login", "/logout"):
        return _login(request, deps) if path == "/login" else _logout(request)
    found = next(((name, m) for name, pattern in PATTERNS if (m := pattern.match(path))), None)
    if found is None:
        return None
    name, match = found
    from handlers.web import auth, views

    token, from_cookie = auth.request_token(request)
    tenant = auth.tenant_for_token(token, deps.settings)
    if tenant is None or token is None:
        return _unauthenticated(request, invalid=token is not None)
    caller = Caller(tenant=tenant, token=token, from_cookie=from_cookie)
    if request.method not in ("GET", "HEAD") and not (request.method == "POST" and name in ("retry", "restart")):
        return html_error(f"{request.method} is not allowed on {path}", 405, caller)
    try:
        return getattr(views, name)(request, deps, caller, **match.groupdict())  # type: ignore[no-any-return]
    except PermanentError as exc:
        return html_error(str(exc), int(getattr(exc, "http_status", 400)), caller)


# -- rendering -------------------------------------------------------------------------------------
@functools.cache
def environment() -> Environment:
    from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape

    # ChainableUndefined: optional keys (summary.note, producer.batch_id, ...) read as empty.
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                       undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True)


def response(body: str | bytes, status: int = 200, *, mimetype: str = "text/html",
             headers: dict[str, str] | None = None) -> Response:
    from werkzeug.wrappers import Response

    result = Response(body, status=status, mimetype=mimetype)
    for key, value in {**SECURITY_HEADERS, **(headers or {})}.items():
        result.headers[key] = value
    return result


def render(template: str, caller: Caller | None, *, status: int = 200, **context: Any) -> Response:
    """Render a page; `refresh="/path"` makes it reload itself (no JavaScript) while something runs."""
    context.setdefault("notice", None)
    context.setdefault("section", None)
    context.setdefault("refresh", None)
    context.setdefault("refresh_seconds", REFRESH_SECONDS)
    html = environment().get_template(template).render(tenant=caller.tenant if caller else None, **context)
    return response(html, status)


def redirect(location: str, *, headers: dict[str, str] | None = None) -> Response:
    return response("", 303, headers={"Location": location, **(headers or {})})


def html_error(message: str, status: int, caller: Caller | None) -> Response:
    return render("error.html", caller, status=status, code=status, message=message, back="/")


def _wants_html(request: Any) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def _unauthenticated(request: Any, *, invalid: bool) -> Response:
    if _wants_html(request):
        from handlers.web.auth import clear_cookie_header, is_secure

        target = request.full_path.rstrip("?") if getattr(request, "full_path", None) else request.path
        result = render("login.html", None, status=401, next=target,
                        error="Your session is not valid any more; sign in again." if invalid else None)
        if invalid:
            result.headers["Set-Cookie"] = clear_cookie_header(secure=is_secure(request))
        return result
    body = json.dumps({"error": "invalid token" if invalid else "authentication required"})
    return response(body, 401, mimetype="application/json", headers={"WWW-Authenticate": 'Bearer realm="caf"'})


def _login(request: Any, deps: Deps) -> Response:
    from handlers.web import auth

    if request.method == "POST":
        token = (request.form.get("token") or "").strip()
        target = auth.safe_next(request.form.get("next"))
        if auth.tenant_for_token(token, deps.settings) is None:
            return render("login.html", None, status=401, next=target, error="That token is not valid.")
        return redirect(target, headers={"Set-Cookie": auth.cookie_header(token, secure=auth.is_secure(request))})
    return render("login.html", None, next=auth.safe_next(request.args.get("next")), error=None)


def _logout(request: Any) -> Response:
    from handlers.web.auth import clear_cookie_header, is_secure

    return redirect("/login", headers={"Set-Cookie": clear_cookie_header(secure=is_secure(request))})
