"""`caf ingest` and `caf backfill`: deliver finalize events through the real handler."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cli.context import console, open_deps, print_json

if TYPE_CHECKING:
    from cli.uploads import Uploads

DEFAULT_BUCKET = "landing"


def deliver_all(infos: list[Any], deps: Any, *, title: str) -> list[dict[str, Any]]:
    """Deliver each object's finalize event, retrying transient failures; returns outcome rows.

    Like the platform, a transient failure (HTTP 500) is redelivered with exponential backoff
    (`ingest.local_redeliveries`, `ingest.local_backoff_seconds`). A file still not loaded after
    the last one is given up: its batch is closed and the file stays NEW with its last error,
    for `caf backfill` or the sweep to deliver again.

    On a terminal a progress bar counts the bytes read from each object as it is ingested (and
    files done); piped or redirected output gets no bar.
    """
    from cli import local_delivery

    outcomes = []
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress, \
            _counting_reads(deps, progress) as current:
        for done, info in enumerate(infos, start=1):
            current["task"] = progress.add_task(f"{title} {done}/{len(infos)} {info.name}", total=info.size or None)
            code = 0
            cfg = deps.settings.ingest
            for attempt in range(cfg.local_redeliveries):
                if attempt:
                    time.sleep(cfg.local_backoff_seconds * 2 ** (attempt - 1))
                progress.reset(current["task"], total=info.size or None)
                code = local_delivery.deliver_object(info)
                if code < 300:
                    break
            progress.remove_task(current["task"])
            outcomes.append({"info": info, "http": code})
    drain_bus(deps)
    found = file_rows(deps, [o["info"] for o in outcomes])
    rows = [dict(o, **row) for o, row in zip(outcomes, found, strict=True)]
    given_up = [r["id"] for r in rows if r["id"] is not None and r["status"] in ("NEW", "PROCESSING")]
    if given_up:
        from pipeline import stalled

        stalled.give_up(deps, given_up)
    return rows


@contextlib.contextmanager
def _counting_reads(deps: Any, progress: Progress) -> Iterator[dict[str, Any]]:
    """While delivering, reads of the object being ingested advance its progress bar (terminal only).

    Wraps `open_read` of this process's storage adapter for the duration, then restores it.
    """
    current: dict[str, Any] = {}
    if progress.disable:
        yield current
        return
    storage = deps.storage
    original = storage.open_read

    def open_read(bucket: str, name: str, generation: int | None = None) -> Any:
        stream = original(bucket, name, generation)
        task = current.get("task")
        if task is None or name.startswith(_INTERNAL_PREFIXES):
            return stream
        return _CountingReader(stream, lambda n: progress.advance(task, n))

    storage.open_read = open_read
    try:
        yield current
    finally:
        del storage.open_read  # back to the class's method


_INTERNAL_PREFIXES = ("staging/", "archive/", "failed/", "quarantine/")


class _CountingReader:
    """A binary stream that reports how many bytes were read through it."""

    def __init__(self, stream: Any, advance: Callable[[int], None]) -> None:
        self._stream = stream
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._advance(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = self._stream.read1(size)
        self._advance(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._stream.readinto(buffer)
        self._advance(n or 0)
        return n

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def readline(self, size: int = -1) -> bytes:
        data = self._stream.readline(size)
        self._advance(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def drain_bus(deps: Any) -> None:
    """Locally, run what the loads triggered (the local bus delivers through handle_pubsub)."""
    from adapters.publisher.local import LocalBus
    from cli import local_delivery

    bus = deps.publisher
    if isinstance(bus, LocalBus):
        if bus.deliver is None:
            local_delivery.attach(bus)
        while bus.drain():
            pass


_OUTCOME_CHUNK = 1000
"""Object versions looked up per statement (three parameters each; pg8000 allows 32,767)."""


_OUTCOME_COLUMNS = ("id", "bucket", "name", "generation", "status", "rows_loaded", "rows_rejected", "error_message",
                    "detail", "attempts", "last_error")


def file_rows(deps: Any, infos: list[Any]) -> list[dict[str, Any]]:
    """Each delivered object version's outcome, in the order given, read in one query per 1,000
    versions (one per file cost ~3 ms a file in a 300-file `caf ingest`). Plain rows of the
    `files` table: an ORM query would configure every mapper first (~10-15 ms once per process)."""
    from sqlalchemy import select, tuple_

    from database.models import File
    from database.session import unit_of_work

    table = File.__table__
    keys = [(info.bucket, info.name, info.generation) for info in infos]
    found: dict[tuple[str, str, int], Any] = {}
    with unit_of_work(deps.sessions) as session:
        for start in range(0, len(keys), _OUTCOME_CHUNK):
            chunk = sorted(set(keys[start:start + _OUTCOME_CHUNK]))
            column = tuple_(table.c.bucket, table.c.name, table.c.generation)
            query = select(*(table.c[name] for name in _OUTCOME_COLUMNS)).where(column.in_(chunk))
            for row in session.execute(query):
                found[(row.bucket, row.name, row.generation)] = row
    return [_outcome(found.get(key)) for key in keys]


def _outcome(row: Any) -> dict[str, Any]:
    if row is None:
        return {"status": "IGNORED", "rows_loaded": None, "rows_rejected": None, "message": "", "id": None}
    message = row.error_message or row.detail or ""
    if row.status in ("NEW", "PROCESSING"):  # a transient failure that outlived every redelivery
        folder = row.name.rsplit("/", 1)[0] + "/" if "/" in row.name else ""
        message = (f"not loaded after {row.attempts} attempt(s): {row.last_error or 'no outcome recorded'}. "
                   f"Kept as NEW; `caf backfill {row.bucket}/{folder}` (or the sweep) delivers it again")
    return {"status": row.status, "rows_loaded": row.rows_loaded, "rows_rejected": row.rows_rejected,
            "message": message, "id": row.id}


def print_outcomes(rows: list[dict[str, Any]], title: str) -> None:
    """One row per file, then each file's message as a wrapped paragraph (readable at 80 columns)."""
    table = Table(title=title, title_justify="left")
    for col in ("file", "object", "status", "loaded", "rejected"):
        table.add_column(col, justify="right" if col in ("file", "loaded", "rejected") else "left",
                         no_wrap=col != "object", overflow="fold")
    colours = {"SUCCESS": "green", "ERROR": "red", "PROCESSING": "yellow"}
    for r in rows:
        status = r["status"] if r["http"] < 300 else f"{r['status']} (HTTP {r['http']})"
        colour = colours.get(r["status"], "white")
        table.add_row(str(r["id"] or ""), f"{r['info'].bucket}/{r['info'].name}", f"[{colour}]{status}[/]",
                      _n(r["rows_loaded"]), _n(r["rows_rejected"]))
    console.print(table)
    for r in rows:
        if r["message"]:
            colour = "red" if r["status"] in ("ERROR", "NEW", "PROCESSING") else "default"
            console.print(f"file {r['id'] or '-'} ({r['info'].name}): [{colour}]{escape(r['message'][:600])}[/]",
                          highlight=False)


