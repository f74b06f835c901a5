"""Signed upload URLs: V4 (GCS) checked field by field and cryptographically; local HMAC URLs."""

from __future__ import annotations

import base64
import hashlib
import urllib.parse
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from adapters.storage.signing import GcsSigner, LocalSigner, SignatureRefused, build_signer
from errors import PermanentError

EMAIL = "caf-signer@test-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def credentials(key):
    from google.oauth2 import service_account

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": "test-project", "private_key_id": "k1", "private_key": pem,
        "client_email": EMAIL, "token_uri": "https://oauth2.googleapis.com/token"})


@pytest.fixture(scope="module")
def client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client

    return Client(project="test-project", credentials=AnonymousCredentials())


def verify_v4(url: str, public_key, *, content_type: str, extra_headers: dict[str, str] | None = None) -> None:
    """Recompute the V4 canonical request and check the RSA signature over it (raises if it fails)."""
    parts = urllib.parse.urlsplit(url)
    unsigned, _, signature = parts.query.rpartition("&X-Goog-Signature=")
    fields = dict(urllib.parse.parse_qsl(unsigned))
    headers = sorted({"content-type": content_type, "host": parts.netloc, **(extra_headers or {})}.items())
    canonical = "\n".join(["PUT", parts.path, unsigned, "".join(f"{k}:{v}\n" for k, v in headers),
                           fields["X-Goog-SignedHeaders"], "UNSIGNED-PAYLOAD"])
    scope = fields["X-Goog-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["GOOG4-RSA-SHA256", fields["X-Goog-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    public_key.verify(bytes.fromhex(signature), to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_v4_signed_put_url_fields_and_signature(client, credentials, key) -> None:
    url = GcsSigner(client, credentials=credentials).sign_put(
        bucket="caf-uploads", name="tenant_a/0b1c/sales/orders/a b.csv", content_type="text/csv", ttl_seconds=900,
        base_url="ignored")
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "storage.googleapis.com")
    assert parts.path == "/caf-uploads/tenant_a/0b1c/sales/orders/a%20b.csv"
    fields = dict(urllib.parse.parse_qsl(parts.query))
    today = datetime.now(UTC).strftime("%Y%m%d")
    assert fields["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert fields["X-Goog-Credential"] == f"{EMAIL}/{today}/auto/storage/goog4_request"
    assert fields["X-Goog-Expires"] == "900"
    assert fields["X-Goog-SignedHeaders"] == "content-type;host"
    assert fields["X-Goog-Date"].startswith(today) and fields["X-Goog-Date"].endswith("Z")
    assert len(fields["X-Goog-Signature"]) == 512  # hex of a 2048-bit RSA signature

    verify_v4(url, key.public_key(), content_type="text/csv")
    with pytest.raises(InvalidSignature):  # bound to the declared content type
        verify_v4(url, key.public_key(), content_type="application/octet-stream")
    with pytest.raises(InvalidSignature):  # and to the object
        verify_v4(url.replace("a%20b.csv", "b.csv"), key.public_key(), content_type="text/csv")


def test_production_path_signs_through_iam_sign_blob_with_the_runtime_identity(client, key, monkeypatch) -> None:
    """No key file: the runtime credentials' email and access token go to IAM signBlob."""
    from google.cloud.storage import _signing

    class RuntimeCredentials:  # like compute_engine.Credentials: no private key, "default" email until refreshed
        service_account_email = "default"
        token = None
        valid = False

        def refresh(self, request) -> None:
            self.service_account_email, self.token, self.valid = EMAIL, "ya29.token", True

    calls = []

    def sign_blob(message, access_token, service_account_email, universe_domain="googleapis.com"):
        calls.append((access_token, service_account_email))
        raw = key.sign(message.encode() if isinstance(message, str) else message, padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode()

    monkeypatch.setattr(_signing, "_sign_message", sign_blob)
    monkeypatch.setattr("google.auth.default", lambda scopes=None: (RuntimeCredentials(), "test-project"))
    url = GcsSigner(client).sign_put(bucket="caf-uploads", name="t/j/x.ndjson", content_type="application/x-ndjson",
                                     ttl_seconds=900)
    assert calls == [("ya29.token", EMAIL)]
    assert f"X-Goog-Credential={urllib.parse.quote(EMAIL)}" in url
    verify_v4(url, key.public_key(), content_type="application/x-ndjson")


def test_build_signer_picks_the_backend(settings) -> None:
    assert isinstance(build_signer(settings, storage=None), LocalSigner)
    gcs = settings.model_copy(update={"storage_url": "gs://"})

    class Storage:
        client = object()

    assert isinstance(build_signer(gcs, Storage()), GcsSigner)


# -- local HMAC ---------------------------------------------------------------------------------
def local_url(signer: LocalSigner, name: str = "tenant_a/j1/a.csv", content_type: str = "text/csv"):
    url = signer.sign_put(bucket="uploads", name=name, content_type=content_type, ttl_seconds=900,
                          base_url="http://127.0.0.1:8080/")
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.unquote(parts.path), dict(urllib.parse.parse_qsl(parts.query))


def test_local_signed_url_round_trip_and_refusals() -> None:
    now = [1_800_000_000.0]
    signer = LocalSigner(b"k" * 32, clock=lambda: now[0])
    path, args = local_url(signer, name="tenant_a/j1/dir/a b.csv")
    assert path == "/uploads/uploads/tenant_a/j1/dir/a b.csv"
    assert args["expires"] == str(1_800_000_900)
    assert signer.verify(path=path, args=args, content_type="text/csv") == ("uploads", "tenant_a/j1/dir/a b.csv")

    tampered = args["signature"][:-1] + ("1" if args["signature"].endswith("0") else "0")  # URLs carry a nonce
    refusals = {
        "signature does not match": [(path.replace("j1", "j2"), args, "text/csv"),
                                     (path, args | {"expires": "1900000000"}, "text/csv"),
                                     (path, args | {"content_type": "text/plain"}, "text/plain"),
                                     (path, args | {"signature": tampered}, "text/csv"),
                                     (path, args | {"nonce": args["nonce"] + "x"}, "text/csv"),
                                     (path, args | {"signature": "x"}, "text/csv")],
        "bound to Content-Type": [(path, args, "text/plain"), (path, args, None)],
        "no valid expiry": [(path, {k: v for k, v in args.items() if k != "expires"}, "text/csv")],
        "incomplete": [("/uploads/uploads", args, "text/csv"),
                       (path, {k: v for k, v in args.items() if k != "nonce"}, "text/csv")],
    }
    for reason, cases in refusals.items():
        for p, a, ctype in cases:
            with pytest.raises(SignatureRefused, match=reason):
                signer.verify(path=p, args=a, content_type=ctype)
    assert LocalSigner(b"other-key-0123456789", clock=lambda: now[0]).sign_put(
        bucket="uploads", name="tenant_a/j1/dir/a b.csv", content_type="text/csv", ttl_seconds=900,
        base_url="http://x") != signer.sign_put(bucket="uploads", name="tenant_a/j1/dir/a b.csv",
                                                content_type="text/csv", ttl_seconds=900, base_url="http://x")
    now[0] += 901
    with pytest.raises(SignatureRefused, match="expired"):
        signer.verify(path=path, args=args, content_type="text/csv")
    assert SignatureRefused.http_status == 403


def test_local_signer_rejects_weak_keys_and_bad_lifetimes() -> None:
    with pytest.raises(PermanentError, match="16 bytes"):
        LocalSigner(b"short")
    for ttl in (0, -1, 7 * 24 * 3600 + 1):
        with pytest.raises(PermanentError, match="lifetime"):
            LocalSigner(b"k" * 32).sign_put(bucket="b", name="n", content_type="text/csv", ttl_seconds=ttl,
                                            base_url="http://x")
