"""Security checks: no secret in any log line, identifiers allow-listed before SQL, lint and pins.

The log scan runs real work at DEBUG on every logger (ingestion with a password in DATABASE_URL,
an unreachable database, Power BI with a right and a wrong client secret against the loopback
Entra ID, bearer tokens on the operator API) and formats every record with both CAF formatters;
the captured stdout/stderr is scanned too.
"""

from __future__ import annotations

import base64
import io
import logging
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.settings import PROJECT_ROOT
from tests.conftest import make_client
from tests.handlers.ingest_support import ORDERS, ORDERS_CSV, Ingest

DB_PASSWORD = "Db-Pa55w0rd-0f-CAF"
STATIC_TOKEN = "caf-static-token-7f3a9c1e5b"
WRONG_TOKEN = "caf-wrong-token-2d8e4a6f0c"
WRONG_SECRET = "Wr0ng~Secret.Value_for-tests"
NOISY = ("urllib3", "requests", "google", "werkzeug", "sqlalchemy.engine", "sqlalchemy.pool", "msal",
         "alembic", "caf", "functions_framework")


@dataclass
class Captured:
    json: io.StringIO
    text: io.StringIO
    caplog: pytest.LogCaptureFixture

    def lines(self) -> list[str]:
        return self.json.getvalue().splitlines() + self.text.getvalue().splitlines()


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[Captured]:
    """Every record of every logger at DEBUG, formatted by the JSON and the text formatter."""
    import logs
    from handlers import routes

    routes.ensure_logging()  # once per process; later calls must not reset the levels set here
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in NOISY}
    saved_root = root.level
    out = Captured(io.StringIO(), io.StringIO(), caplog)
    handlers = []
    for stream, formatter in ((out.json, logs.JsonFormatter()), (out.text, logs.TextFormatter())):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.setLevel(logging.DEBUG)
        root.addHandler(handler)
        handlers.append(handler)
    root.setLevel(logging.DEBUG)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield out
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(saved_root)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    leaks = [(secret, line[:300]) for line in texts for secret in secrets if secret and secret in line]
    assert leaks == []


# -- the scenarios ------------------------------------------------------------------------------------

def ingest_with_password_in_url(deps: Any, tmp_path: Path, database_url: str) -> None:
    from app.deps import Deps, set_deps

    assert "postgres@/" in database_url
    with_password = database_url.replace("postgres@/", f"postgres:{DB_PASSWORD}@/", 1)
    settings = deps.settings.model_copy(update={"database_url": with_password})
    own = Deps(settings, clock=deps.clock, publisher=deps.publisher)  # its own engine, from that URL
    previous = set_deps(own)
    try:
        logging.getLogger("caf.test").debug("settings %s %r %s", settings, settings, settings.public_view())
        ing = Ingest(own, tmp_path)
        ing.register(ORDERS)
        assert ing.load("sales/orders/good.csv", ORDERS_CSV).status == "SUCCESS"
        assert ing.load("sales/orders/bad.csv", b"\x00\x01binary").status == "ERROR"
        assert ing.load("nowhere/x.csv", "a\n1\n").status == "ERROR"
        assert "***" in str(settings.public_view()["database_url"])
    finally:
        set_deps(previous)
        own.close()


def unreachable_database(deps: Any) -> None:
    from app.deps import Deps, set_deps
    from tests.handlers.test_main import post, storage_event

    settings = deps.settings.model_copy(
        update={"database_url": f"postgresql+pg8000://caf:{DB_PASSWORD}@127.0.0.1:1/caf"})
    previous = set_deps(Deps(settings, publisher=deps.publisher))
    try:
        response = post(make_client("handle_raw_file"), storage_event("sales/orders/x.csv"), mode="binary")
        assert response.status_code == 500
    finally:
        set_deps(previous)


def power_bi(tmp_path: Path) -> list[str]:
    """A refresh with the right secret (token cached, expired, renewed), then one with a wrong secret."""
    import requests

    from adapters.services.powerbi import PowerBiClient
    from errors import CafError
    from tests.adapters.services.fake_powerbi import FakePowerBi, make_tls, serve

    (tmp_path / "tls").mkdir()
    tls = make_tls(tmp_path / "tls")
    fake = FakePowerBi()
    server = serve(fake, tls)
    log = logging.getLogger("caf.test.powerbi")
    try:
        session = requests.Session()
        session.verify, session.trust_env = str(tls.ca), False

        def client(secret: str) -> PowerBiClient:
            return PowerBiClient(tenant_id=fake.tenant_id, client_id=fake.client_id, client_secret=secret,
                                 authority_host=fake.url, api_base=f"{fake.url}/v1.0/myorg", session=session,
                                 timeout=5)

        good = client(fake.client_secret)
        request_id = good.start_refresh("g-1", "d-1")
        fake.expire_tokens()
        good.get_refresh("g-1", "d-1", request_id)  # 401, then a new token
        with pytest.raises(CafError) as refused:
            client(WRONG_SECRET).start_refresh("g-1", "d-1")
        log.warning("power bi refused: %s", refused.value)
        log.exception("power bi refused", exc_info=refused.value)
    finally:
        server.shutdown()
        server.server_close()
    assert len(fake.tokens_issued) >= 2
    basic = [base64.b64encode(f"{fake.client_id}:{s}".encode()).decode() for s in (fake.client_secret, WRONG_SECRET)]
    return [fake.client_secret, WRONG_SECRET, *fake.tokens_issued, *basic]


