"""Bearer-token authentication: a verified identity and the tenant it maps to.

The tenant always comes from configuration keyed by the verified identity, never from the
request. Mode `static` (local, tests) maps configured tokens to tenants; mode `google` verifies
a Google-signed ID token with google-auth (signature, expiry, issuer, audience) and maps its
email (when verified) or subject through `auth.principals`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from database.tenancy import validate_tenant
from errors import ConfigError, PermanentError
from values.identifiers import InvalidTenant

if TYPE_CHECKING:
    from config.settings import AuthSettings

log = logging.getLogger("caf.auth")

CertsFetcher = Callable[[], Mapping[str, str]]
"""Returns Google's current token-signing certificates: key id → PEM."""


class Unauthorized(PermanentError):
    """No usable credentials: answer 401."""

    http_status = 401


class Forbidden(PermanentError):
    """A verified identity that no tenant is configured for: answer 403."""

    http_status = 403


@dataclass(frozen=True)
class Identity:
    subject: str
    """Who: an email, `sub:<subject>`, or `token:<hash prefix>` for static tokens."""
    tenant: str


def authenticate(request: Any, auth: AuthSettings) -> Identity:
    """The identity behind the request's `Authorization: Bearer <token>` header."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    if auth.mode == "static":
        return _static(token, auth.static_tokens)
    if not auth.audience:
        raise ConfigError("auth.audience must be set when auth.mode is google")
    claims = verify_google_id_token(token, audience=auth.audience)
    return _principal(claims, auth.principals)


def _static(token: str, tokens: Mapping[str, str]) -> Identity:
    tenant = None
    for candidate, mapped in tokens.items():  # compare against every token: no early exit to time
        if hmac.compare_digest(candidate.encode(), token.encode()):
            tenant = mapped
    if tenant is None:
        raise Unauthorized("invalid bearer token")
    return Identity(subject=f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}", tenant=_tenant(tenant))


def _principal(claims: Mapping[str, Any], principals: Mapping[str, str]) -> Identity:
    email = claims.get("email") if claims.get("email_verified") else None
    subject = str(claims.get("sub") or "")
    for key in (email, subject and f"sub:{subject}", subject):
        if key and key in principals:
            return Identity(subject=str(email or f"sub:{subject}"), tenant=_tenant(principals[key]))
    log.warning("verified identity %s has no tenant configured", email or subject)
    raise Forbidden("this identity is not allowed to use CAF")


def _tenant(value: str) -> str:
    try:
        return validate_tenant(value)
    except InvalidTenant as exc:
        raise ConfigError(f"auth configuration maps to an invalid tenant: {exc}") from None


# -- Google ID tokens -------------------------------------------------------------------------
def verify_google_id_token(token: str, *, audience: str, certs: CertsFetcher | None = None) -> Mapping[str, Any]:
    """Verify with `google.oauth2.id_token.verify_oauth2_token` (signature, exp, iss, aud).

    Args:
        certs: where the signing certificates come from; default Google's published ones
            (fetched over HTTPS by google-auth). Tests pass their own.
    """
    from google.oauth2 import id_token

    transport = _CertsTransport(certs) if certs is not None else google_transport()
    try:
        return dict(id_token.verify_oauth2_token(token, transport, audience=audience))
    except Exception as exc:  # google-auth raises ValueError, GoogleAuthError, MalformedError, ...
        from google.auth import exceptions as auth_exc

        if isinstance(exc, auth_exc.TransportError):
            from errors import TransientError

            raise TransientError("cannot fetch Google's token certificates") from exc
        raise Unauthorized(f"invalid ID token: {type(exc).__name__}") from None


def google_transport() -> Any:
    """The google-auth transport used to fetch certificates (a seam: tests replace it)."""
    certs = _installed_certs
    return _CertsTransport(certs) if certs is not None else _requests_transport()


@functools.cache
def _requests_transport() -> Any:
    from google.auth.transport import requests

    return requests.Request()


_installed_certs: CertsFetcher | None = None


def use_certs(fetcher: CertsFetcher | None) -> None:
    """Verify ID tokens against `fetcher`'s certificates instead of Google's (tests, air-gapped runs)."""
    global _installed_certs
    _installed_certs = fetcher


class _CertsTransport:
    """A google-auth transport that answers the certificate GET from a fetcher."""

    def __init__(self, fetcher: CertsFetcher) -> None:
        self._fetcher = fetcher

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        return _Response(json.dumps(dict(self._fetcher())).encode())


@dataclass
class _Response:
    data: bytes
    status: int = 200
    headers: Mapping[str, str] | None = None
