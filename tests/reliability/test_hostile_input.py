"""Hostile input: whatever arrives, CAF answers 2xx with a recorded outcome or 5xx only when retrying helps.

Property-based (hypothesis) on the envelope decoders and the readers, then through the full
handler: random CSV dialects with random unicode headers and values must round-trip exactly or
end in a recorded ERROR; never a crash. Then the named attacks: hostile object names, SQL in
table definitions and in file headers, a 10 MB event, broken Pub/Sub messages, a gzip bomb.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import itertools
import json
import logging
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.conftest import make_client
from tests.handlers.ingest_support import BUCKET, Ingest
from tests.reliability.conftest import http_post, items_csv
from values.messages import MalformedEvent, ObjectRef, PubSubMessage

FAST = settings(max_examples=150, deadline=None, database=None)
THROUGH_HANDLER = settings(max_examples=20, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------------

any_char = st.characters(blacklist_categories=())  # includes lone surrogates, NUL, controls
scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False) | st.text(any_char, max_size=30))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
numberish = st.sampled_from(["1", " 42 ", "²", "١٢", "-1", "9" * 19, "9" * 25, "", "1e3", "0x10", "1.0", "+7",
                             "\u00a012", "18446744073709551616"])
field_values = scalars | numberish | st.from_regex(r"\A[0-9]{1,22}\Z") | st.lists(scalars, max_size=2)
names = st.text(any_char, min_size=1, max_size=40) | st.sampled_from(
    ["..", ".", "a/../b.csv", "a%2F..%2Fb.csv", "x\x00y", "a\nb", "\ud800", "a" * 1025, "é" * 513, "/", "a//b"])

storage_data = st.fixed_dictionaries({}, optional={
    "bucket": field_values | st.sampled_from(["landing", "a" * 223, "b\x00", "ok-bucket"]),
    "name": field_values | names, "generation": field_values, "size": field_values, "md5Hash": field_values,
    "crc32c": field_values, "contentType": field_values, "contentEncoding": field_values,
})


def assert_clean_ref(ref: ObjectRef) -> None:
    """What every accepted envelope guarantees to the code below it (files columns, paths, logs)."""
    for text, limit in ((ref.bucket, 222), (ref.name, 1024)):
        assert isinstance(text, str) and 0 < len(text.encode("utf-8")) <= limit
        assert not {"\x00", "\r", "\n"} & set(text)
    assert ref.name not in (".", "..")
    assert isinstance(ref.generation, int) and 0 <= ref.generation < 2**63
    assert ref.size is None or (isinstance(ref.size, int) and 0 <= ref.size < 2**63)
    for value, limit in ((ref.md5, 64), (ref.crc32c, 16), (ref.content_type, 255), (ref.content_encoding, 64),
                         (ref.event_id, 255)):
        assert value is None or (isinstance(value, str) and len(value.encode("utf-8")) <= limit
                                 and "\x00" not in value)


# -- decoders -----------------------------------------------------------------------------------------

@FAST
@given(data=storage_data | json_values)
def test_storage_event_decoder_accepts_clean_envelopes_or_raises_malformed(data: Any) -> None:
    for shape in (data, json.dumps(data), json.dumps(data).encode()):  # object, str and bytes payloads
        try:
            ref = ObjectRef.from_storage_data(shape, event_id="e-1")
        except MalformedEvent:
            continue
        assert_clean_ref(ref)


@FAST
@given(raw=st.binary(max_size=200) | st.text(any_char, max_size=200))
def test_storage_event_decoder_on_random_bytes(raw: bytes | str) -> None:
    try:
        assert_clean_ref(ObjectRef.from_storage_data(raw))
    except MalformedEvent:
        pass


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(MalformedEvent, match="nested too deeply"):
        ObjectRef.from_storage_data("[" * 200_000)
    message = PubSubMessage(data=b"[" * 200_000, attributes={"event_type": "task"})
    with pytest.raises(MalformedEvent, match="nested too deeply"):
        message.json()


b64 = st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode())
push_bodies = st.fixed_dictionaries({"message": st.fixed_dictionaries({}, optional={
    "data": b64 | st.text(any_char, max_size=40) | scalars,
    "attributes": st.dictionaries(st.text(any_char, max_size=12), field_values | names, max_size=4) | json_values,
    "messageId": field_values, "publishTime": field_values,
})}) | json_values


@FAST
@given(body=push_bodies)
def test_pubsub_decoder_accepts_clean_messages_or_raises_malformed(body: Any) -> None:
    for shape in (body, json.dumps(body)):
        try:
            message = PubSubMessage.from_push_body(shape)
        except MalformedEvent:
            continue
        assert isinstance(message.data, bytes)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in message.attributes.items())
        assert message.message_id is None or isinstance(message.message_id, str)
        assert message.publish_time is None or (isinstance(message.publish_time, datetime)
                                                and message.publish_time.tzinfo is not None)
        try:
            assert isinstance(message.json(), dict)
        except MalformedEvent:
            pass
        try:
            assert_clean_ref(message.object_ref())
        except MalformedEvent:
            pass


# -- readers ------------------------------------------------------------------------------------------

MAGIC = {"csv": b"", "tsv": b"", "ndjson": b"{", "json": b"[", "parquet": b"PAR1", "xlsx": b"PK\x03\x04"}


# Lines mixing good rows with ragged ones, non-objects and broken JSON: the row numbering cases.
LINES = ["a,b", "1,2", "1", "1,2,3", "", '{"a": 1}', '{"a": 1, "b": [2]}', "{", "[1]", "7"]


@settings(max_examples=120, deadline=None, database=None)
@given(fmt=st.sampled_from(sorted(MAGIC)), gz=st.booleans(), magic=st.booleans(),
       body=st.binary(max_size=600) | st.text(max_size=300).map(str.encode)
       | st.lists(st.sampled_from(LINES), max_size=8).map(lambda lines: "\n".join(lines).encode()))
def test_readers_turn_any_bytes_into_batches_or_a_source_error(fmt: str, gz: bool, magic: bool, body: bytes) -> None:
    from errors import PermanentError
    from pipeline.read import read_batches
    from pipeline.source import SourceBatch, SourceOptions

    raw = (MAGIC[fmt] if magic else b"") + body
    if gz:
        raw = gzip.compress(raw)[: max(10, len(raw) // (2 if magic else 1))]  # sometimes truncated, too
    options = SourceOptions(format=fmt, gzip=gz, block_size=1 << 16, max_decompressed_bytes=1 << 20)
    numbers: list[int] = []
    try:
        for batch in read_batches(io.BytesIO(raw), options, name="hostile"):
            assert isinstance(batch, SourceBatch)
            assert batch.columns == batch.data.schema.names
            numbers += batch.row_numbers().tolist() + [b.row for b in batch.bad_rows]
    except PermanentError:
        pass
    # Whatever was read before any error: every row, good or bad, has its own 1-based number.
    assert all(n >= 1 for n in numbers)
    assert len(numbers) == len(set(numbers)), sorted(numbers)


# -- random dialects and unicode through the full handler ----------------------------------------------

text_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
header_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       min_size=1, max_size=10)
_counter = itertools.count(1)


@st.composite
def csv_files(draw: Any) -> dict[str, Any]:
    delimiter = draw(st.sampled_from([",", ";", "|", "\t", ":", "^"]))
    quote = draw(st.sampled_from([q for q in ['"', "'", "~"] if q != delimiter]))
    header = draw(st.booleans())
    headers = draw(st.lists(header_names, min_size=3, max_size=3, unique_by=lambda h: h.strip().lower()))
    assume(not {h.strip().lower() for h in headers} & {"id", "a", "b"})
    rows = draw(st.lists(st.tuples(st.integers(min_value=-(2**63), max_value=2**63 - 1), text_values, text_values),
                         max_size=6))
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quotechar=quote, quoting=csv.QUOTE_ALL, lineterminator=terminator)
    if header:
        writer.writerow(headers)
    writer.writerows(rows)
    return {"delimiter": delimiter, "quote": quote, "header": header, "headers": headers, "rows": rows,
            "text": out.getvalue()}


def register_dialect(ing: Ingest, sample: dict[str, Any]) -> str:
    from database.registry import sync_definition
    from database.session import unit_of_work
    from values.definitions import TableDefinition

    n = next(_counter)
    definition = TableDefinition.model_validate({
        "dataset": "hyp", "table": f"t{n}", "source": f"hyp/t{n}/*.csv", "format": "csv",
        "csv": {"delimiter": sample["delimiter"], "quote": sample["quote"], "header": sample["header"]},
        "schema": [{"name": "id", "type": "INT64", "mode": "REQUIRED"}, {"name": "a", "type": "STRING"},
                   {"name": "b", "type": "STRING"}],
        "columns": dict(zip(sample["headers"], ["id", "a", "b"], strict=True)) if sample["header"] else {},
    })
    with unit_of_work(ing.deps.sessions) as session:
        sync_definition(session=session, definition=definition)
    return f"t{n}"


@pytest.fixture
def plain(deps, tmp_path) -> Ingest:
    return Ingest(deps, tmp_path)


@THROUGH_HANDLER
@given(sample=csv_files())
def test_random_csv_dialects_and_unicode_round_trip_exactly(plain: Ingest, sample: dict[str, Any]) -> None:
    table = register_dialect(plain, sample)
    info = plain.put(f"hyp/{table}/f.csv", sample["text"])
    assert plain.deliver(info) == 200
    row = plain.file(info)
    if not sample["text"]:  # no header and no rows: a 0-byte file
        assert row.status == "ERROR" and "empty" in row.error_message
        return
    assert row.status == "SUCCESS", (row.error_message, sample)
    assert row.rows_loaded == len(sample["rows"])
    if sample["rows"]:
        loaded = plain.rows(f"hyp.{table}", "id, a, b", order="_source_row")
        assert loaded == [tuple(r) for r in sample["rows"]], sample


@pytest.fixture
def raw_table(plain: Ingest) -> Ingest:
    plain.register("""\
        dataset: hyp
        table: raw
        source: "hyp/raw/*.csv"
        format: csv
        schema:
          - {name: x, type: STRING}
          - {name: y, type: INT64}
        max_bad_records: 2
    """, "raw.yaml")
    return plain


@THROUGH_HANDLER
@given(raw=st.binary(max_size=400) | st.text(max_size=200).map(str.encode)
       | st.lists(st.text(st.sampled_from('ab,"\r\n\t;é\x00\\'), max_size=12), max_size=6).map(
           lambda lines: ("x,y\n" + "\n".join(lines)).encode()),
       gz=st.booleans())
def test_random_bytes_through_the_handler_end_in_a_recorded_outcome(raw_table: Ingest, raw: bytes, gz: bool) -> None:
    plain = raw_table
    name = f"hyp/raw/f{next(_counter)}.csv" + (".gz" if gz else "")
    info = plain.put(name, gzip.compress(raw) if gz else raw)
    assert plain.deliver(info) == 200
    row = plain.file(info)
    assert row.status in ("SUCCESS", "ERROR")
    mine = 0
    if plain.deps.warehouse.table_columns("hyp", "raw"):
        mine = plain.deps.warehouse.query(f"SELECT count(*) FROM hyp.raw WHERE _file_id = {row.id}").rows[0][0]
    if row.status == "ERROR":
        assert row.error_message and mine == 0  # nothing partial
    else:
        assert mine == row.rows_loaded and row.rows_loaded + (row.rows_rejected or 0) == row.rows_read


# -- hostile object names -----------------------------------------------------------------------------

def storage_event(ing: Ingest, name: str, generation: str = "1700000000000001", **extra: Any) -> int:
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    from values.messages import STORAGE_FINALIZED

    data = {"bucket": BUCKET, "name": name, "generation": generation, "size": "10", **extra}
    event = CloudEvent({"type": STORAGE_FINALIZED, "source": "//storage.googleapis.com/x", "id": "e-1"}, data)
    headers, body = to_binary(event)
    return ing.client.post("/", headers=headers, data=body).status_code


def files(ing: Ingest) -> list[Any]:
    from sqlalchemy import select

    from database.models import File

    with ing.deps.sessions() as session:
        return list(session.scalars(select(File)))


@pytest.mark.parametrize("name", [
    "rel/items/a\x00.csv", "rel/items/a\r\nFAKE LOG LINE.csv", "rel/items/" + "a" * 1020 + ".csv",
    "rel/items/" + "é" * 510 + ".csv", "..", "rel/items/\ud800.csv",
], ids=["nul", "crlf", "over_1024_bytes", "over_1024_utf8_bytes", "dotdot_alone", "lone_surrogate"])
def test_invalid_object_names_are_acknowledged_without_a_trace(ing: Ingest, name: str) -> None:
    assert storage_event(ing, name) == 200
    assert files(ing) == []


def test_percent_encoded_slashes_are_literal_characters_inside_the_bucket(ing: Ingest, tmp_path) -> None:
    name = "rel/items/..%2F..%2F..%2Fetc%2Fpasswd.csv"
    row = ing.load(name, items_csv(1, 2))
    assert row.status == "SUCCESS", row.error_message
    assert ing.exists(f"archive/{name}")
    root = ing.deps.settings.storage_root
    outside = [p for p in tmp_path.rglob("*passwd*") if root not in p.parents]
    assert outside == []


@pytest.mark.parametrize(("name", "hint"), [
    ("rel/items//double-slash.csv", "cannot be stored"),
    ("rel/items/./dot.csv", "cannot be stored"),
    ("rel/items/" + "x" * 300 + ".csv", "cannot be stored"),  # a GCS-valid segment longer than a file name
])
def test_names_the_local_folder_cannot_hold_are_recorded_errors(ing: Ingest, name: str, hint: str) -> None:
    assert storage_event(ing, name) == 200
    [row] = files(ing)
    assert row.status == "ERROR" and hint in row.error_message
    assert storage_event(ing, name) == 200  # and a redelivery stays a no-op
    assert files(ing)[0].attempts == 1


def test_longest_valid_name_loads(ing: Ingest) -> None:
    segment = "s" * 200
    name = "rel/items/" + "/".join([segment] * 4) + "/" + "n" * (1024 - 10 - 4 * 201 - 4) + ".csv"
    assert len(name.encode()) == 1024
    row = ing.load(name, items_csv(1, 3))
    assert row.status == "SUCCESS", row.error_message


# -- SQL injection in definitions and in file headers --------------------------------------------------

INJECTIONS = ['x"; DROP TABLE rel.items; --', "x'); DELETE FROM files; --", "a b", "x\n", "ид", "1abc",
              "x`y", "_file_id"]
# The part of each hostile name that must never appear in an SQL text.
MARKERS = {'x"; DROP TABLE rel.items; --': "DROP TABLE", "x'); DELETE FROM files; --": "DELETE FROM files",
           "a b": "a b", "x\n": 'x\n"', "ид": "ид", "1abc": "1abc", "x`y": "x`y", "_file_id": '"_file_id" VARCHAR'}
FIELD_IN_MESSAGE = {"dataset": "dataset", "table": "table", "column": "schema.1.name", "key": "keys",
                    "partition_field": "partition_field"}


def definition_cases() -> list[Any]:
    cases = []
    for field in FIELD_IN_MESSAGE:
        for evil in INJECTIONS[:4]:
            cases.append(pytest.param(field, evil, id=f"{field}-{evil!r}"))
    return cases


@pytest.mark.parametrize(("field", "evil"), definition_cases())
def test_sql_in_table_definitions_is_rejected_at_sync(deps, tmp_path, field: str, evil: str) -> None:
    from typer.testing import CliRunner

    from cli.app import _register, app
    from database.models import Table

    definition: dict[str, Any] = {"dataset": "rel", "table": "evil", "format": "csv",
                                  "schema": [{"name": "id", "type": "INT64"}, {"name": "d", "type": "DATE"}]}
    if field in ("dataset", "table"):
        definition[field] = evil
    elif field == "column":
        definition["schema"][1]["name"] = evil
    elif field == "key":
        definition["keys"] = [evil]
    else:
        definition["partition_field"] = evil
    folder = tmp_path / "defs"
    folder.mkdir()
    (folder / "evil.json").write_text(json.dumps(definition))
    _register()
    result = CliRunner().invoke(app, ["registry", "sync", str(folder)])
    assert result.exit_code == 2, result.output
    assert "evil.json" in result.output and FIELD_IN_MESSAGE[field] in result.output
    with deps.sessions() as session:
        assert session.query(Table).count() == 0


@pytest.fixture
def sql_log(ing: Ingest, duckdb_sql: list[str]) -> list[str]:
    """Every SQL text sent to DuckDB (the `duckdb_sql` recorder) and to Postgres during the test."""
    from sqlalchemy import event

    def on_pg(conn, cursor, statement, parameters, context, executemany):
        duckdb_sql.append(statement)

    event.listen(ing.deps.engine, "before_cursor_execute", on_pg)
    yield duckdb_sql
    event.remove(ing.deps.engine, "before_cursor_execute", on_pg)


def header_cases() -> list[Any]:
    return [pytest.param(evil, allow, marks=[],
                         id=f"{evil!r}-{'allow_new_columns' if allow else 'strict'}")
            for evil in INJECTIONS for allow in (False, True)]


@pytest.mark.parametrize(("evil", "allow_new_columns"), header_cases())
def test_sql_in_file_headers_never_reaches_sql(ing: Ingest, sql_log: list[str], evil: str,
                                               allow_new_columns: bool) -> None:
    if allow_new_columns:
        from tests.reliability.conftest import ITEMS

        ing.register(ITEMS.replace("max_bad_records: 0", "max_bad_records: 0\n    allow_new_columns: true"),
                     "items.yaml")
    before = ing.load("rel/items/a.csv", items_csv(1, 2))
    header = evil.replace('"', '""')
    row = ing.load("rel/items/b.csv", f'item_id,qty,label,"{header}"\n3,1,x,y\n')
    assert row.status == "ERROR", row.error_message
    assert evil.strip() in row.error_message
    assert ing.rows("rel.items", "item_id, _file_id") == [(1, before.id), (2, before.id)]
    assert [s for s in sql_log if MARKERS[evil] in s] == []


def test_sql_in_values_is_just_data(ing: Ingest, sql_log: list[str]) -> None:
    evil = "'); DROP TABLE rel.items; --"
    row = ing.load("rel/items/v.csv", f'item_id,qty,label\n1,2,"{evil}"\n')
    assert row.status == "SUCCESS"
    assert ing.rows("rel.items", "label") == [(evil,)]
    assert [s for s in sql_log if "DROP TABLE" in s] == []


# -- a 10 MB event ------------------------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


def bounded_logs(caplog: pytest.LogCaptureFixture, limit: int = 4096) -> None:
    from logs import JsonFormatter

    longest = max((len(JsonFormatter().format(r)) for r in caplog.records), default=0)
    assert longest <= limit + 2200  # a message plus at most a few bounded labels


def test_ten_megabyte_event_over_http_loads_its_object(ing: Ingest, live_server: str, caplog) -> None:
    from cli.local_delivery import storage_event_data
    from tests.reliability.conftest import finalize_headers

    info = ing.put("rel/items/big-event.csv", items_csv(1, 3))
    data = {**storage_event_data(info), "metadata": {"note": "x" * TEN_MB}}
    body = json.dumps(data).encode()
    assert len(body) > TEN_MB
    assert http_post(f"{live_server}/gcs/", body, finalize_headers(info)) == 200
    assert ing.file(info).status == "SUCCESS" and ing.count("rel.items") == 3


@pytest.mark.parametrize("field", ["name", "generation", "bucket", "md5Hash", "contentType", "event_id"])
def test_ten_megabyte_fields_are_refused_or_cut_with_bounded_log_lines(ing: Ingest, caplog, field: str) -> None:
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    from values.messages import STORAGE_FINALIZED

    caplog.set_level(logging.DEBUG)
    huge = "9" * TEN_MB if field == "generation" else "rel/items/" + "z" * TEN_MB
    data = {"bucket": BUCKET, "name": "unknown/x.csv", "generation": "7", "size": "3"}
    event_id = "e-1"
    if field == "event_id":
        event_id = huge
    else:
        data[field] = huge
    event = CloudEvent({"type": STORAGE_FINALIZED, "source": "//storage.googleapis.com/x", "id": event_id}, data)
    headers, body = to_binary(event)
    assert ing.client.post("/", headers=headers, data=body).status_code == 200
    rows = files(ing)
    if field in ("contentType", "event_id"):  # informational: cut to their column's width
        [row] = rows
        assert row.status == "ERROR" and len(row.event_id) <= 255 and len(row.content_type or "") <= 255
    else:
        assert rows == []
    bounded_logs(caplog)


# -- Pub/Sub messages ---------------------------------------------------------------------------------

def pubsub_post(body: Any) -> int:
    from cloudevents.conversion import to_binary
    from cloudevents.http import CloudEvent

    from values.messages import PUBSUB_PUBLISHED

    event = CloudEvent({"type": PUBSUB_PUBLISHED, "source": "//pubsub.googleapis.com/x", "id": "m-1"}, body)
    headers, data = to_binary(event)
    return make_client("handle_pubsub").post("/", headers=headers, data=data).status_code


def envelope(data: str, attributes: Any, **extra: Any) -> dict[str, Any]:
    return {"message": {"data": data, "attributes": attributes, "messageId": "1", **extra},
            "subscription": "projects/p/subscriptions/s"}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("body", [
    envelope(b64(b"[" * 100_000), {"event_type": "task"}),
    envelope(b64(b"\xff\xfe\x00not utf-8"), {"event_type": "file_loaded"}),
    envelope(b64(b"{}"), {"event_type": "task", "n": 5}),
    envelope(b64(b"{}"), ["event_type", "task"]),
    envelope(b64(b"{}"), {"eventType": "OBJECT_FINALIZE", "bucketId": "landing", "objectId": "a\x00b",
                          "objectGeneration": "1"}),
    envelope(b64(b"{}"), {"eventType": "OBJECT_FINALIZE", "bucketId": "landing", "objectId": "a.csv",
                          "objectGeneration": "²"}),
    envelope(b64(b"x" * TEN_MB), {"event_type": "nonsense"}),
    envelope(b64(b"{}"), {"event_type": "task"}, messageId={"nested": 1}),
    {"message": "not an object"},
    {"no_message": True},
], ids=["nested_json", "not_utf8", "non_string_attribute", "attributes_list", "nul_object_id",
        "unicode_digit_generation", "ten_megabytes", "message_id_object", "message_string", "no_message"])
def test_broken_pubsub_messages_are_acknowledged(deps, body: Any) -> None:
    assert pubsub_post(body) == 200
    assert deps.publisher.pending() == 0


# -- a gzip bomb ----------------------------------------------------------------------------------------

def bomb(fmt: str, size: int) -> bytes:
    line = b'{"item_id": 1, "qty": 2, "label": "xxxxxxxxxxxxxxxx"}\n' if fmt == "ndjson" else b"1,2,xxxxxxxxxxxxxxxx\n"
    head = b"" if fmt == "ndjson" else b"item_id,qty,label\n"
    return gzip.compress(head + line * (size // len(line)), compresslevel=9)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_gzip_bomb_stops_at_the_configured_limit(ing: Ingest, monkeypatch, fmt: str) -> None:
    from config.settings import load_settings

    monkeypatch.setenv("INGEST__MAX_DECOMPRESSED_BYTES", str(1 << 20))
    current = ing.deps.settings
    ing.deps.settings = load_settings(database_url=current.database_url, data_dir=str(current.data_dir),
                                      warehouse_url=current.warehouse_url, storage_url=current.storage_url)
    assert ing.deps.settings.ingest.max_decompressed_bytes == 1 << 20
    ing.register(ITEMS_NDJSON, "ndjson.yaml")
    payload = bomb(fmt, 8 << 20)
    assert len(payload) < 64 << 10  # 8 MB inflating from a few KB
    name = "rel/ndjson/bomb.ndjson.gz" if fmt == "ndjson" else "rel/items/bomb.csv.gz"
    row = ing.load(name, payload)
    assert row.status == "ERROR"
    assert "max_decompressed_bytes" in row.error_message and str(1 << 20) in row.error_message
    assert ing.count("rel.items") + ing.count("rel.ndjson_items") == 0


ITEMS_NDJSON = """\
    dataset: rel
    table: ndjson_items
    source: "rel/ndjson/*.ndjson"
    format: ndjson
    schema:
      - {name: item_id, type: INT64, mode: REQUIRED}
      - {name: qty, type: INT64}
      - {name: label, type: STRING}
"""

