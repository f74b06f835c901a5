"""Bearer authentication: static tokens, and Google ID tokens verified by google-auth against test certificates."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import crypt, jwt

from config.settings import AuthSettings
from handlers import auth
from tests.tenancy.conftest import bearer, declare

AUDIENCE = "https://caf-operator-xyz.a.run.app"
PRINCIPALS = {"ops@acme.example": "tenant_a", "sub:4242": "tenant_b"}


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def google_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def certs(google_key):
    public = google_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    auth.use_certs(lambda: {"test-kid": public})
    yield
    auth.use_certs(None)


def id_token(key: rsa.RSAPrivateKey, **claims) -> str:
    kid = claims.pop("kid", "test-kid")
    now = int(time.time())
    payload = {"iss": "https://accounts.google.com", "aud": AUDIENCE, "sub": "1001", "email": "ops@acme.example",
               "email_verified": True, "iat": now, "exp": now + 300} | claims
    signer = crypt.RSASigner.from_string(_pem(key), key_id=kid)
    return jwt.encode(signer, {k: v for k, v in payload.items() if v is not None}).decode()


def request(token: str | None) -> SimpleNamespace:
    return SimpleNamespace(headers={"Authorization": f"Bearer {token}"} if token else {})


GOOGLE = AuthSettings(mode="google", audience=AUDIENCE, principals=PRINCIPALS)


def test_google_id_token_is_verified_and_mapped_to_a_tenant(certs, google_key) -> None:
    assert auth.authenticate(request(id_token(google_key)), GOOGLE) == auth.Identity("ops@acme.example", "tenant_a")
    by_subject = id_token(google_key, sub="4242", email="other@x.example")
    assert auth.authenticate(request(by_subject), GOOGLE) == auth.Identity("other@x.example", "tenant_b")
    unverified = id_token(google_key, email_verified=False, sub="4242")  # an unverified email is not used
    assert auth.authenticate(request(unverified), GOOGLE) == auth.Identity("sub:4242", "tenant_b")


@pytest.mark.parametrize("claims", [{"aud": "https://someone-else.example"}, {"exp": int(time.time()) - 3600},
                                    {"iss": "https://evil.example"}, {"kid": "unknown-kid"}])
def test_bad_google_tokens_are_401(certs, google_key, claims) -> None:
    with pytest.raises(auth.Unauthorized):
        auth.authenticate(request(id_token(google_key, **claims)), GOOGLE)


def test_token_signed_by_another_key_or_garbage_is_401(certs) -> None:
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (id_token(forger), "not.a.jwt", "e30.e30."):
        with pytest.raises(auth.Unauthorized):
            auth.authenticate(request(token), GOOGLE)


def test_verified_identity_without_a_tenant_is_403(certs, google_key) -> None:
    token = id_token(google_key, email="stranger@acme.example", sub="7")
    with pytest.raises(auth.Forbidden) as raised:
        auth.authenticate(request(token), GOOGLE)
    assert raised.value.http_status == 403


def test_static_tokens(certs) -> None:
    static = AuthSettings(mode="static", static_tokens={"s3cret": "tenant_a"})
    identity = auth.authenticate(request("s3cret"), static)
    assert identity.tenant == "tenant_a" and "s3cret" not in identity.subject
    for bad in (None, "s3cre", "s3cret2", "S3CRET"):
        with pytest.raises(auth.Unauthorized):
            auth.authenticate(request(bad), static)
    with pytest.raises(auth.Unauthorized):  # a static token is never accepted in google mode
        auth.authenticate(request("s3cret"), GOOGLE.model_copy(update={"static_tokens": {"s3cret": "tenant_a"}}))


def test_api_in_google_mode_takes_the_tenant_from_the_token_only(deps, certs, google_key) -> None:
    from tests.conftest import make_client

    deps.settings = deps.settings.model_copy(update={"auth": GOOGLE})
    client = make_client("operator", "http")
    body = {"files": [declare("a.csv", b"x\n")]}
    created = client.post("/jobs", json=body, headers=bearer(id_token(google_key)))
    assert created.status_code == 201
    assert created.get_json()["requested_by"] == "ops@acme.example"
    job = created.get_json()["job_id"]
    assert client.get(f"/jobs/{job}", headers=bearer(id_token(google_key, sub="4242", email=None))).status_code == 404
    assert client.get(f"/jobs/{job}", headers=bearer(id_token(google_key))).status_code == 200
    assert client.post("/jobs", json=body | {"tenant": "tenant_b"},
                       headers=bearer(id_token(google_key))).status_code == 400
    assert client.post("/jobs", json=body, headers=bearer("token-a")).status_code == 401
    assert client.post("/jobs", json=body, headers=bearer(id_token(google_key, aud="x"))).status_code == 401
    assert client.post("/jobs", json=body, headers=bearer(id_token(google_key, email="who@x.example",
                                                                  sub="9"))).status_code == 403