def outcome_json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outcome rows for --json: plain values, one object per file."""
    return [{"file_id": r["id"], "bucket": r["info"].bucket, "object": r["info"].name,
             "generation": r["info"].generation, "status": r["status"], "http": r["http"],
             "rows_loaded": r["rows_loaded"], "rows_rejected": r["rows_rejected"], "message": r["message"]}
            for r in rows]


def exit_code(rows: list[dict[str, Any]]) -> int:
    """1 when a file ended in ERROR; 3 when one could not be loaded (transient: warehouse busy...); else 0.

    The codes are cli.app's EXIT_FAILED and EXIT_UNREACHABLE (not imported: cli.app imports this module).
    """
    if any(r["status"] == "ERROR" for r in rows):
        return 1
    if any(r["http"] >= 300 or r["status"] in ("NEW", "PROCESSING") for r in rows):
        return 3
    return 0


def _n(value: Any) -> str:
    return "" if value is None else f"{value:,}"


def ingest(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Local files to ingest."),
    bucket: str = typer.Option(DEFAULT_BUCKET, help="Bucket to put them in."),
    prefix: str = typer.Option("", help="Object name prefix, e.g. sales/orders/."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Put local files into the (local or emulated) bucket and deliver their finalize events.

    Exits 1 when a file ends in ERROR, 3 when one could not be loaded after every redelivery.
    """
    uploads = _start_uploads(bucket, prefix, files)
    try:
        deps = open_deps()
    except BaseException:
        if uploads is not None:
            uploads.discard()
        raise
    if uploads is None:
        infos = [deps.storage.put_file(bucket, f"{prefix}{path.name}", path) for path in files]
    else:
        infos = uploads.publish(meanwhile=HANDLER_MODULES)
    rows = deliver_all(infos, deps, title="ingesting")
    if as_json:
        print_json({"files": outcome_json(rows)})
    else:
        print_outcomes(rows, f"ingested {len(rows)} file(s)")
    raise typer.Exit(exit_code(rows))


