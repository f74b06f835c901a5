"""Upload jobs at their edges: declared size enforced, one successful PUT per local URL, object names
checked by raw `/` segments and UTF-8 bytes, tenant ids matched whole, GCS URLs bound to a size range."""

from __future__ import annotations

import urllib.parse

import pytest
from sqlalchemy import func, select

from database.job_models import Job
from database.session import unit_of_work
from tests.tenancy.conftest import bearer, declare, upload

DATA = b"Order ID,amount,note\n1,10.5,first\n"


def open_job(client, name: str = "sales/orders/a.csv", data: bytes = DATA, token: str = "token-a"):
    return client.post("/jobs", json={"files": [declare(name, data)]}, headers=bearer(token))


def put_raw(client, answer: dict, data: bytes, **headers: str):
    url = urllib.parse.urlsplit(answer["uploads"][0]["url"])
    return client.put(f"{url.path}?{url.query}", data=data, headers={"Content-Type": "text/csv", **headers})


def stored(deps, answer: dict) -> bytes | None:
    bucket, name = answer["files"][0]["storage_path"].split("/", 1)
    path = deps.storage.local_path(bucket, name)
    return path.read_bytes() if path.exists() else None


@pytest.fixture
def server(deps):
    """`caf serve`'s WSGI app on a real loopback socket (uploads arrive chunked or with any length)."""
    import threading

    from werkzeug.serving import make_server

    from cli.serve import build_app

    srv = make_server("127.0.0.1", 0, build_app(), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def raw_put(port: int, answer: dict, body_chunks, *, length: int | None = None) -> int:
    """PUT over a real socket: chunked when `length` is None, else with that Content-Length."""
    import http.client

    url = urllib.parse.urlsplit(answer["uploads"][0]["url"])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("PUT", f"{url.path}?{url.query}")
    conn.putheader("Content-Type", "text/csv")
    conn.putheader(*(("Transfer-Encoding", "chunked") if length is None else ("Content-Length", str(length))))
    conn.endheaders()
    try:
        for chunk in body_chunks:
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if length is None else chunk)
        if length is None:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the body ended
    status = conn.getresponse().status
    conn.close()
    return status


def test_upload_larger_than_declared_is_413_and_stores_nothing(deps, client, server) -> None:
    answer = open_job(client).get_json()
    too_big = put_raw(client, answer, DATA + b"2,1,x\n")
    assert too_big.status_code == 413 and "declared" in too_big.get_json()["error"]
    assert stored(deps, answer) is None
    one_more = put_raw(client, answer, DATA + b"!")  # exactly declared size + 1
    assert one_more.status_code == 413 and stored(deps, answer) is None
    # chunked, no length announced, 64 MiB on the way: reading stops after the declared size + 1
    assert raw_put(server, answer, [DATA] + [b"x" * 65536] * 1024) == 413
    assert stored(deps, answer) is None
    # announced larger than declared: refused before the body is read
    assert raw_put(server, answer, [DATA], length=10 << 30) == 413
    # a refused PUT does not use the URL up
    assert raw_put(server, answer, [DATA[:10], DATA[10:]]) == 200 and stored(deps, answer) == DATA


def test_an_upload_url_accepts_one_successful_put(deps, client) -> None:
    answer = open_job(client).get_json()
    assert upload(client, answer, "sales/orders/a.csv", DATA).status_code == 200
    again = upload(client, answer, "sales/orders/a.csv", DATA.replace(b"first", b"forgd"))
    assert again.status_code == 409 and "already used" in again.get_json()["error"]
    assert stored(deps, answer) == DATA
    # declaring the same files again while the job is open gives fresh URLs that work once
    fresh = open_job(client).get_json()
    assert fresh["job_id"] == answer["job_id"] and fresh["uploads"][0]["url"] != answer["uploads"][0]["url"]
    assert upload(client, fresh, "sales/orders/a.csv", DATA).status_code == 200
    assert upload(client, fresh, "sales/orders/a.csv", DATA).status_code == 409


