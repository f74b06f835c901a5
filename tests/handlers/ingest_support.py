"""Helpers for ingestion tests: register tables, put objects, deliver real finalize CloudEvents."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from sqlalchemy import select

from adapters.storage.base import ObjectInfo
from cli.local_delivery import storage_event_data
from database.models import File
from database.registry import sync_definition
from database.session import unit_of_work
from tests.conftest import make_client
from values.definitions import parse_definition
from values.messages import STORAGE_FINALIZED

BUCKET = "landing"


@dataclass
class Ingest:
    deps: Any
    tmp: Path

    def __post_init__(self) -> None:
        self.client = make_client("handle_raw_file")

    # -- registry ------------------------------------------------------------------------------
    def register(self, yaml_text: str, name: str = "table.yaml", *, per_tenant_datasets: bool | None = None) -> None:
        path = self.tmp / "defs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(yaml_text))
        per_tenant = self.deps.settings.jobs.per_tenant_datasets if per_tenant_datasets is None else per_tenant_datasets
        with unit_of_work(self.deps.sessions) as session:
            sync_definition(session=session, definition=parse_definition(path), path=path,
                            per_tenant_datasets=per_tenant)

    # -- objects and events ---------------------------------------------------------------------
    def put(self, name: str, data: bytes | str, bucket: str = BUCKET) -> ObjectInfo:
        raw = data.encode() if isinstance(data, str) else data
        return self.deps.storage.put_bytes(bucket, name, raw)

    def deliver(self, info: ObjectInfo, *, event_id: str = "evt-1") -> int:
        event = CloudEvent({"type": STORAGE_FINALIZED, "id": event_id,
                            "source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}"},
                           storage_event_data(info))
        headers, body = to_binary(event)
        return self.client.post("/", headers=headers, data=body).status_code

    def load(self, name: str, data: bytes | str) -> File:
        info = self.put(name, data)
        assert self.deliver(info) == 200
        return self.file(info)

    # -- inspection ---------------------------------------------------------------------------
    def file(self, info: ObjectInfo) -> File:
        with self.deps.sessions() as session:
            return session.scalars(select(File).where(File.bucket == info.bucket, File.name == info.name,
                                                      File.generation == info.generation)).one()

    def rows(self, table: str, columns: str = "*", order: str = "1") -> list[tuple]:
        return self.deps.warehouse.query(f"SELECT {columns} FROM {table} ORDER BY {order}").rows

    def count(self, table: str) -> int:
        dataset, name = table.split(".")
        if self.deps.warehouse.table_columns(dataset, name) is None:
            return 0
        return self.deps.warehouse.count_rows(dataset, name)

    def exists(self, name: str, bucket: str = BUCKET) -> bool:
        path = self.deps.storage.local_path(bucket, name)
        return path is not None and path.exists()

    def quarantine(self, info: ObjectInfo) -> list[dict[str, Any]]:
        name = f"quarantine/{info.name}.{info.generation}.rejected.ndjson"
        with self.deps.storage.open_read(info.bucket, name) as fh:
            return [json.loads(line) for line in fh.read().decode().splitlines() if line]


ORDERS = """\
    dataset: sales
    table: orders
    source: "sales/orders/*.csv"
    format: csv
    schema:
      - {name: order_id, type: INT64, mode: REQUIRED}
      - {name: amount, type: NUMERIC}
      - {name: order_date, type: DATE}
      - {name: note, type: STRING}
    columns: {"Order ID": order_id}
    keys: [order_id]
    write_mode: append
    max_bad_records: 2
"""

ORDERS_CSV = (
    'Order ID,amount,order_date,note\n'
    '1,10.50,2026-11-01,plain\n'
    '2,3.00,2026-11-01,"comma, inside"\n'
    '3,7.25,2026-11-02,"say ""hi"""\n'
    '4,1.00,2026-11-02,"line one\r\nline two"\n'
    '5,,2026-11-03,""\n'
)
