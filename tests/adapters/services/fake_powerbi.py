"""A loopback HTTPS server playing Microsoft Entra ID (client credentials) and the Power BI refresh API.

Entra ID: the tenant's OpenID configuration and its v2.0 token endpoint (counts tokens issued).
Power BI: Refresh Dataset In Group (202 + RequestId / Location), Get Refresh Execution Details In
Group and Get Refresh History In Group, in their documented JSON shapes. Refreshes move from
"Unknown" to their outcome after a set number of polls, never by the clock. TLS uses a throwaway
CA made by `make_tls()`, which clients trust through `requests.Session.verify`.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.adapters.services.loopback import LoopbackServer
from tests.adapters.services.loopback import serve as serve_loopback

_DATASET = r"/v1\.0/myorg/groups/(?P<group>[^/]+)/datasets/(?P<dataset>[^/]+)/refreshes"
_ROUTES = [
    ("GET", re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$"), "_openid"),
    ("POST", re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$"), "_token"),
    ("POST", re.compile(rf"^{_DATASET}$"), "_start_refresh"),
    ("GET", re.compile(rf"^{_DATASET}$"), "_history"),
    ("GET", re.compile(rf"^{_DATASET}/(?P<request_id>[^/]+)$"), "_details"),
]


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA to trust, and the server's certificate chain and key."""

    ca: Path
    cert: Path
    key: Path


