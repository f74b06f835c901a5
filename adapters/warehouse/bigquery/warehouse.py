"""BigQuery adapter: the Warehouse port on google-cloud-bigquery.

Beside it: `sql` (the apply script), `schema` (SchemaFields, new tables) and `jobs` (job ids,
labels, parameters, vendor errors).

The append of an object's first generation (`LoadRequest.first_load`) is one load job straight
into the target (`{job_id}_append`): load jobs are free and atomic, and the deterministic job id
makes a retry reattach instead of appending twice. Every other load is two jobs with
deterministic ids derived from the object version: a load job that stages the Parquet file
into a scratch table, then one query job that applies it to the target in a single transaction
(append: delete that object's earlier rows + insert; replace: swap the partitions or the whole
table; merge: MERGE on the keys). A retried load reattaches to the jobs already started instead
of starting new ones, and the apply step is itself idempotent, so an object version lands
exactly once.

Vendor errors are translated once, in `jobs.translate` (the reason table `jobs._REASONS`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.warehouse.base import LoadRequest, LoadResult, QueryResult
from adapters.warehouse.bigquery.jobs import (
    MAX_JOB_ATTEMPTS,
    error_from_reason,
    parquet_load_config,
    query_parameter,
    sanitize_labels,
    valid_job_id,
    vendor_errors,
)
from adapters.warehouse.bigquery.schema import (
    LINEAGE_TYPES,
    STAGED_AS_STRING,
    checked_type,
    field,
    missing_columns,
    new_table,
    schema_fields,
    type_label,
)
from adapters.warehouse.bigquery.sql import apply_sql, rebuild_sql
from errors import PermanentError, TransientError
from values.identifiers import bq_ident, column_name, dataset_name, project_name, table_name
from values.tables import TableTarget

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud import bigquery

log = logging.getLogger("caf.adapters.warehouse.bigquery")

WRITE_MODES = ("append", "replace", "merge")
STAGING_EXPIRATION_MS = 7 * 24 * 3600 * 1000  # leftovers vanish; retries stay within Pub/Sub's 7 days


class BigQueryWarehouse:
    """Warehouse on BigQuery. Datasets and tables are created on demand in `location`."""

    file_id_column = "_source_file_id"
    """BigQuery reserves the `_FILE_` column prefix, so the lineage file id gets another name."""

    def __init__(self, *, project: str, location: str | None = None, client: Any = None,
                 staging_dataset: str = "_caf_staging", retry: Retry | None = None,
                 api_endpoint: str | None = None) -> None:
        """
        Args:
            project: project that owns the datasets and runs the jobs.
            location: BigQuery location (e.g. "EU") for new datasets and for jobs.
            client: a ready `bigquery.Client` (tests); otherwise built on first use.
            staging_dataset: dataset for the per-file scratch tables (created with a 7-day
                default table expiration).
            retry: RPC retry policy; defaults to the client's, capped at 60 s so that a longer
                outage becomes a TransientError and the platform redelivers with backoff.
            api_endpoint: base URL of a BigQuery API emulator (BIGQUERY_EMULATOR_HOST): the client
                then uses it with anonymous credentials instead of Application Default Credentials.
        """
        self.project = project_name(project)
        self.location = location
        self.staging_dataset = dataset_name(staging_dataset)
        self._client = client
        self._retry = retry
        self._api_endpoint = api_endpoint
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

                    if self._api_endpoint:
                        from google.auth.credentials import AnonymousCredentials

                        self._client = bigquery.Client(
                            project=self.project, location=self.location, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": self._api_endpoint})
                        return self._client
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
        with vendor_errors(f"get table {ref}"):
            try:
                found = self.client.get_table(ref, retry=self.retry)
            except gexc.NotFound:
                return None
        return {f.name: type_label(f.field_type, f.mode) for f in found.schema}

    def count_rows(self, dataset: str, table: str) -> int:
        """Rows in the table from its metadata (exact for tables written by load and DML jobs;
        free, unlike SELECT COUNT(*)); 0 when the table does not exist."""
        from google.api_core import exceptions as gexc

        ref = self._table_id(dataset, table)
        with vendor_errors(f"get table {ref}"):
            try:
                return int(self.client.get_table(ref, retry=self.retry).num_rows or 0)
            except gexc.NotFound:
                return 0

    def ensure_table(self, target: TableTarget, *, add_columns: bool = True) -> None:
        """Create dataset and table if missing (DAY-partitioned on a date/time `partition_field`,
        clustered on up to four `keys`); add missing registered columns as NULLABLE; raise
        PermanentError naming the column when an existing one has another type."""
        from google.api_core import exceptions as gexc


        wanted = schema_fields(target, self._lineage)
        ref = self._table_id(target.dataset, target.table)
        for _ in range(3):
            with vendor_errors(f"ensure table {ref}"):
                try:
                    table = self.client.get_table(ref, retry=self.retry)
                except gexc.NotFound:
                    self._ensure_dataset(target.dataset)
                    try:
                        resource = new_table(ref, target, wanted, file_id_column=self.file_id_column)
                        self.client.create_table(resource, retry=self.retry)
                        log.info("created table %s", ref)
                        return
                    except gexc.Conflict:
                        continue  # created concurrently: compare with that one
                missing = missing_columns(table.schema, wanted, ref)
                if not missing or not add_columns:
                    return
                # BigQuery only adds NULLABLE (or REPEATED) columns to an existing table.
                added = [field(f.name, f.field_type, "REPEATED" if f.mode == "REPEATED" else "NULLABLE",
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
                       f"SET DATA TYPE {checked_type(bq_type)}")
            log.info("widened %s.%s.%s to %s", target.dataset, target.table, name, bq_type)

    def rebuild_table(self, target: TableTarget, columns: dict[str, str]) -> None:
        """Convert the existing rows of `columns` (name → type) with one `CREATE OR REPLACE TABLE ... AS
        SELECT` over the table itself (atomic; partitioning, clustering and modes kept).

        Refuses, changing nothing, when a non-null value would not convert (PermanentError with counts).
        """
        ref = self._table_id(target.dataset, target.table)
        t = self._table_sql(target.dataset, target.table)
        with vendor_errors(f"get table {ref}"):
            table = self.client.get_table(ref, retry=self.retry)
        fields = {f.name: f for f in table.schema}
        scalar = [n for n in columns if fields[n].mode != "REPEATED"]
        if scalar:
            counts = ", ".join(f"COUNTIF({bq_ident(n)} IS NOT NULL AND SAFE_CAST({bq_ident(n)} AS "
                               f"{checked_type(columns[n])}) IS NULL)" for n in scalar)
            bad = self.query(f"SELECT {counts} FROM {t}").rows[0]
            problems = [f"{n} value(s) of {name} are not valid {columns[name]}"
                        for name, n in zip(scalar, bad, strict=True) if n]
            if problems:
                raise PermanentError(f"{target.dataset}.{target.table} not converted (nothing changed): "
                                     + "; ".join(problems))
        self.query(rebuild_sql(t, table, columns))
        log.info("rebuilt %s converting %s", ref, sorted(columns))

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

        target = request.target
        schema = schema_fields(target, self._lineage)
        if target.write_mode not in WRITE_MODES:
            raise PermanentError(f"write mode {target.write_mode!r} of {target.dataset}.{target.table} "
                                 f"is not one of {', '.join(WRITE_MODES)}")
        if target.write_mode == "merge" and not target.keys:
            raise PermanentError(f"{target.dataset}.{target.table} is merged but has no keys")
        if not request.staged_uri.startswith("gs://"):
            raise PermanentError(f"BigQuery loads from gs:// URIs, got {request.staged_uri!r}")
        base_id = valid_job_id(request.job_id)
        labels = sanitize_labels(request.labels)
        if (target.write_mode == "append" and request.first_load
                and not any(f.field_type in STAGED_AS_STRING for f in schema)):
            return self._append_directly(request, schema, f"{base_id}_append", labels)
        staging_table = table_name(f"{target.dataset}__{target.table}__{int(request.file_id)}")
        staging = self._table_id(self.staging_dataset, staging_table)
        if not self._staging_ready:
            with vendor_errors(f"ensure dataset {self.staging_dataset}"):
                self._ensure_dataset(self.staging_dataset, default_expiration_ms=STAGING_EXPIRATION_MS)
            self._staging_ready = True

        # JSON and BIGNUMERIC arrive as text; the apply step converts them. REQUIRED is checked
        # by the target table, so the scratch table accepts anything the file holds.
        staged_schema = [
            bigquery.SchemaField(f.name, "STRING" if f.field_type in STAGED_AS_STRING else f.field_type,
                                 mode="REPEATED" if f.mode == "REPEATED" else "NULLABLE")
            for f in schema
        ]
        load_config = parquet_load_config(staged_schema, labels, write=bigquery.WriteDisposition.WRITE_TRUNCATE,
                                          create=bigquery.CreateDisposition.CREATE_IF_NEEDED)
        stage = self._run_job(f"{base_id}_stage", "load", lambda job_id: self.client.load_table_from_uri(
            request.staged_uri, staging, job_id=job_id, job_config=load_config, location=self.location,
            retry=self.retry))
        rows = int(stage.output_rows or 0)

        staging_sql = self._table_sql(self.staging_dataset, staging_table)
        sql, params = apply_sql(target, schema, self._table_sql(target.dataset, target.table), staging_sql, request,
                                file_id_column=self.file_id_column)
        query_config = bigquery.QueryJobConfig(query_parameters=params, labels=labels)
        applied = self._run_job(f"{base_id}_apply", "query", lambda job_id: self.client.query(
            sql, job_config=query_config, job_id=job_id, location=self.location, retry=self.retry,
            job_retry=None))
        self._drop_staging(staging)
        log.info("loaded %s rows into %s.%s (%s)", rows, target.dataset, target.table, applied.job_id,
                 extra={"job_id": applied.job_id, "rows": rows})
        return LoadResult(rows_loaded=rows, job_id=applied.job_id)

    def _append_directly(self, request: LoadRequest, schema: list[Any], job_id: str,
                         labels: dict[str, str]) -> LoadResult:
        """One load job appending the staged file to the target: no scratch table, no DML.

        Exactly once without a delete: nothing of the object is in the table yet (first_load),
        a load job is atomic (a failed one wrote nothing), and a retry reattaches to the job
        under the same id, done or not. The schema is the table's own (REQUIRED included).
        """
        from google.cloud import bigquery

        target = request.target
        config = parquet_load_config(schema, labels, write=bigquery.WriteDisposition.WRITE_APPEND,
                                     create=bigquery.CreateDisposition.CREATE_NEVER)
        destination = self._table_id(target.dataset, target.table)
        job = self._run_job(job_id, "load", lambda jid: self.client.load_table_from_uri(
            request.staged_uri, destination, job_id=jid, job_config=config, location=self.location,
            retry=self.retry))
        rows = int(job.output_rows or 0)
        log.info("appended %s rows to %s.%s (%s)", rows, target.dataset, target.table, job.job_id,
                 extra={"job_id": job.job_id, "rows": rows})
        return LoadResult(rows_loaded=rows, job_id=job.job_id)

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

        for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
            job_id = base_id if attempt == 1 else f"{base_id}_r{attempt}"
            with vendor_errors(f"{kind} job {job_id}"):
                try:
                    job = start(job_id)
                except gexc.Conflict:
                    job = self.client.get_job(job_id, project=self.project, location=self.location,
                                              retry=self.retry)
                    if job.job_type != kind:
                        raise PermanentError(f"job id {job_id} is taken by a {job.job_type} job") from None
                    failed = job.error_result if job.state == "DONE" else None
                    if failed:
                        error = error_from_reason(failed.get("reason"), failed.get("message", ""),
                                                   f"{kind} job {job_id}")
                        if isinstance(error, TransientError):
                            log.info("job %s failed earlier (%s); trying the next id", job_id, error)
                            continue
                        raise error from None
                    log.info("reattached to %s job %s", kind, job_id)
                job.result(retry=self.retry)
                return job
        raise TransientError(f"{kind} job {base_id}: {MAX_JOB_ATTEMPTS} attempts failed transiently")

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
            job = self._run_job(valid_job_id(job_id), "query", lambda jid: self.client.query(
                sql, job_config=config, job_id=jid, location=self.location, retry=self.retry, job_retry=None))
        else:
            with vendor_errors("query"):
                job = self.client.query(sql, job_config=config, location=self.location, retry=self.retry)
        with vendor_errors(f"query job {job.job_id}"):
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

