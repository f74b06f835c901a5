"""The headless sign-in documented in docs/getting-started.md, done with plain HTTP as curl would."""

from __future__ import annotations

import http.cookiejar
import threading
import urllib.error
import urllib.parse
import urllib.request

from tests.handlers.ingest_support import ORDERS
from tests.web.conftest import TOKEN


def test_documented_headless_calls_work_over_http(deps, ingest) -> None:
    from werkzeug.serving import make_server

    from cli.serve import build_app

    ingest.register(ORDERS)
    failed = ingest.load("sales/orders/bad.csv", "Order ID,amount\n1,2\n")
    assert failed.status == "ERROR"
    server = make_server("127.0.0.1", 0, build_app(), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # curl -H "Authorization: Bearer $TOKEN" '.../files?status=ERROR'
        with urllib.request.urlopen(urllib.request.Request(f"{base}/files?status=ERROR", headers=bearer)) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        # without a token the page asks for sign-in instead
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/batches", headers={"Accept": "text/html"}))
            signed_out = 200
        except urllib.error.HTTPError as exc:
            signed_out = exc.code
        assert signed_out in (302, 303, 401)

        # curl -c caf.cookies -d token=$TOKEN .../login ; curl -b caf.cookies .../batches
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(f"{base}/login", data=urllib.parse.urlencode({"token": TOKEN}).encode()) as r:
            assert r.status == 200  # redirected to the overview, signed in
        assert len(jar) == 1  # the sign-in cookie
        with opener.open(f"{base}/batches") as r:
            assert r.status == 200 and "Batches" in r.read().decode()
        # curl -H "Authorization: Bearer $TOKEN" -d confirm=yes .../files/ID/retry  (no CSRF with the header)
        retry = urllib.request.Request(f"{base}/files/{failed.id}/retry", data=b"confirm=yes", headers=bearer)
        with urllib.request.urlopen(retry) as r:
            assert r.status == 200
        from sqlalchemy import func, select

        from database.models import File

        with deps.sessions() as session:  # the retry ingested the object again as a new version
            assert session.scalar(select(func.count()).select_from(File).where(File.name == failed.name)) == 2
    finally:
        server.shutdown()
