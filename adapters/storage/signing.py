"""Short-lived signed upload URLs: V4 signed PUTs on GCS, HMAC-signed PUTs served by `caf serve` locally.

A URL is bound to one object, the PUT method, the declared content type and an expiry; the
uploader needs no credentials. GCS checks its own signatures. Local URLs point at the operator
app (`PUT /uploads/<bucket>/<object>`), which checks them with `LocalSigner.verify`.

Production signs with the runtime service account through IAM signBlob (service account email
plus access token): no key file exists anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from errors import PermanentError, TransientError

UPLOAD_ROUTE = "/uploads/"
MAX_TTL_SECONDS = 7 * 24 * 3600  # the V4 maximum
RANGE_HEADER = "x-goog-content-length-range"
USED_URLS_DIR = ".upload-urls"
"""Under the local storage root (not a bucket: bucket names never start with a dot)."""


class SignatureRefused(PermanentError):
    """An upload URL that is expired, tampered with, or used with another content type."""

    http_status = 403


class UploadUrlUsed(PermanentError):
    """A local upload URL that already carried one successful PUT."""

    http_status = 409


class UploadSigner(Protocol):
    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str,
                 max_bytes: int | None = None) -> str:
        """An absolute URL that accepts a PUT of `name` with `content_type` for `ttl_seconds`
        (of at most `max_bytes` where the signature can bind it)."""
        ...

    def upload_headers(self, *, content_type: str, max_bytes: int | None = None) -> dict[str, str]:
        """The headers the uploader must send with the PUT (they are part of the signature)."""
        ...


# -- local ------------------------------------------------------------------------------------
class LocalSigner:
    """HMAC-SHA256 signed URLs for the local upload endpoint.

    With `used_dir`, a URL carries one successful PUT (`single_use`): a marker file per used URL,
    created atomically, removed again when the PUT fails, pruned once the URL has expired.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time, used_dir: Path | None = None) -> None:
        if len(key) < 16:
            raise PermanentError("the upload signing key must be at least 16 bytes")
        self._key = key
        self._clock = clock
        self._used_dir = used_dir

    def _mac(self, bucket: str, name: str, content_type: str, expires: int, nonce: str) -> str:
        message = "\n".join(("PUT", bucket, name, content_type, str(expires), nonce)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str,
                 max_bytes: int | None = None) -> str:
        # The size is not signed: the endpoint reads the declared size from the job file itself.
        _check_ttl(ttl_seconds)
        expires = int(self._clock()) + ttl_seconds
        path = UPLOAD_ROUTE + urllib.parse.quote(f"{bucket}/{name}", safe="/")
        nonce = secrets.token_urlsafe(12)  # every URL distinct, so each one can be used up on its own
        query = urllib.parse.urlencode({"expires": expires, "content_type": content_type, "nonce": nonce,
                                        "signature": self._mac(bucket, name, content_type, expires, nonce)})
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
        nonce = str(args.get("nonce", ""))
        try:
            expires = int(args.get("expires", ""))
        except ValueError:
            raise SignatureRefused("upload URL has no valid expiry") from None
        if not bucket or not name or not signature or not nonce:
            raise SignatureRefused("upload URL is incomplete")
        expected = self._mac(bucket, name, signed_type, expires, nonce)
        if not hmac.compare_digest(expected, signature):
            raise SignatureRefused("upload URL signature does not match")
        if expires < self._clock():
            raise SignatureRefused("upload URL has expired")
        if (content_type or "") != signed_type:
            raise SignatureRefused(f"upload URL is bound to Content-Type {signed_type!r}, got {content_type!r}")
        return bucket, name

    def upload_headers(self, *, content_type: str, max_bytes: int | None = None) -> dict[str, str]:
        return {"Content-Type": content_type}

    @contextlib.contextmanager
    def single_use(self, args: Any) -> Iterator[None]:
        """Claim a verified URL for one PUT; UploadUrlUsed when it already carried one (or carries
        one right now). The claim is given back when the block raises: a refused PUT (too large,
        storage error) does not use the URL up."""
        if self._used_dir is None:
            yield
            return
        self._used_dir.mkdir(parents=True, exist_ok=True)
        expires, signature = int(args["expires"]), str(args["signature"])  # both checked by verify()
        marker = self._used_dir / f"{expires}-{signature}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise UploadUrlUsed("this upload URL was already used; declare the files again (POST /jobs) "
                                "for fresh URLs while the job is open") from None
        try:
            yield
        except BaseException:
            marker.unlink(missing_ok=True)
            raise
        self._prune()

    def _prune(self) -> None:
        assert self._used_dir is not None
        now = self._clock()
        for old in self._used_dir.iterdir():
            expires = old.name.split("-", 1)[0]
            if expires.isdigit() and int(expires) < now:
                old.unlink(missing_ok=True)


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

    def sign_put(self, *, bucket: str, name: str, content_type: str, ttl_seconds: int, base_url: str = "",
                 max_bytes: int | None = None) -> str:
        _check_ttl(ttl_seconds)
        blob = self._client.bucket(bucket).blob(name)
        kwargs: dict[str, Any] = {"version": "v4", "method": "PUT", "content_type": content_type,
                                  "expiration": timedelta(seconds=ttl_seconds)}
        if max_bytes is not None:
            # Signed, so GCS itself refuses a body outside the range (the uploader must send it).
            kwargs["headers"] = {RANGE_HEADER: f"0,{max_bytes}"}
        credentials = self._credentials if self._credentials is not None else self._runtime_credentials()
        if _signs_locally(credentials):
            kwargs["credentials"] = credentials
        else:
            kwargs.update(service_account_email=credentials.service_account_email, access_token=credentials.token)
        try:
            return str(blob.generate_signed_url(**kwargs))
        except Exception as exc:
            raise _translate(exc, bucket, name) from exc

    def upload_headers(self, *, content_type: str, max_bytes: int | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if max_bytes is not None:
            headers[RANGE_HEADER] = f"0,{max_bytes}"
        return headers

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
        return LocalSigner(local_signing_key(key), clock=seconds, used_dir=settings.storage_root / USED_URLS_DIR)
    return GcsSigner(storage.client)


def expiry(ttl_seconds: int, *, now: datetime | None = None) -> str:
    """ISO time at which a URL signed now for `ttl_seconds` expires (for API answers)."""
    return ((now or datetime.now(UTC)) + timedelta(seconds=ttl_seconds)).isoformat()
