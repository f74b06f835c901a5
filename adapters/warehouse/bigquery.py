"""BigQuery adapter: the Warehouse port on google-cloud-bigquery.

A load is two jobs with deterministic ids derived from the object version: a load job that
stages the Parquet file into a scratch table, then one query job that applies it to the
target in a single transaction (append: delete that object's earlier rows + insert; replace:
swap the partitions or the whole table; merge: MERGE on the keys). A retried load reattaches
to the jobs already started instead of starting new ones, and the apply step is itself
idempotent, so an object version lands exactly once.

Vendor errors are translated here, in `_translate`, using the reason table `_REASONS`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from adapters.warehouse.base import LoadRequest, LoadResult, QueryResult
from errors import CafError, PermanentError, TransientError, is_transient_http_status
from values.identifiers import InvalidIdentifier, bq_ident, column_name, dataset_name, project_name, table_name
from values.tables import MODES, Column, TableTarget, normalize_type

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import bigquery

log = logging.getLogger("caf.adapters.warehouse.bigquery")

# Job error reason -> the CAF error it becomes. Unknown reasons fall back to the HTTP status.
# quotaExceeded is permanent: the per-table daily quotas do not reset before the redeliveries run out.
_REASONS: dict[str, type[CafError]] = {
    "backendError": TransientError,
    "rateLimitExceeded": TransientError,
    "internalError": TransientError,
    "jobInternalError": TransientError,
    "jobRateLimitExceeded": TransientError,
    "invalid": PermanentError,
    "invalidQuery": PermanentError,
    "notFound": PermanentError,
    "duplicate": PermanentError,
    "accessDenied": PermanentError,
    "billingNotEnabled": PermanentError,
    "quotaExceeded": PermanentError,
}
# BigQuery reports losing a race between transactions on the same table as `invalidQuery`;
# running it again later succeeds, so these messages override the reason.
_TRANSIENT_MESSAGES = ("due to concurrent update", "could not serialize access")

LINEAGE_TYPES = ("INT64", "INT64", "INT64", "TIMESTAMP")
_TIME_PARTITION_TYPES = {"DATE", "TIMESTAMP", "DATETIME"}
_CLUSTERABLE = {"BIGNUMERIC", "BOOL", "DATE", "DATETIME", "INT64", "NUMERIC", "STRING", "TIMESTAMP"}
_STAGED_AS_STRING = {"JSON", "BIGNUMERIC"}  # Parquet cannot carry these; the pipeline stages text
_WRITE_MODES = ("append", "replace", "merge")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,1000}$")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_JOB_ATTEMPTS = 5
_STAGING_EXPIRATION_MS = 7 * 24 * 3600 * 1000  # leftovers vanish; retries stay within Pub/Sub's 7 days


class BigQueryWarehouse:
    """Warehouse on BigQuery. Datasets and tables are created on demand in `location`."""

    file_id_column = "_source_file_id"
    """BigQuery reserves the `_FILE_` column prefix, so the lineage file id gets another name."""

    def __init__(self, *, project: str, location: str | None = None, client: Any = None,
                 staging_dataset: str = "_caf_staging", retry: Retry | None = None) -> None:
        """
        Args:
            project: project that owns the datasets and runs the jobs.
            location: BigQuery location (e.g. "EU") for new datasets and for jobs.
            client: a ready `bigquery.Client` (tests); otherwise built on first use.
            staging_dataset: dataset for the per-file scratch tables (created with a 7-day
                default table expiration).
            retry: RPC retry policy; defaults to the client's, capped at 60 s so that a longer
                outage becomes a TransientError and the platform redelivers with backoff.
        """
        self.project = project_name(project)
        self.location = location
        self.staging_dataset = dataset_name(staging_dataset)
        self._client = client
        self._retry = retry
        self._lock = threading.Lock()
        self._staging_ready = False
        self._lineage = tuple(zip((self.file_id_column, "_batch_id", "_source_row", "_ingested_at"),
                                  LINEAGE_TYPES, strict=True))

    # -- client ---------------------------------------------------------------------------
    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from google.cloud import bigquery

                    from adapters.credentials import google_credentials

                    with google_credentials("BigQuery (WAREHOUSE_URL)"):
                        self._client = bigquery.Client(project=self.project, location=self.location)
        return self._client

    @property
    def retry(self) -> Retry:
        if self._retry is None:
            from google.cloud import bigquery

            self._retry = bigquery.DEFAULT_RETRY.with_timeout(60.0)
        return self._retry

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- tables ---------------------------------------------------------------------------
    def table_columns(self, dataset: str, table: str) -> dict[str, str] | None:
        from google.api_core import exceptions as gexc

        ref = self._table_id(dataset, table)
        with _vendor_errors(f"get table {ref}"):
            try:
                found = self.client.get_table(ref, retry=self.retry)
            except gexc.NotFound:
                return None
        return {f.name: _type_label(f.field_type, f.mode) for f in found.schema}

    def count_rows(self, dataset: str, table: str) -> int:
        """Rows in the table from its metadata (exact for tables written by load and DML jobs;
        free, unlike SELECT COUNT(*)); 0 when the table does not exist."""
        from google.api_core import exceptions as gexc

        ref = self._table_id(dataset, table)
        with _vendor_errors(f"get table {ref}"):
            try:
                return int(self.client.get_table(ref, retry=self.retry).num_rows or 0)
            except gexc.NotFound:
                return 0

    def ensure_table(self, target: TableTarget, *, add_columns: bool = True) -> None:
        """Create dataset and table if missing (DAY-partitioned on a date/time `partition_field`,
        clustered on up to four `keys`); add missing registered columns as NULLABLE; raise
        PermanentError naming the column when an existing one has another type."""
        from google.api_core import exceptions as gexc


        wanted = self._schema(target)
        ref = self._table_id(target.dataset, target.table)
        for _ in range(3):
            with _vendor_errors(f"ensure table {ref}"):
                try:
                    table = self.client.get_table(ref, retry=self.retry)
                except gexc.NotFound:
                    self._ensure_dataset(target.dataset)
                    try:
                        self.client.create_table(self._new_table(target, wanted), retry=self.retry)
                        log.info("created table %s", ref)
                        return
                    except gexc.Conflict:
                        continue  # created concurrently: compare with that one
                missing = _missing_columns(table.schema, wanted, ref)
                if not missing or not add_columns:
                    return
                # BigQuery only adds NULLABLE (or REPEATED) columns to an existing table.
                added = [_field(f.name, f.field_type, "REPEATED" if f.mode == "REPEATED" else "NULLABLE",
                                f.description) for f in missing]
                table.schema = [*table.schema, *added]
                try:
                    # update_table sends the etag as If-Match: a concurrent change makes it 412.
                    self.client.update_table(table, ["schema"], retry=self.retry)
                    log.info("added columns %s to %s", [f.name for f in added], ref)
                    return
                except gexc.PreconditionFailed:
                    continue
        raise TransientError(f"table {ref} kept changing while its schema was being updated")

    def widen_columns(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Safe widenings in place (drift.SAFE_WIDENINGS), `ALTER COLUMN SET DATA TYPE`: no rewrite."""
        t = self._table_sql(target.dataset, target.table)
        for name, bq_type in columns.items():
            self.query(f"ALTER TABLE {t} ALTER COLUMN {bq_ident(column_name(name))} "
                       f"SET DATA TYPE {_checked_type(bq_type)}")
            log.info("widened %s.%s.%s to %s", target.dataset, target.table, name, bq_type)

    def rebuild_table(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Convert the existing rows of `columns` (name → type) with one `CREATE OR REPLACE TABLE ... AS
        SELECT` over the table itself (atomic; partitioning, clustering and modes kept).

        Refuses, changing nothing, when a non-null value would not convert (PermanentError with counts).
        """
        ref = self._table_id(target.dataset, target.table)
        t = self._table_sql(target.dataset, target.table)
        with _vendor_errors(f"get table {ref}"):
            table = self.client.get_table(ref, retry=self.retry)
        fields = {f.name: f for f in table.schema}
        scalar = [n for n in columns if fields[n].mode != "REPEATED"]
        if scalar:
            counts = ", ".join(f"COUNTIF({bq_ident(n)} IS NOT NULL AND SAFE_CAST({bq_ident(n)} AS "
                               f"{_checked_type(columns[n])}) IS NULL)" for n in scalar)
            bad = self.query(f"SELECT {counts} FROM {t}").rows[0]
            problems = [f"{n} value(s) of {name} are not valid {columns[name]}"
                        for name, n in zip(scalar, bad, strict=True) if n]
            if problems:
                raise PermanentError(f"{target.dataset}.{target.table} not converted (nothing changed): "
                                     + "; ".join(problems))
        self.query(rebuild_sql(t, table, columns))
        log.info("rebuilt %s converting %s", ref, sorted(columns))

    def _new_table(self, target: TableTarget, schema: list[Any]) -> Any:
        from google.cloud import bigquery

        table = bigquery.Table(self._table_id(target.dataset, target.table), schema=schema)
        types = {f.name: (f.field_type, f.mode) for f in schema}
        field = target.partition_field
        if field and types[field][0] in _TIME_PARTITION_TYPES:
            table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                                field=field)
        clustering = [k for k in target.keys if types[k][0] in _CLUSTERABLE and types[k][1] != "REPEATED"][:4]
        if not clustering and target.write_mode == "append":
            # Every append deletes by file id first: clustering on it keeps that delete cheap.
            clustering = [self.file_id_column]
        table.clustering_fields = clustering or None
        return table

    def _ensure_dataset(self, dataset: str, *, default_expiration_ms: int | None = None) -> None:
        """Get, and create only if missing: runtime accounts often may not create datasets."""
        from google.api_core import exceptions as gexc
        from google.cloud import bigquery

        ref = bigquery.DatasetReference(self.project, dataset_name(dataset))
        try:
            self.client.get_dataset(ref, retry=self.retry)
            return
        except gexc.NotFound:
            pass
        ds = bigquery.Dataset(ref)
        ds.location = self.location
        ds.default_table_expiration_ms = default_expiration_ms
        try:
            self.client.create_dataset(ds, retry=self.retry)
            log.info("created dataset %s.%s", self.project, dataset)
        except gexc.Conflict:
            pass

    # -- loads ----------------------------------------------------------------------------
    def load(self, request: LoadRequest) -> LoadResult:
        """Stage `request.staged_uri` (gs:// Parquet) and apply it to the target in one job.

        Job ids are `{request.job_id}_stage` and `{request.job_id}_apply`: a retry of the same
        object version reattaches to them. Returns the load job's output rows and the id of
        the job that changed the target.
        """
        from google.cloud import bigquery
        from google.cloud.bigquery.format_options import ParquetOptions

        target = request.target
        schema = self._schema(target)
        if target.write_mode not in _WRITE_MODES:
            raise PermanentError(f"write mode {target.write_mode!r} of {target.dataset}.{target.table} "
                                 f"is not one of {', '.join(_WRITE_MODES)}")
        if target.write_mode == "merge" and not target.keys:
            raise PermanentError(f"{target.dataset}.{target.table} is merged but has no keys")
        if not request.staged_uri.startswith("gs://"):
            raise PermanentError(f"BigQuery loads from gs:// URIs, got {request.staged_uri!r}")
        base_id = _job_id(request.job_id)
        labels = sanitize_labels(request.labels)
        staging_table = table_name(f"{target.dataset}__{target.table}__{int(request.file_id)}")
        staging = self._table_id(self.staging_dataset, staging_table)
        if not self._staging_ready:
            with _vendor_errors(f"ensure dataset {self.staging_dataset}"):
                self._ensure_dataset(self.staging_dataset, default_expiration_ms=_STAGING_EXPIRATION_MS)
            self._staging_ready = True

        # JSON and BIGNUMERIC arrive as text; the apply step converts them. REQUIRED is checked
        # by the target table, so the scratch table accepts anything the file holds.
        staged_schema = [
            bigquery.SchemaField(f.name, "STRING" if f.field_type in _STAGED_AS_STRING else f.field_type,
                                 mode="REPEATED" if f.mode == "REPEATED" else "NULLABLE")
            for f in schema
        ]
        parquet = ParquetOptions()
        parquet.enable_list_inference = True
        load_config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET, schema=staged_schema, labels=labels,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        load_config.parquet_options = parquet
        stage = self._run_job(f"{base_id}_stage", "load", lambda job_id: self.client.load_table_from_uri(
            request.staged_uri, staging, job_id=job_id, job_config=load_config, location=self.location,
            retry=self.retry))
        rows = int(stage.output_rows or 0)

        staging_sql = self._table_sql(self.staging_dataset, staging_table)
        sql, params = self._apply_sql(target, schema, staging_sql, request)
        query_config = bigquery.QueryJobConfig(query_parameters=params, labels=labels)
        applied = self._run_job(f"{base_id}_apply", "query", lambda job_id: self.client.query(
            sql, job_config=query_config, job_id=job_id, location=self.location, retry=self.retry,
            job_retry=None))
        self._drop_staging(staging)
        log.info("loaded %s rows into %s.%s (%s)", rows, target.dataset, target.table, applied.job_id,
                 extra={"job_id": applied.job_id, "rows": rows})
        return LoadResult(rows_loaded=rows, job_id=applied.job_id)

    def _apply_sql(self, target: TableTarget, schema: list[Any], s: str,
                   request: LoadRequest) -> tuple[str, list[Any]]:
        """The apply script and its parameters; `s` is the quoted staging table."""
        from google.cloud import bigquery

        t = self._table_sql(target.dataset, target.table)
        names = [f.name for f in schema]
        column_list = ", ".join(bq_ident(n) for n in names)
        select = ", ".join(_from_staged(f) for f in schema)
        insert = f"INSERT INTO {t} ({column_list})\nSELECT {select}\nFROM {s};"
        if target.write_mode == "append":
            file_ids = sorted({int(i) for i in (*request.replace_file_ids, request.file_id)})
            delete = f"DELETE FROM {t} WHERE {bq_ident(self.file_id_column)} IN UNNEST(@file_ids);"
            params = [bigquery.ArrayQueryParameter("file_ids", "INT64", file_ids)]
            return _transaction(delete, insert), params
        if target.write_mode == "replace":
            field = target.partition_field
            if field:
                part = _partition_expr(field, next(f.field_type for f in schema if f.name == field))
                col = bq_ident(field)
                delete = (f"DELETE FROM {t}\n"
                          f"WHERE {part} IN (SELECT DISTINCT {part} FROM {s} WHERE {col} IS NOT NULL)\n"
                          f"  OR ({col} IS NULL AND EXISTS (SELECT 1 FROM {s} WHERE {col} IS NULL));")
            else:
                delete = f"DELETE FROM {t} WHERE TRUE;"
            return _transaction(delete, insert), []
        keys = set(target.keys)
        on = " AND ".join(f"T.{bq_ident(k)} IS NOT DISTINCT FROM S.{bq_ident(k)}" for k in target.keys)
        updates = ", ".join(f"{bq_ident(n)} = S.{bq_ident(n)}" for n in names if n not in keys)
        source = ", ".join(f"{_from_staged(f)} AS {bq_ident(f.name)}" if f.field_type in _STAGED_AS_STRING
                           else bq_ident(f.name) for f in schema)
        values = ", ".join(f"S.{bq_ident(n)}" for n in names)
        sql = (f"MERGE {t} AS T\nUSING (SELECT {source} FROM {s}) AS S\nON {on}\n"
               f"WHEN MATCHED THEN UPDATE SET {updates}\n"
               f"WHEN NOT MATCHED THEN INSERT ({column_list}) VALUES ({values});")
        return sql, []

    def _drop_staging(self, staging: str) -> None:
        try:
            self.client.delete_table(staging, not_found_ok=True, retry=self.retry)
        except Exception as exc:  # noqa: BLE001 - the data is committed; the scratch table expires on its own
            log.warning("could not drop staging table %s: %s", staging, type(exc).__name__)

    def _run_job(self, base_id: str, kind: str, start: Callable[[str], Any]) -> Any:
        """Start the job `base_id`, or reattach to it if an earlier attempt already did.

        A job id, once used, can never run again. If the job found under that id failed for
        a transient reason, it is skipped and the next id in the deterministic sequence
        (`base_id`, `base_id_r2`, ...) is used; a job this call started itself that fails
        raises, so the platform redelivers with backoff rather than spinning here.
        """
        from google.api_core import exceptions as gexc

        for attempt in range(1, _MAX_JOB_ATTEMPTS + 1):
            job_id = base_id if attempt == 1 else f"{base_id}_r{attempt}"
            with _vendor_errors(f"{kind} job {job_id}"):
                try:
                    job = start(job_id)
                except gexc.Conflict:
                    job = self.client.get_job(job_id, project=self.project, location=self.location,
                                              retry=self.retry)
                    if job.job_type != kind:
                        raise PermanentError(f"job id {job_id} is taken by a {job.job_type} job") from None
                    failed = job.error_result if job.state == "DONE" else None
                    if failed:
                        error = _error_from_reason(failed.get("reason"), failed.get("message", ""),
                                                   f"{kind} job {job_id}")
                        if isinstance(error, TransientError):
                            log.info("job %s failed earlier (%s); trying the next id", job_id, error)
                            continue
                        raise error from None
                    log.info("reattached to %s job %s", kind, job_id)
                job.result(retry=self.retry)
                return job
        raise TransientError(f"{kind} job {base_id}: {_MAX_JOB_ATTEMPTS} attempts failed transiently")

    # -- queries --------------------------------------------------------------------------
    def query(self, sql: str, params: dict[str, Any] | None = None, *, job_id: str | None = None,
              labels: dict[str, str] | None = None) -> QueryResult:
        """Run `sql` with named `@params` (types inferred, see `query_parameter`).

        With `job_id`, a repeated call reattaches to that job and returns its result instead of
        running the statement again.
        """
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[query_parameter(name, value) for name, value in (params or {}).items()],
            labels=sanitize_labels(labels or {}),
        )
        if job_id is not None:
            job = self._run_job(_job_id(job_id), "query", lambda jid: self.client.query(
                sql, job_config=config, job_id=jid, location=self.location, retry=self.retry, job_retry=None))
        else:
            with _vendor_errors("query"):
                job = self.client.query(sql, job_config=config, location=self.location, retry=self.retry)
        with _vendor_errors(f"query job {job.job_id}"):
            result = job.result(retry=self.retry)
            rows = [tuple(row.values()) for row in result]
        affected = getattr(result, "num_dml_affected_rows", None)
        if affected is None:
            affected = job.num_dml_affected_rows
        return QueryResult(rows_affected=affected, rows=rows, columns=[f.name for f in result.schema or ()],
                           job_id=job.job_id)

    # -- names and schemas ----------------------------------------------------------------
    def _table_id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset_name(dataset)}.{table_name(table)}"

    def _table_sql(self, dataset: str, table: str) -> str:
        return f"{bq_ident(self.project)}.{bq_ident(dataset_name(dataset))}.{bq_ident(table_name(table))}"

    def _schema(self, target: TableTarget) -> list[Any]:
        """Registered columns then lineage columns, every name and type validated."""
        from google.cloud import bigquery

        dataset_name(target.dataset)
        table_name(target.table)
        fields = [_field(column_name(c.name), _type(c), _mode(c), c.description) for c in target.columns]
        taken = {f.name.lower() for f in fields}
        if len(taken) != len(fields):
            raise InvalidIdentifier(f"{target.dataset}.{target.table} has duplicate column names")
        lineage = [bigquery.SchemaField(n, t) for n, t in self._lineage]
        clash = taken & {f.name.lower() for f in lineage}
        if clash:
            raise InvalidIdentifier(f"column {sorted(clash)[0]} is reserved for CAF lineage")
        names = {f.name for f in fields}
        for key in target.keys:
            if key not in names:
                raise PermanentError(f"key {key!r} of {target.dataset}.{target.table} is not a column")
        if target.partition_field and target.partition_field not in names:
            raise PermanentError(f"partition field {target.partition_field!r} of "
                                 f"{target.dataset}.{target.table} is not a column")
        return fields + lineage


# -- helpers ------------------------------------------------------------------------------
def _type(col: Column) -> str:
    canonical = normalize_type(col.type)
    if canonical is None:
        raise PermanentError(f"column {col.name} has unknown type {col.type!r}")
    return canonical


def _mode(col: Column) -> str:
    mode = (col.mode or "NULLABLE").upper()
    if mode not in MODES:
        raise PermanentError(f"column {col.name} has unknown mode {col.mode!r}")
    return mode


def _field(name: str, field_type: str, mode: str = "NULLABLE", description: str | None = None) -> Any:
    from google.cloud import bigquery

    if description is None:
        return bigquery.SchemaField(name, field_type, mode=mode)
    return bigquery.SchemaField(name, field_type, mode=mode, description=description)


def _missing_columns(existing: list[Any], wanted: list[Any], ref: str) -> list[Any]:
    """Wanted fields the table lacks; PermanentError when a present column has another type."""
    have = {f.name.lower(): f for f in existing}
    missing = []
    for field in wanted:
        found = have.get(field.name.lower())
        if found is None:
            missing.append(field)
            continue
        theirs, ours = _type_label(found.field_type, found.mode), _type_label(field.field_type, field.mode)
        if theirs != ours:
            raise PermanentError(
                f"column {field.name} is {theirs} in the warehouse but {ours} in the registry ({ref}): type "
                f"changes are not applied automatically; `caf table rebuild {ref.split('.', 1)[-1]}` converts "
                "the table")
    return missing


def _checked_type(bq_type: str) -> str:
    canonical = normalize_type(bq_type)
    if canonical is None:
        raise PermanentError(f"unknown type {bq_type!r}")
    return canonical


def rebuild_sql(table_sql: str, table: Any, columns: dict[str, str]) -> str:
    """`CREATE OR REPLACE TABLE` over itself: `columns` cast to their new type, the rest as they are."""
    defs, exprs = [], []
    for f in table.schema:
        base = _checked_type(columns[f.name]) if f.name in columns else (normalize_type(f.field_type) or f.field_type)
        repeated = f.mode == "REPEATED"
        col = bq_ident(f.name)
        defs.append(f"{col} {f'ARRAY<{base}>' if repeated else base}{' NOT NULL' if f.mode == 'REQUIRED' else ''}")
        if f.name not in columns:
            exprs.append(col)
        elif repeated:
            exprs.append(f"ARRAY(SELECT CAST(v AS {base}) FROM UNNEST({col}) AS v WITH OFFSET AS o ORDER BY o)"
                         f" AS {col}")
        else:
            exprs.append(f"CAST({col} AS {base}) AS {col}")
    options = ""
    partitioning = table.time_partitioning
    if partitioning is not None and partitioning.field:
        kind = next(f.field_type for f in table.schema if f.name == partitioning.field)
        options += f"\nPARTITION BY {_partition_expr(partitioning.field, normalize_type(kind) or kind)}"
    if table.clustering_fields:
        options += f"\nCLUSTER BY {', '.join(bq_ident(c) for c in table.clustering_fields)}"
    return (f"CREATE OR REPLACE TABLE {table_sql} ({', '.join(defs)}){options}\n"
            f"AS SELECT {', '.join(exprs)} FROM {table_sql}")


def _type_label(field_type: str, mode: str | None) -> str:
    base = normalize_type(field_type) or field_type
    return f"ARRAY<{base}>" if (mode or "").upper() == "REPEATED" else base


def _from_staged(field: Any) -> str:
    """SELECT expression turning a staged column back into its registered type."""
    col = bq_ident(field.name)
    if field.field_type not in _STAGED_AS_STRING:
        return col
    # 'round' rather than the default 'exact': a JSON number beyond FLOAT64 precision should
    # not fail the whole file.
    convert = ("PARSE_JSON({}, wide_number_mode=>'round')" if field.field_type == "JSON"
               else "CAST({} AS BIGNUMERIC)")
    if field.mode == "REPEATED":
        return f"ARRAY(SELECT {convert.format('v')} FROM UNNEST({col}) AS v WITH OFFSET AS o ORDER BY o)"
    return convert.format(col)


def _partition_expr(field: str, field_type: str) -> str:
    # Day partitions: every row of a day the file touches is replaced, not just equal values.
    return f"DATE({bq_ident(field)})" if field_type in _TIME_PARTITION_TYPES else bq_ident(field)


def _transaction(*statements: str) -> str:
    # A failing statement aborts the script and BigQuery rolls the transaction back.
    return "\n".join(("BEGIN TRANSACTION;", *statements, "COMMIT TRANSACTION;"))


def _job_id(raw: str) -> str:
    """A valid job id, deterministic for `raw`; invalid characters are replaced and a hash of
    the original appended so that two different requests never share an id."""
    if _JOB_ID.match(raw):
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', raw)[:900]}_{digest}"


def sanitize_labels(labels: dict[str, str]) -> dict[str, str]:
    """BigQuery label rules: lowercase [a-z0-9_-], at most 63 characters, keys start with a
    letter, at most 64 labels."""
    out: dict[str, str] = {}
    for key, value in labels.items():
        k = re.sub(r"[^a-z0-9_-]", "_", str(key).lower())
        if not k[:1].isalpha():
            k = f"l_{k}"
        out[k[:63]] = re.sub(r"[^a-z0-9_-]", "_", str(value).lower())[:63]
    return dict(list(out.items())[:64])


def query_parameter(name: str, value: Any) -> Any:
    """A named BigQuery query parameter with its type inferred from the Python value."""
    from google.cloud import bigquery

    if not isinstance(name, str) or not _PARAM_NAME.match(name):
        raise InvalidIdentifier(f"query parameter name {name!r} is invalid")
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        types = {_scalar_type(v) for v in items if v is not None}
        if types == {"INT64", "FLOAT64"}:
            types = {"FLOAT64"}
        if len(types) > 1:
            raise TypeError(f"query parameter {name} mixes element types {sorted(types)}")
        return bigquery.ArrayQueryParameter(name, types.pop() if types else "STRING", items)
    return bigquery.ScalarQueryParameter(name, "STRING" if value is None else _scalar_type(value), value)


def _scalar_type(value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, bytes):
        return "BYTES"
    if isinstance(value, dt.datetime):  # before date: datetime is a date
        return "TIMESTAMP" if value.tzinfo is not None else "DATETIME"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, dt.time):
        return "TIME"
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")


@contextmanager
def _vendor_errors(action: str) -> Iterator[None]:
    """Translate google-cloud / transport exceptions raised inside into CAF errors."""
    try:
        yield
    except CafError:
        raise
    except Exception as exc:
        error = _translate(exc, action)
        if error is None:
            raise
        raise error from exc


def _translate(exc: Exception, action: str) -> CafError | None:
    import concurrent.futures

    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(exc, gexc.GoogleAPICallError):
        reason = None
        if exc.errors and isinstance(exc.errors[0], dict):
            reason = exc.errors[0].get("reason")
        return _error_from_reason(reason, exc.message or str(exc), action, status=exc.code)
    if isinstance(exc, gexc.RetryError | concurrent.futures.TimeoutError):
        return TransientError(f"BigQuery {action} did not finish in time: {exc}")
    if isinstance(exc, ConnectionError | TimeoutError | requests.ConnectionError | requests.Timeout
                  | auth_exc.TransportError):
        return TransientError(f"BigQuery {action}: connection failed ({type(exc).__name__})")
    if isinstance(exc, auth_exc.RefreshError):
        cls = TransientError if getattr(exc, "retryable", False) else PermanentError
        return cls(f"BigQuery {action}: could not obtain an access token")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return PermanentError(f"BigQuery {action}: authentication failed ({type(exc).__name__})")
    return None


def _error_from_reason(reason: str | None, message: str, action: str, *,
                       status: int | None = None) -> CafError:
    """Apply `_REASONS` (and the concurrent-update override); unknown reasons go by HTTP status."""
    text = f"BigQuery {action} failed ({reason or status}): {message}"
    if any(m in message.lower() for m in _TRANSIENT_MESSAGES):
        return TransientError(text)
    kind = _REASONS.get(reason or "")
    if kind is None:
        kind = TransientError if status is None or is_transient_http_status(int(status)) else PermanentError
    return kind(text)
