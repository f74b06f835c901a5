"""Two tenants with static tokens, helpers to seed rows as the system role and to upload through the API."""

from __future__ import annotations

import hashlib
import urllib.parse
from typing import Any

import pytest

TOKENS = {"token-a": "tenant_a", "token-b": "tenant_b", "token-default": "default"}


@pytest.fixture
def settings(settings):
    from config.settings import AuthSettings

    return settings.model_copy(update={"auth": AuthSettings(mode="static", static_tokens=TOKENS,
                                                            signing_key="test-signing-key-0123456789")})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def declare(name: str, data: bytes, content_type: str = "text/csv", algo: str = "sha256") -> dict[str, Any]:
    digest = hashlib.new(algo, data).hexdigest()
    return {"name": name, "checksum": f"{algo}:{digest}", "size": len(data), "content_type": content_type}


def upload(client, answer: dict[str, Any], name: str, data: bytes, content_type: str | None = None):
    """PUT `data` to the signed URL the job answer gave for `name` (through the operator app)."""
    [spec] = [u for u in answer["uploads"] if u["name"] == name]
    url = urllib.parse.urlsplit(spec["url"])
    headers = {"Content-Type": content_type or spec["headers"]["Content-Type"]}
    return client.put(f"{url.path}?{url.query}", data=data, headers=headers)


@pytest.fixture
def client(deps):
    from tests.conftest import make_client

    return make_client("operator", "http")


@pytest.fixture
def entities(deps):
    """Staging entities of tenant_a: customers (NDJSON), orders and events (CSV)."""
    from database.jobs import sync_staging_entity
    from database.session import unit_of_work

    with unit_of_work(deps.sessions) as session:
        sync_staging_entity(session=session, tenant_id="tenant_a", name="customers", source_glob="crm/customers/*",
                            format="ndjson", column_map={"customer_id": "id"}, required=["id"])
        sync_staging_entity(session=session, tenant_id="tenant_a", name="orders", source_glob="sales/orders/*",
                            format="csv", column_map={"Order ID": "order_id"}, required=["order_id"])
        sync_staging_entity(session=session, tenant_id="tenant_a", name="events", source_glob="web/*.tsv",
                            format="csv", options={"delimiter": "\t"})
        sync_staging_entity(session=session, tenant_id="tenant_b", name="orders", source_glob="sales/orders/*",
                            format="csv")
