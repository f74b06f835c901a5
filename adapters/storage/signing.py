"""Short-lived signed upload URLs: V4 signed PUTs on GCS, HMAC-signed PUTs served by `caf serve` locally.

A URL is bound to one object, the PUT method, the declared content type and an expiry; the
uploader needs no credentials. GCS checks its own signatures. Local URLs point at the operator
app (`PUT /uploads/<bucket>/<object>`), which checks them with `LocalSigner.verify`.

Production signs with the runtime service account through IAM signBlob (service account email
plus access token): no key file exists anywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from errors import PermanentError, TransientError

UPLOAD_ROUTE = "/uploads/"
MAX_TTL_SECONDS = 7 * 24 * 3600  # the V4 maximum


class SignatureRefused(PermanentError):
    """An upload URL that is expired, tampered with, or used with another content type."""

    http_status = 403


class UploadSigner(Protocol):
    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str) -> str:
        """An absolute URL that accepts one PUT of `name` with `content_type` for `ttl_seconds`."""
        ...


# -- local ------------------------------------------------------------------------------------
class LocalSigner:
    """HMAC-SHA256 signed URLs for the local upload endpoint."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise PermanentError("the upload signing key must be at least 16 bytes")
        self._key = key
        self._clock = clock

    def _mac(self, bucket: str, name: str, content_type: str, expires: int) -> str:
        message = "\n".join(("PUT", bucket, name, content_type, str(expires))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str) -> str:
        _check_ttl(ttl_seconds)
        expires = int(self._clock()) + ttl_seconds
        path = UPLOAD_ROUTE + urllib.parse.quote(f"{bucket}/{name}", safe="/")
        query = urllib.parse.urlencode({"expires": expires, "content_type": content_type,
                                        "signature": self._mac(bucket, name, content_type, expires)})
        return f"{base_url.rstrip('/')}{path}?{query}"

    def verify(self, *, path: str, args: Any, content_type: str | None) -> tuple[str, str]:
        """Check an incoming upload; returns (bucket, object name) or raises SignatureRefused.

        Args:
            path: the request path (`/uploads/<bucket>/<name>`), already URL-decoded.
            args: the query parameters (a mapping).
            content_type: the request's Content-Type header.
        """
        if not path.startswith(UPLOAD_ROUTE):
            raise SignatureRefused("not an upload URL")
        bucket, _, name = path[len(UPLOAD_ROUTE):].partition("/")
        signature, signed_type = str(args.get("signature", "")), str(args.get("content_type", ""))
        try:
            expires = int(args.get("expires", ""))
        except ValueError:
            raise SignatureRefused("upload URL has no valid expiry") from None
        if not bucket or not name or not signature:
            raise SignatureRefused("upload URL is incomplete")
        expected = self._mac(bucket, name, signed_type, expires)
        if not hmac.compare_digest(expected, signature):
            raise SignatureRefused("upload URL signature does not match")
        if expires < self._clock():
            raise SignatureRefused("upload URL has expired")
        if (content_type or "") != signed_type:
            raise SignatureRefused(f"upload URL is bound to Content-Type {signed_type!r}, got {content_type!r}")
        return bucket, name


_process_key: bytes | None = None
_process_key_lock = threading.Lock()


def local_signing_key(configured: str | None) -> bytes:
    """The configured key, or one generated for this process (URLs then die with the process)."""
    global _process_key
    if configured:
        return configured.encode()
    with _process_key_lock:
        if _process_key is None:
            _process_key = secrets.token_bytes(32)
        return _process_key


# -- GCS --------------------------------------------------------------------------------------
class GcsSigner:
    """V4 signed PUT URLs from google-cloud-storage.

    With `credentials` that hold a private key (tests, or a developer's service-account key) the
    URL is signed locally. Otherwise the runtime credentials are refreshed and the signature is
    made by IAM signBlob for their service account (needs roles/iam.serviceAccountTokenCreator
    on itself); this is the production path.
    """

    def __init__(self, client: Any, *, credentials: Any = None) -> None:
        self._client = client
        self._credentials = credentials
        self._lock = threading.Lock()

    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str = "") -> str:
        _check_ttl(ttl_seconds)
        blob = self._client.bucket(bucket).blob(name)
        kwargs: dict[str, Any] = {"version": "v4", "method": "PUT", "content_type": content_type,
                                  "expiration": timedelta(seconds=ttl_seconds)}
        credentials = self._credentials if self._credentials is not None else self._runtime_credentials()
        if _signs_locally(credentials):
            kwargs["credentials"] = credentials
        else:
            kwargs.update(service_account_email=credentials.service_account_email, access_token=credentials.token)
        try:
            return str(blob.generate_signed_url(**kwargs))
        except Exception as exc:
            raise _translate(exc, bucket, name) from exc

    def _runtime_credentials(self) -> Any:
        import google.auth
        from google.auth.transport.requests import Request

        with self._lock:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"])
            credentials = self._credentials
            if not credentials.valid or not getattr(credentials, "service_account_email", None):
                try:
                    credentials.refresh(Request())  # also resolves the metadata server's "default" email
                except Exception as exc:
                    raise _translate(exc, "-", "-") from exc
            return credentials


def _signs_locally(credentials: Any) -> bool:
    from google.oauth2 import service_account

    return isinstance(credentials, service_account.Credentials)


def _check_ttl(ttl_seconds: int) -> None:
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise PermanentError(f"upload URL lifetime must be 1..{MAX_TTL_SECONDS} seconds, not {ttl_seconds}")


def _translate(exc: Exception, bucket: str, name: str) -> Exception:
    from google.auth import exceptions as auth_exc

    where = f"gs://{bucket}/{name}"
    if isinstance(exc, auth_exc.TransportError | ConnectionError | TimeoutError) or (
            isinstance(exc, auth_exc.RefreshError) and getattr(exc, "retryable", False)):
        return TransientError(f"cannot sign upload URL for {where}: {type(exc).__name__}")
    return PermanentError(f"cannot sign upload URL for {where}: {type(exc).__name__}: {exc}")


def build_signer(settings: Any, storage: Any, *, clock: Callable[[], datetime] | None = None) -> UploadSigner:
    """Local HMAC signer when storage is a local folder, else V4 signing on the GCS client.

    Args:
        clock: the application clock (local URLs expire by it); default the system time.
    """
    if settings.storage_root is not None:
        key = settings.auth.signing_key.get_secret_value() if settings.auth.signing_key else None
        seconds = (lambda: clock().timestamp()) if clock is not None else time.time
        return LocalSigner(local_signing_key(key), clock=seconds)
    return GcsSigner(storage.client)


def expiry(ttl_seconds: int, *, now: datetime | None = None) -> str:
    """ISO time at which a URL signed now for `ttl_seconds` expires (for API answers)."""
    return ((now or datetime.now(UTC)) + timedelta(seconds=ttl_seconds)).isoformat()