def bearer_tokens(deps: Any) -> None:
    from app.deps import Deps, set_deps

    auth = deps.settings.auth.model_copy(update={"static_tokens": {STATIC_TOKEN: "default"}})
    own = Deps(deps.settings.model_copy(update={"auth": auth}), clock=deps.clock, engine=deps.engine,
               sessions=deps.sessions, publisher=deps.publisher)
    previous = set_deps(own)
    try:
        operator = make_client("operator", "http")
        for token in (STATIC_TOKEN, WRONG_TOKEN):
            for path in ("/jobs/1", "/jobs", "/status"):
                operator.get(path, headers={"Authorization": f"Bearer {token}"})
        log = logging.getLogger("caf.test.http")
        log.debug("request headers: %s", {"Authorization": f"Bearer {STATIC_TOKEN}", "Accept": "*/*"})
        log.info("retrying with Authorization: Bearer %s", WRONG_TOKEN)
        log.warning("upstream said %s", "token=" + STATIC_TOKEN, extra={"reason": f"Bearer {STATIC_TOKEN}"})
        try:
            raise RuntimeError(f"connect to postgresql://app:{DB_PASSWORD}@10.0.0.5/caf failed")
        except RuntimeError:
            log.exception("traceback carrying a URL password")
    finally:
        set_deps(previous)