@dataclass
class FakePowerBi:
    """Server state and knobs; `url` (https://127.0.0.1:PORT) is set once started."""

    tenant_id: str = "tenant-0001"
    client_id: str = "client-0001"
    client_secret: str = "Sup3r~Secr3t.Value_for-tests"
    outcome: str = "Completed"
    running_polls: int = 1
    """How many status reads see "Unknown" before `outcome`."""
    enhanced: bool = True
    """False: refreshes have no execution details (404), so clients must read the history."""
    id_header: str = "RequestId"
    """Where POST refreshes puts the new refresh id: "RequestId" or "Location"."""
    error_code: str = "ModelRefreshFailed_CredentialsNotSpecified"
    error_message: str = "The credentials provided for the SQL source are invalid."
    history: list[dict] = field(default_factory=list)
    """Older refresh-history entries, newest first, listed after the ones made here."""
    now: datetime = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    tokens_issued: list[str] = field(default_factory=list)
    token_outages: int = 0
    """How many token requests get 503 temporarily_unavailable before tokens are issued again."""
    reject_all_tokens: bool = False
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lose_replies: dict[str, int] = field(default_factory=dict)
    """Route handler name → how many of its calls are carried out and then answered by dropping
    the connection (the reply is lost), e.g. {"_start_refresh": 1}."""
    unavailable_refreshes: int = 0
    """How many refresh requests get 503 without any effect."""
    url: str = ""
    _revoked: set[str] = field(default_factory=set)
    _errors: deque = field(default_factory=deque)
    _refreshes: list[dict] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, status: int, code: str = "Injected", *, times: int = 1, **headers: str) -> None:
        """Answer the next `times` Power BI API calls with an error (headers as kwargs, `_` for `-`)."""
        for _ in range(times):
            self._errors.append((status, code, {k.replace("_", "-"): v for k, v in headers.items()}))

    def expire_tokens(self) -> None:
        """Every token issued so far now gets 401, as when a token expires early."""
        self._revoked.update(self.tokens_issued)

    def refresh_bodies(self) -> list[Any]:
        """Bodies of the POST refreshes calls received."""
        return [
            body for method, path, body in self.requests if method == "POST" and path.endswith("refreshes")
        ]

    def handle(self, method: str, url: str, headers: dict[str, str], raw: bytes) -> tuple:
        """Route one request; returns (status, headers, JSON payload)."""
        parts = urlsplit(url)
        path, query = unquote(parts.path), parse_qs(parts.query)
        with self._lock:
            body = _decode(raw, headers.get("content-type", ""))
            self.requests.append((method, path, body))
            for verb, pattern, handler in _ROUTES:
                match = pattern.match(path)
                if verb == method and match:
                    if path.startswith("/v1.0/"):
                        refusal = self._refuse(headers.get("authorization", ""))
                        if refusal:
                            return refusal
                    reply = getattr(self, handler)(body, query, headers, **match.groupdict())
                    if self.lose_replies.get(handler):
                        self.lose_replies[handler] -= 1
                        return None, {}, None  # acted, but the client never hears about it
                    return reply
            return 404, {}, _api_error("NotFound", f"no route for {method} {path}")

    def _refuse(self, authorization: str) -> tuple | None:
        token = authorization.removeprefix("Bearer ")
        if self.reject_all_tokens or token not in self.tokens_issued or token in self._revoked:
            body = _api_error("TokenExpired", "Access token has expired, resubmit with a new access token")
            return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, body
        if self._errors:
            status, code, headers = self._errors.popleft()
            return status, headers, _api_error(code, f"injected HTTP {status}")
        return None

    def _openid(self, body: Any, query: dict, headers: dict, tenant: str) -> tuple:
        base = f"{self.url}/{tenant}"
        return (
            200,
            {},
            {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            },
        )

    def _token(self, form: dict, query: dict, headers: dict, tenant: str) -> tuple:
        client_id, secret = _client_credentials(form, headers.get("authorization", ""))
        if form.get("grant_type") != "client_credentials" or tenant != self.tenant_id:
            return 400, {}, {"error": "invalid_request", "error_description": "AADSTS900144: bad request"}
        if self.token_outages > 0:
            self.token_outages -= 1
            return (
                503,
                {},
                {"error": "temporarily_unavailable", "error_description": "AADSTS90033: try again"},
            )
        if (client_id, secret) != (self.client_id, self.client_secret):
            description = "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: 00000000-0000"
            return (
                401,
                {},
                {"error": "invalid_client", "error_description": description, "error_codes": [7000215]},
            )
        token = f"eyJ0eXAiOiJKV1Qi.fake-access-token-{next(self._ids)}"
        self.tokens_issued.append(token)
        return (
            200,
            {},
            {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token},
        )

    def _start_refresh(self, body: Any, query: dict, headers: dict, group: str, dataset: str) -> tuple:
        if not isinstance(body, dict) or not body:
            return 400, {}, _api_error("InvalidRequest", "a request body is required")
        if self.unavailable_refreshes > 0:
            self.unavailable_refreshes -= 1
            return 503, {}, _api_error("ServiceUnavailable", "injected: the service did nothing")
        number = next(self._ids)
        request_id = f"87f31ef7-0000-4000-9b0b-{number:012d}"
        self._refreshes.insert(0, {"requestId": request_id, "id": number, "polls": 0, "start": self.now})
        location = f"{self.url}/v1.0/myorg/groups/{group}/datasets/{dataset}/refreshes/{request_id}"
        reply = {"RequestId": request_id} if self.id_header == "RequestId" else {"Location": location}
        return 202, reply, None

    def _details(
        self, body: Any, query: dict, headers: dict, group: str, dataset: str, request_id: str
    ) -> tuple:
        refresh = next((r for r in self._refreshes if r["requestId"] == request_id), None)
        if refresh is None or not self.enhanced:
            return 404, {}, _api_error("ItemNotFound", f"refresh {request_id} has no execution details")
        status, start, end = self._advance(refresh)
        detail = {
            "startTime": start,
            "type": "Full",
            "commitMode": "Transactional",
            "status": status,
            "extendedStatus": "InProgress" if status == "Unknown" else status,
            "currentRefreshType": "Full",
            "numberOfAttempts": 1,
        }
        if end:
            detail["endTime"] = end
        if status == "Failed":
            detail["messages"] = [{"code": self.error_code, "message": self.error_message, "type": "Error"}]
        return (202 if status == "Unknown" else 200), {}, detail

    def _history(self, body: Any, query: dict, headers: dict, group: str, dataset: str) -> tuple:
        entries = [self._history_entry(r) for r in self._refreshes] + list(self.history)
        top = int(query.get("$top", ["60"])[0])
        return 200, {}, {"value": entries[:top]}

    def _history_entry(self, refresh: dict) -> dict:
        status, start, end = self._advance(refresh)
        entry = {
            "requestId": refresh["requestId"],
            "id": refresh["id"],
            "refreshType": "ViaApi",
            "startTime": start,
            "status": status,
        }
        if end:
            entry["endTime"] = end
        if status == "Failed":
            entry["serviceExceptionJson"] = json.dumps(
                {"errorCode": self.error_code, "errorDescription": self.error_message}
            )
        return entry

    def _advance(self, refresh: dict) -> tuple[str, str, str | None]:
        """Count a status read; returns (status, startTime, endTime or None)."""
        refresh["polls"] += 1
        start = refresh["start"]
        if refresh["polls"] <= self.running_polls:
            return "Unknown", _iso(start), None
        return self.outcome, _iso(start), _iso(start + timedelta(minutes=1))


def history_entry(start: datetime, status: str = "Completed", refresh_type: str = "Scheduled") -> dict:
    """A Refresh History entry for `FakePowerBi.history`."""
    return {
        "requestId": f"old-{start:%H%M%S}",
        "id": 1,
        "refreshType": refresh_type,
        "startTime": _iso(start),
        "endTime": _iso(start + timedelta(minutes=5)),
        "status": status,
    }


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it (P-256: fast)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CAF test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        _builder(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name, key.public_key(), now
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


def serve(fake: FakePowerBi, tls: TlsFiles) -> LoopbackServer:
    """Start `fake` over HTTPS on a free loopback port (sets `fake.url`); `shutdown()` it after."""
    server, fake.url = serve_loopback(fake.handle, name="fake-powerbi", tls=(tls.cert, tls.key),
                                      content_type="application/json; charset=utf-8")
    return server


def _decode(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}
    return json.loads(raw)


def _client_credentials(form: dict, authorization: str) -> tuple[str | None, str | None]:
    """client_secret_basic (what MSAL sends) or client_secret_post."""
    if authorization.startswith("Basic "):
        client_id, _, secret = base64.b64decode(authorization[6:]).decode().partition(":")
        return unquote_plus(client_id), unquote_plus(secret)
    return form.get("client_id"), form.get("client_secret")


def _api_error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: Any, now: datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