@pytest.mark.parametrize("name", [".", "./a.csv", "a/./b.csv", "..", "a/../b.csv", "a/..", "a//b.csv", "/a.csv",
                                  "a/", "a/.", "_artifacts/x.csv", "a\x00b.csv", "a\nb.csv", "a\x7fb.csv",
                                  "\ud800.csv", "€" * 301 + ".csv", "a/" + "b" * 899])
def test_object_names_are_checked_by_raw_segments_and_utf8_bytes(deps, client, name: str) -> None:
    response = client.post("/jobs", json={"files": [{"name": name, "checksum": "sha256:" + "0" * 64, "size": 1,
                                                     "content_type": "text/csv"}]}, headers=bearer("token-a"))
    assert response.status_code == 400, (name, response.get_json())
    with unit_of_work(deps.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_longest_names_by_bytes_are_accepted_and_fit_gcs(deps, client) -> None:
    for name in ("é" * 449 + "x", "a/" + "b" * 898, "d.e/.hidden/..x/a..b"):
        response = client.post("/jobs", json={"files": [declare(name, DATA)]}, headers=bearer("token-a"))
        assert response.status_code == 201, (name, response.get_json())
        path = response.get_json()["files"][0]["storage_path"].split("/", 1)[1]  # without the bucket
        assert len(path.encode()) <= 1024  # the GCS limit, with the longest tenant id too


def test_tenant_ids_are_matched_whole(deps, client, settings) -> None:
    from app.deps import Deps, set_deps
    from config.settings import AuthSettings
    from database.tenancy import tenant_session, validate_tenant
    from values.identifiers import InvalidTenant

    for bad in ("acme\n", "tenant_a\n", "a" * 64, "Acme", "1acme", "", "acme-x"):
        with pytest.raises(InvalidTenant):
            validate_tenant(bad)
        with pytest.raises(InvalidTenant), tenant_session(deps.sessions, bad):
            pass
    auth = AuthSettings(mode="static", static_tokens={"token-nl": "tenant_a\n"}, signing_key="k" * 32)
    own = Deps(deps.settings.model_copy(update={"auth": auth}), clock=deps.clock, engine=deps.engine,
               sessions=deps.sessions, publisher=deps.publisher)
    previous = set_deps(own)
    try:
        response = open_job(client, token="token-nl")
        assert response.status_code >= 400 and "invalid tenant" in response.get_json()["error"]
    finally:
        set_deps(previous)
    with unit_of_work(deps.sessions) as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_gcs_upload_urls_sign_the_declared_size_range(deps) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client
    from google.oauth2 import service_account

    from adapters.storage.signing import GcsSigner
    from tests.tenancy.test_signing import verify_v4

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    credentials = service_account.Credentials.from_service_account_info({
        "type": "service_account", "project_id": "p", "private_key_id": "k1", "private_key": pem,
        "client_email": "signer@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"})
    signer = GcsSigner(Client(project="p", credentials=AnonymousCredentials()), credentials=credentials)
    url = signer.sign_put(bucket="caf-uploads", name="tenant_a/j/a.csv", content_type="text/csv", ttl_seconds=900,
                          max_bytes=len(DATA))
    fields = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert fields["X-Goog-SignedHeaders"] == "content-type;host;x-goog-content-length-range"
    extra = {"x-goog-content-length-range": f"0,{len(DATA)}"}
    assert signer.upload_headers(content_type="text/csv", max_bytes=len(DATA)) == {"Content-Type": "text/csv", **extra}
    verify_v4(url, key.public_key(), content_type="text/csv", extra_headers=extra)
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):  # a client cannot widen the range
        verify_v4(url, key.public_key(), content_type="text/csv",
                  extra_headers={"x-goog-content-length-range": f"0,{10 * len(DATA)}"})
