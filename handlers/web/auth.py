"""Who is asking: a bearer token (header, or the HttpOnly cookie the login form sets) → a tenant.

Tokens are checked by the shared `handlers.auth.authenticate` (static tokens locally, Google ID
tokens in production), exactly as the jobs API checks them; the cookie only carries the same
bearer token for a browser. The tenant never comes from the request body.

Forms posted with the cookie carry a CSRF token derived from the bearer token and the path
(an HMAC keyed by the token, so nothing is stored server-side and another site cannot forge it).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger("caf.web")
COOKIE = "caf_token"
COOKIE_MAX_AGE = 8 * 3600


@dataclass(frozen=True)
class _Bearer:
    """A request carrying only `Authorization: Bearer <token>`, for handlers.auth.authenticate."""

    token: str
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {"Authorization": f"Bearer {self.token}"})


def tenant_for_token(token: str | None, settings: Settings) -> str | None:
    """The tenant a bearer token belongs to, or None when it is missing, invalid or maps to no tenant."""
    if not token:
        return None
    from handlers import auth

    try:
        return auth.authenticate(_Bearer(token), settings.auth).tenant
    except (auth.Unauthorized, auth.Forbidden) as exc:
        log.info("operator page: token refused (%s)", type(exc).__name__)
        return None


def request_token(request: Any) -> tuple[str | None, bool]:
    """(token, from_cookie): the `Authorization: Bearer` header wins over the login cookie."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    cookie = request.cookies.get(COOKIE)
    return (unquote(cookie), True) if cookie else (None, False)


def csrf_token(token: str, path: str) -> str:
    return hmac.new(token.encode(), f"caf-csrf:{path}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(token: str, path: str, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(csrf_token(token, path), str(submitted))


def cookie_header(token: str, *, secure: bool) -> str:
    parts = [f"{COOKIE}={quote(token, safe='')}", "Path=/", "HttpOnly", "SameSite=Strict", f"Max-Age={COOKIE_MAX_AGE}"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie_header(*, secure: bool) -> str:
    return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0" + ("; Secure" if secure else "")


def is_secure(request: Any) -> bool:
    """HTTPS as the client sees it (Cloud Run terminates TLS and sets X-Forwarded-Proto)."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return bool(getattr(request, "is_secure", False)) or forwarded.split(",")[0].strip() == "https"


def safe_next(value: str | None) -> str:
    """A local path to go back to after login (never another site), else `/`.

    Only printable ASCII without spaces or backslashes: browsers drop tab / CR / LF inside URLs
    (`/<TAB>/evil.example` becomes `//evil.example`) and read `\\` as `/`, and a control character
    in a header is an error. What is left must have no scheme and no host once parsed.
    """
    if not value or not value.startswith("/") or len(value) > 2000:
        return "/"
    if any(not 32 < ord(c) < 127 or c == "\\" for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or value.startswith("//"):
        return "/"
    return value
