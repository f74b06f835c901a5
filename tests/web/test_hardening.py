"""Operator page hardening: where the login sends you back to, and downloads named in any script."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.handlers.ingest_support import ORDERS, ORDERS_CSV
from tests.web.conftest import AUTH, TOKEN

OFF_SITE = ["/\t/evil.example/phish", "/\n/evil.example/phish", "/\r\n/evil.example", "//evil.example/x",
            "/\\evil.example", "/\\\\evil.example", "https://evil.example/", "http:/evil.example",
            "/ /evil.example", "/\x00/evil.example", "/\x7f/evil.example", "javascript:alert(1)", "evil.example",
            " //evil.example", "/%09/evil.example", "/files\n", "/files\x0b"]


@pytest.mark.parametrize("target", OFF_SITE)
def test_login_never_redirects_off_site_or_fails_on_control_characters(operator, target: str) -> None:
    response = operator.post("/login", data={"token": TOKEN, "next": target})
    assert response.status_code == 303
    location = response.headers["Location"]
    parts = urllib.parse.urlsplit(location.replace("\\", "/"))
    assert not parts.scheme and not parts.netloc and location.startswith("/") and not location.startswith("//")
    assert all(32 < ord(c) < 127 for c in location)
    # the sign-in form carries the same safe value back
    form = operator.get(f"/login?next={urllib.parse.quote(target, safe='')}")
    assert form.status_code == 200


def test_login_with_the_reported_query_string_stays_on_site(operator) -> None:
    form = operator.get("/login?next=/%09/evil.example/phish")
    assert form.status_code == 200 and "evil.example" not in form.get_data(as_text=True)
    response = operator.post("/login", data={"token": TOKEN, "next": "/\t/evil.example/phish"})
    assert response.headers["Location"] == "/"
    assert operator.get("/login?next=/files%0a").status_code == 200  # a newline was a 500


@pytest.mark.parametrize("target", ["/files", "/files?status=ERROR&table=sales.orders", "/batches/12",
                                    "/tables/sales.orders", "/files/%2F"])
def test_login_keeps_local_targets(operator, target: str) -> None:
    response = operator.post("/login", data={"token": TOKEN, "next": target})
    assert response.headers["Location"] == target


def test_quarantine_download_of_a_non_latin1_name_uses_rfc6266_filename_star(operator, ingest) -> None:
    ingest.register(ORDERS)
    name = "sales/orders/zakázka-č.1_東京\"x.csv"
    loaded = ingest.load(name, ORDERS_CSV + "x,1,2026-11-03,bad\n")
    assert loaded.status == "SUCCESS" and loaded.quarantine_uri
    response = operator.get(f"/files/{loaded.id}/quarantine", headers=AUTH)
    assert response.status_code == 200 and '"row": 6' in response.get_data(as_text=True)
    disposition = response.headers["Content-Disposition"]
    disposition.encode("latin-1")  # a header value must be Latin-1 (it crashed with a 500)
    assert disposition.startswith('inline; filename="') and "filename*=UTF-8''" in disposition
    star = disposition.split("filename*=UTF-8''", 1)[1]
    assert urllib.parse.unquote(star) == f"zakázka-č.1_東京\"x.csv.{loaded.generation}.rejected.ndjson"
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert all(32 <= ord(c) < 127 and c not in '"\\' for c in fallback)