@pytest.mark.slow
def test_no_secret_in_any_log_line_at_any_level(deps, tmp_path: Path, database_url: str, captured: Captured,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    ingest_with_password_in_url(deps, tmp_path, database_url)
    unreachable_database(deps)
    powerbi_secrets = power_bi(tmp_path)
    bearer_tokens(deps)

    secrets = [DB_PASSWORD, STATIC_TOKEN, WRONG_TOKEN, *powerbi_secrets]
    formatted = captured.lines()
    assert len(captured.caplog.records) > 50 and len(formatted) > 50  # DEBUG really was on everywhere
    assert any("sales/orders/good.csv" in line for line in formatted)
    assert any("Invalid client secret" in line or "invalid_client" in line for line in formatted)
    assert_no_secret(formatted, secrets)
    streams = capfd.readouterr()
    assert_no_secret((streams.out + streams.err).splitlines(), secrets)
    # Stronger still: apart from the lines this test writes on purpose (caf.test.*), no record carries
    # a secret even before formatting, so a handler without CAF's formatter leaks nothing either.
    raw = [r.getMessage() + (captured.caplog.handler.formatter.formatException(r.exc_info) if r.exc_info else "")
           for r in captured.caplog.records if not r.name.startswith("caf.test")]
    assert_no_secret(raw, secrets)


@pytest.mark.parametrize("line", [
    f"postgresql+pg8000://caf:{DB_PASSWORD}@db/caf",
    f"Authorization: Bearer {STATIC_TOKEN}",
    f"{{'Authorization': 'Basic {base64.b64encode(b'id:' + DB_PASSWORD.encode()).decode()}'}}",
    f'{{"client_secret": "{DB_PASSWORD}", "grant_type": "client_credentials"}}',
    f"client_secret={DB_PASSWORD}&scope=x",
    f"api_key: {DB_PASSWORD}",
    "id_token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXBhcnQ",
])
def test_redaction_masks_each_secret_shape(line: str) -> None:
    import logs

    masked = logs.redact(line)
    assert "***" in masked
    basic = base64.b64encode(b"id:" + DB_PASSWORD.encode()).decode()
    for secret in (DB_PASSWORD, STATIC_TOKEN, "eyJzdWIiOiIxMjM0In0", basic):
        assert secret not in masked


# -- identifiers --------------------------------------------------------------------------------------

SAFE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@settings(max_examples=300, deadline=None, database=None)
@given(name=st.text(st.characters(blacklist_categories=()), max_size=40)
       | st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}[^A-Za-z0-9_]?\Z"))
def test_identifiers_accept_only_the_allow_list(name: str) -> None:
    from values import identifiers as ids

    for check in (ids.column_name, ids.dataset_name, ids.table_name):
        try:
            accepted = check(name)
        except ids.InvalidIdentifier:
            continue
        assert accepted == name and SAFE.fullmatch(name), name
        quoted = ids.quote_ident(accepted)
        assert quoted == f'"{name}"' and '"' not in name and "`" not in name and ";" not in name
        assert ids.bq_ident(accepted) == f"`{name}`"


@pytest.mark.parametrize("check", ["column_name", "dataset_name", "table_name", "quote_ident"])
def test_identifiers_reject_a_trailing_newline(check: str) -> None:
    from values import identifiers as ids

    with pytest.raises(ids.InvalidIdentifier):
        getattr(ids, check)("orders\n")


@pytest.mark.parametrize("evil", ['x"; DROP TABLE t; --', "a b", "x`y", "ид", "1x", "", "_file_id", "_PARTITIONTIME"])
def test_reserved_and_malformed_column_names_are_refused(evil: str) -> None:
    from values import identifiers as ids

    with pytest.raises(ids.InvalidIdentifier):
        ids.column_name(evil)


EVIL = 'x"; DROP TABLE rel.t; --'


@pytest.mark.parametrize("where", ["dataset", "table", "column", "key", "partition_field"])
def test_a_malicious_name_never_produces_sql(deps, duckdb_sql: list[str], where: str) -> None:
    """Identifiers are validated before they are formatted into any statement (DuckDB adapter)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adapters.warehouse.base import LoadRequest
    from values.identifiers import InvalidIdentifier
    from values.tables import Column, TableTarget

    warehouse = deps.warehouse
    columns = (Column("id", "INT64"), Column("d", "DATE"))
    if where in ("dataset", "table"):
        names = {"dataset": "rel", "table": "t", where: EVIL}
        target = TableTarget(dataset=names["dataset"], table=names["table"], columns=columns)
        with pytest.raises(InvalidIdentifier):
            warehouse.ensure_table(target)
        with pytest.raises(InvalidIdentifier):
            warehouse.load(LoadRequest(target=target, staged_uri="/none.parquet", file_id=1, batch_id=1, job_id="j"))
        with pytest.raises(InvalidIdentifier):
            warehouse.count_rows(names["dataset"], names["table"])
        assert duckdb_sql == []  # refused before a connection was even opened
        return
    if where == "column":
        with pytest.raises(InvalidIdentifier):
            warehouse.ensure_table(TableTarget(dataset="rel", table="t", columns=(columns[0], Column(EVIL, "DATE"))))
    else:
        warehouse.ensure_table(TableTarget(dataset="rel", table="t", columns=columns))
        staged = Path(str(warehouse.path)).parent / "staged.parquet"
        pq.write_table(pa.table({"id": [1], "d": pa.array([0], pa.date32()), "_file_id": [1], "_batch_id": [1],
                                 "_source_row": [1]}), staged)
        target = TableTarget(dataset="rel", table="t", columns=columns, keys=(EVIL,) if where == "key" else (),
                             partition_field=EVIL if where == "partition_field" else None,
                             write_mode="merge" if where == "key" else "replace")
        with pytest.raises(InvalidIdentifier):
            warehouse.load(LoadRequest(target=target, staged_uri=str(staged), staged_path=staged, file_id=1,
                                       batch_id=1, job_id="j"))
        assert warehouse.count_rows("rel", "t") == 0  # the load's transaction was rolled back
    assert duckdb_sql and [sql for sql in duckdb_sql if "DROP" in sql] == []


# -- lint and pins ------------------------------------------------------------------------------------

def test_ruff_security_rules_stay_enabled() -> None:
    """`make test` runs ruff with the S (bandit) rules; only the reviewed exceptions are ignored."""
    lint = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "S" in lint["select"]
    assert {rule for rule in lint["ignore"] if re.fullmatch(r"S\d+", rule)} <= {"S101", "S603", "S607", "S608"}
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "ruff check ." in makefile and re.search(r"^test:.*\blint\b", makefile, re.MULTILINE)


def test_dependencies_are_pinned() -> None:
    """Every requirement is an exact pin, and constraints.txt pins the same version."""
    constraints = {}
    for line in (PROJECT_ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            constraints[name.lower().replace("_", "-")] = version
    for path in sorted(PROJECT_ROOT.glob("requirements*.txt")):
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r"):
                continue
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), f"{path.name}: {line!r} is not pinned"
            key = name.split("[")[0].lower().replace("_", "-")
            assert constraints.get(key) == version, f"{path.name}: {name} {version} differs from constraints.txt"