HANDLER_MODULES = ("handlers.events", "cloudevents.http", "pipeline.ingest", "pipeline.steps", "pyarrow.parquet",
                   "duckdb")
"""What the raw-file handler imports on its first file, imported while the files are copied in (not
`main`: delivering needs neither functions-framework nor Flask, see cli.local_delivery)."""


def _start_uploads(bucket: str, prefix: str, files: list[Path]) -> Uploads | None:
    """For a local storage, the files' copies started on a thread (`cli.uploads`); else None."""
    from adapters.storage.local import LocalStorage
    from app.deps import get_deps

    deps = get_deps()  # settings only: nothing is connected yet
    if deps.settings.storage_root is None:  # GCS: its client is built after the database check
        return None
    storage = deps.storage
    if not isinstance(storage, LocalStorage):
        return None
    from cli.uploads import Uploads

    return Uploads(storage, bucket, prefix, files)


def backfill(
    target: str = typer.Argument(..., help="BUCKET or BUCKET/PREFIX"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Deliver events for objects already in a bucket (and stalled files under it); versions already
    loaded are skipped.

    Exits 1 when a delivered file ends in ERROR, 3 when one could not be loaded after every
    redelivery. Files left NEW by a transient failure (stalled) are delivered again.
    """
    from sqlalchemy import select

    from database.models import File
    from database.session import unit_of_work

    bucket, _, prefix = target.partition("/")
    deps = open_deps()
    cfg = deps.settings.ingest
    internal = (cfg.archive_prefix, cfg.failed_prefix, cfg.quarantine_prefix, cfg.staging_prefix)
    candidates = [o for o in deps.storage.list(bucket, prefix) if not o.name.startswith(internal)]
    with unit_of_work(deps.sessions) as session:
        done = {tuple(r) for r in session.execute(select(File.name, File.generation).where(
            File.bucket == bucket, File.status.in_(("SUCCESS", "ERROR")))).all()}
    todo = [o for o in candidates if (o.name, o.generation) not in done]
    todo += _stalled_versions(deps, bucket, prefix, {(o.name, o.generation) for o in todo})
    if not as_json:
        console.print(f"{len(candidates)} object(s) under {target}; {len(candidates) - len(todo)} already "
                      f"processed, {len(todo)} to deliver")
    rows = deliver_all(todo, deps, title="backfilling")
    if as_json:
        print_json({"target": target, "objects": len(candidates), "already_processed": len(candidates) - len(todo),
                    "files": outcome_json(rows)})
    elif rows:
        print_outcomes(rows, f"backfilled {len(rows)} file(s)")
    raise typer.Exit(exit_code(rows))


def _stalled_versions(deps: Any, bucket: str, prefix: str, listed: set[tuple[str, int]]) -> list[Any]:
    """Stalled files under BUCKET/PREFIX that the listing does not show (an older version since
    replaced): delivered again too, so each ends loaded, superseded or in ERROR instead of stalled."""
    from adapters.storage.base import ObjectInfo
    from database.files import stalled_files
    from database.session import unit_of_work
    from pipeline.stalled import cutoffs

    with unit_of_work(deps.sessions) as session:
        rows = stalled_files(session=session, cutoffs=cutoffs(deps), limit=10_000)
    return [ObjectInfo(bucket=r["bucket"], name=r["name"], generation=r["generation"], size=r["size"] or 0,
                       md5=r["md5"], crc32c=r["crc32c"], content_type=r["content_type"],
                       content_encoding=r["content_encoding"])
            for r in rows if r["bucket"] == bucket and r["name"].startswith(prefix)
            and (r["name"], r["generation"]) not in listed]


def register(app: typer.Typer) -> None:
    app.command()(ingest)
    app.command()(backfill)
