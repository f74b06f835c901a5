"""A loopback BigQuery REST server: just the calls BigQueryWarehouse makes, recorded for assertions.

It keeps datasets, tables and jobs in memory and answers with the JSON shapes of the v2 REST
API. It does not run SQL: a query job completes with the canned result registered for it
(`fake.results[...]`), or with no rows. A load job creates / truncates its destination table
with the schema the job carries and reports `fake.load_rows` output rows. Failures are
injected per test: `fail_job` makes the next matching job end with an error reason,
`fail_http` makes the next matching request return an HTTP error (optionally after its effect
happened, which is what a lost response looks like to the client).
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = "/bigquery/v2/projects/"
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


@dataclass
class Recorded:
    method: str
    path: str
    """Path below /bigquery/v2/projects/{project}/, e.g. "jobs" or "datasets/d/tables/t"."""
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class _HttpFailure:
    method: str
    path: re.Pattern[str]
    status: int
    reason: str
    after_effect: bool


@dataclass
class FakeBigQuery:
    project: str = "caf-test"
    requests: list[Recorded] = field(default_factory=list)
    datasets: dict[str, dict] = field(default_factory=dict)
    tables: dict[tuple[str, str], dict] = field(default_factory=dict)
    jobs: dict[str, dict] = field(default_factory=dict)
    load_rows: int = 0
    results: dict[str, dict] = field(default_factory=dict)
    """SQL substring -> {"fields": [(name, type)], "rows": [[...]], "dml": int | None}."""
    done_on_insert: bool = True
    """False: jobs are RUNNING when inserted and DONE at their first jobs.get."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._job_failures: list[tuple[re.Pattern[str], str, str]] = []
        self._http_failures: list[_HttpFailure] = []
        self._server: ThreadingHTTPServer | None = None

    # -- test controls --------------------------------------------------------------------
    def fail_job(self, job_id_pattern: str, reason: str, message: str = "injected failure") -> None:
        """The next inserted job whose id matches (re.search) ends DONE with this errorResult."""
        self._job_failures.append((re.compile(job_id_pattern), reason, message))

    def fail_http(
        self,
        method: str,
        path_pattern: str,
        status: int = 503,
        *,
        reason: str = "backendError",
        after_effect: bool = False,
    ) -> None:
        """The next matching request gets `status`; with after_effect, it is processed first."""
        self._http_failures.append(
            _HttpFailure(method, re.compile(path_pattern), status, reason, after_effect)
        )

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and by a regex fully matching the path."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and (path is None or re.fullmatch(path, r.path))
        ]

    def job_inserts(self) -> list[Recorded]:
        return self.calls("POST", "jobs")

    # -- server ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeBigQuery:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PATCH(self) -> None:
                fake._handle(self, "PATCH")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- dispatch -------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        record = Recorded(
            method, "", parse_qs(parts.query), body, {k.lower(): v for k, v in handler.headers.items()}
        )
        if not parts.path.startswith(PREFIX + self.project + "/"):
            status, payload = _error(404, "notFound", f"unknown path {parts.path}")
        else:
            record.path = unquote(parts.path[len(PREFIX + self.project) + 1 :])
            with self._lock:
                self.requests.append(record)
                status, payload = self._dispatch(record)
        record.status = status
        data = b"" if payload is None else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(self, req: Recorded) -> tuple[int, Any]:
        failure = next(
            (f for f in self._http_failures if f.method == req.method and f.path.fullmatch(req.path)), None
        )
        if failure is not None:
            self._http_failures.remove(failure)
            if failure.after_effect:
                self._route(req)
            return _error(failure.status, failure.reason, "injected HTTP failure")
        return self._route(req)

    def _route(self, req: Recorded) -> tuple[int, Any]:
        routes = [
            ("POST", r"datasets", self._insert_dataset),
            ("GET", r"datasets/(?P<d>[^/]+)", self._get_dataset),
            ("POST", r"datasets/(?P<d>[^/]+)/tables", self._insert_table),
            ("GET", r"datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", self._get_table),
            ("PATCH", r"datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", self._patch_table),
            ("DELETE", r"datasets/(?P<d>[^/]+)/tables/(?P<t>[^/]+)", self._delete_table),
            ("POST", r"jobs", self._insert_job),
            ("GET", r"jobs/(?P<j>[^/]+)", self._get_job),
            ("GET", r"queries/(?P<j>[^/]+)", self._query_results),
        ]
        for method, pattern, func in routes:
            match = re.fullmatch(pattern, req.path)
            if method == req.method and match:
                return func(req, **match.groupdict())
        return _error(501, "notImplemented", f"the fake does not implement {req.method} {req.path}")

    # -- datasets and tables ----------------------------------------------------------------
    def _insert_dataset(self, req: Recorded) -> tuple[int, Any]:
        ds = req.body["datasetReference"]["datasetId"]
        if ds in self.datasets:
            return _error(409, "duplicate", f"Already Exists: Dataset {self.project}:{ds}")
        resource = {
            **req.body,
            "kind": "bigquery#dataset",
            "id": f"{self.project}:{ds}",
            "etag": "d1",
            "creationTime": _now_ms(),
            "location": req.body.get("location") or "US",
        }
        self.datasets[ds] = resource
        return 200, resource

    def _get_dataset(self, req: Recorded, d: str) -> tuple[int, Any]:
        if d not in self.datasets:
            return _error(404, "notFound", f"Not found: Dataset {self.project}:{d}")
        return 200, self.datasets[d]

    def _insert_table(self, req: Recorded, d: str) -> tuple[int, Any]:
        t = req.body["tableReference"]["tableId"]
        if d not in self.datasets:
            return _error(404, "notFound", f"Not found: Dataset {self.project}:{d}")
        if (d, t) in self.tables:
            return _error(409, "duplicate", f"Already Exists: Table {self.project}:{d}.{t}")
        return 200, self.put_table(d, t, req.body)

    def put_table(self, d: str, t: str, body: dict) -> dict:
        resource = {
            **copy.deepcopy(body),
            "kind": "bigquery#table",
            "id": f"{self.project}:{d}.{t}",
            "tableReference": {"projectId": self.project, "datasetId": d, "tableId": t},
            "etag": f"e{time.monotonic_ns()}",
            "numRows": "0",
            "type": "TABLE",
            "creationTime": _now_ms(),
        }
        self.tables[(d, t)] = resource
        return resource

    def _get_table(self, req: Recorded, d: str, t: str) -> tuple[int, Any]:
        if (d, t) not in self.tables:
            return _error(404, "notFound", f"Not found: Table {self.project}:{d}.{t}")
        return 200, self.tables[(d, t)]

    def _patch_table(self, req: Recorded, d: str, t: str) -> tuple[int, Any]:
        table = self.tables.get((d, t))
        if table is None:
            return _error(404, "notFound", f"Not found: Table {self.project}:{d}.{t}")
        if req.headers.get("if-match") not in (None, table["etag"]):
            return _error(412, "conditionNotMet", "Precondition check failed.")
        table.update(copy.deepcopy(req.body))
        table["etag"] = f"e{time.monotonic_ns()}"
        return 200, table

    def _delete_table(self, req: Recorded, d: str, t: str) -> tuple[int, Any]:
        if self.tables.pop((d, t), None) is None:
            return _error(404, "notFound", f"Not found: Table {self.project}:{d}.{t}")
        return 204, None

    # -- jobs -------------------------------------------------------------------------------
    def _insert_job(self, req: Recorded) -> tuple[int, Any]:
        ref = req.body["jobReference"]
        job_id = ref["jobId"]
        if job_id in self.jobs:
            return _error(
                409, "duplicate", f"Already Exists: Job {self.project}:{ref.get('location')}.{job_id}"
            )
        config = req.body["configuration"]
        job: dict[str, Any] = {
            "kind": "bigquery#job",
            "id": f"{self.project}:{ref.get('location') or 'US'}.{job_id}",
            "jobReference": {**ref, "location": ref.get("location") or "US"},
            "configuration": copy.deepcopy(config),
            "status": {"state": "DONE"},
            "statistics": {"creationTime": _now_ms(), "startTime": _now_ms(), "endTime": _now_ms()},
        }
        failure = next((f for f in self._job_failures if f[0].search(job_id)), None)
        if failure is not None:
            self._job_failures.remove(failure)
            error = {"reason": failure[1], "message": failure[2]}
            job["status"].update(errorResult=error, errors=[error])
        elif "load" in config:
            self._run_load(job, config["load"])
        elif "query" in config:
            self._run_query(job, config["query"])
        self.jobs[job_id] = job
        if not self.done_on_insert:
            return 200, {**job, "status": {"state": "RUNNING"}}
        return 200, job

    def _run_load(self, job: dict, load: dict) -> None:
        dest = load["destinationTable"]
        d, t = dest["datasetId"], dest["tableId"]
        if d not in self.datasets:
            error = {"reason": "notFound", "message": f"Not found: Dataset {self.project}:{d}"}
            job["status"].update(errorResult=error, errors=[error])
            return
        existing = self.tables.get((d, t))
        if existing is None and load.get("createDisposition") == "CREATE_NEVER":
            error = {"reason": "notFound", "message": f"Not found: Table {self.project}:{d}.{t}"}
            job["status"].update(errorResult=error, errors=[error])
            return
        if existing is not None and load.get("writeDisposition") == "WRITE_APPEND":
            existing["numRows"] = str(int(existing.get("numRows") or 0) + self.load_rows)
        else:
            self.put_table(d, t, {"schema": load.get("schema", {})})
            self.tables[(d, t)]["numRows"] = str(self.load_rows)
        job["statistics"]["load"] = {"outputRows": str(self.load_rows), "inputFiles": "1"}

    def _run_query(self, job: dict, query: dict) -> None:
        canned = next((v for k, v in self.results.items() if k in query["query"]), None)
        stats: dict[str, Any] = {
            "statementType": "SCRIPT" if "BEGIN TRANSACTION" in query["query"] else "SELECT"
        }
        if canned and canned.get("dml") is not None:
            stats["numDmlAffectedRows"] = str(canned["dml"])
        job["statistics"]["query"] = stats
        job["_canned"] = canned

    def _get_job(self, req: Recorded, j: str) -> tuple[int, Any]:
        job = self.jobs.get(j)
        if job is None:
            return _error(404, "notFound", f"Not found: Job {self.project}:{j}")
        return 200, {k: v for k, v in job.items() if not k.startswith("_")}

    def _query_results(self, req: Recorded, j: str) -> tuple[int, Any]:
        """jobs.getQueryResults: rows of the canned result (none when maxResults=0)."""
        job = self.jobs.get(j)
        if job is None:
            return _error(404, "notFound", f"Not found: Job {self.project}:{j}")
        error = job["status"].get("errorResult")
        if error:
            return _error(400, error["reason"], error["message"])
        response: dict[str, Any] = {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": job["jobReference"],
            "jobComplete": True,
        }
        canned = job.get("_canned")
        if canned:
            if canned.get("dml") is not None:
                response["numDmlAffectedRows"] = str(canned["dml"])
            if canned.get("fields"):
                response["schema"] = {
                    "fields": [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in canned["fields"]]
                }
                response["totalRows"] = str(len(canned["rows"]))
                if req.query.get("maxResults") != ["0"]:
                    response["rows"] = [
                        {"f": [{"v": None if v is None else str(v)} for v in row]} for row in canned["rows"]
                    ]
        return 200, response


def _error(status: int, reason: str, message: str) -> tuple[int, dict]:
    return status, {
        "error": {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }


def _now_ms() -> str:
    return str(int(time.time() * 1000))
