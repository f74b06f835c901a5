"""Other source formats through the full handler, beside the native reader on the same file.

    python -m benchmarks.formats [--rows 1000000] [--xlsx-rows 100000] [--only ndjson,parquet,...]

The 12-column events of `benchmarks.ingest_csv`, converted once by DuckDB into NDJSON (plain
and gzip) and Parquet, and written once by openpyxl as XLSX. Each contender runs in its own
process so its peak RSS is its own:
- NDJSON: DuckDB `CREATE TABLE AS SELECT * FROM read_json(...)`;
- Parquet: DuckDB `CREATE TABLE AS SELECT * FROM read_parquet(...)`;
- XLSX: no DuckDB reader offline, so a plain openpyxl read-only pass over every cell (what any
  Python loader has to do at least).
Beside wall seconds, CPU seconds (all threads) over the same span: on a shared machine the wall
ratio moves with the load, the CPU ratio much less.
Target (issue 14): no format worse than 2.5x its native reader.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.ingest_csv import ROOT, WORK, generate

FORMATS = ("ndjson", "ndjson.gz", "parquet", "xlsx")


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def source_file(kind: str, rows: int) -> Path:
    """The events file in this format, made once and kept under .local/bench."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"events-{rows}.{kind}"
    if path.exists():
        return path
    csv = WORK / f"events-{rows}.csv"
    if not csv.exists():
        generate(csv, rows)
    tmp = path.with_name(path.name + ".tmp")
    if kind == "xlsx":
        _write_xlsx(csv, tmp)
    else:
        import duckdb

        fmt = {"ndjson": "FORMAT json", "ndjson.gz": "FORMAT json, COMPRESSION gzip",
               "parquet": "FORMAT parquet"}[kind]
        # Timestamps as ISO 8601 with Z, as most producers write them; numbers stay numbers.
        select = ("SELECT * REPLACE (strftime(created_at AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS created_at) "
                  if kind != "parquet" else "SELECT * ")
        with duckdb.connect() as conn:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute(f"COPY ({select} FROM read_csv('{csv}')) TO '{tmp}' ({fmt})")
    tmp.rename(path)
    return path


def _write_xlsx(csv: Path, out: Path) -> None:
    import csv as csvmod
    from datetime import date, datetime

    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("events")
    with csv.open(newline="", encoding="utf-8") as fh:
        reader = csvmod.reader(fh)
        sheet.append(next(reader))
        for r in reader:
            sheet.append([int(r[0]), int(r[1]), float(r[2]) if r[2] else None, float(r[3]), r[4], r[5] or None, r[6],
                          date.fromisoformat(r[7]), datetime.fromisoformat(r[8].removesuffix("Z")),
                          r[9] == "true", int(r[10]), r[11]])
    book.save(out)


def run_native(kind: str, path: Path) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "xlsx":
        from openpyxl import load_workbook

        book = load_workbook(path, read_only=True, data_only=True)
        rows = sum(1 for _ in book.worksheets[0].iter_rows(values_only=True)) - 1
        book.close()
    else:
        import duckdb

        db = WORK / "native-formats.duckdb"
        db.unlink(missing_ok=True)
        reader = "read_parquet" if kind == "parquet" else "read_json"
        with duckdb.connect(str(db)) as conn:
            conn.execute(f"CREATE TABLE t AS SELECT * FROM {reader}(?)", [str(path)])
            rows = (conn.execute("SELECT count(*) FROM t").fetchone() or (0,))[0]
    return {"seconds": time.perf_counter() - start, "rows": rows, "cpu": time.process_time() - cpu}


def child(which: str, kind: str, path: Path) -> None:
    if which == "native":
        result = run_native(kind, path)
    else:
        from benchmarks.ingest_csv import run_pipeline

        result = run_pipeline(path, kind.removesuffix(".gz"))  # CPU seconds over the timed handler too
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _run(which: str, kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.formats", "--child", which, "--kind", kind,
                          "--path", str(path)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    parser.add_argument("--only", default=",".join(FORMATS))
    parser.add_argument("--child", choices=["native", "caf", "make"])
    parser.add_argument("--kind")
    parser.add_argument("--path", type=Path)
    args = parser.parse_args()
    if args.child == "make":
        source_file(args.kind, args.rows)
        return
    if args.child:
        child(args.child, args.kind, args.path)
        return
    started = time.perf_counter()
    kinds = args.only.split(",")
    for kind in kinds:  # made in a child: a child process starts with its parent's peak RSS
        rows = args.xlsx_rows if kind == "xlsx" else args.rows
        subprocess.run([sys.executable, "-m", "benchmarks.formats", "--child", "make", "--kind", kind,
                        "--rows", str(rows)], cwd=ROOT, check=True)
    print(f"{'format':<12}{'rows':>11}{'MB':>7}{'native s':>10}{'CAF s':>8}{'ratio':>7}"
          f"{'CPU s native/CAF':>18}{'ratio':>7}{'native RSS':>12}{'CAF RSS':>9}  load avg")
    for kind in kinds:
        rows = args.xlsx_rows if kind == "xlsx" else args.rows
        path = source_file(kind, rows)
        native = _run("native", kind, path)
        caf = _run("caf", kind, path)
        note = "" if caf["rows"] == native["rows"] else f"  (CAF loaded {caf['rows']:,} of {native['rows']:,})"
        print(f"{kind:<12}{native['rows']:>11,}{path.stat().st_size / 1e6:>7.0f}{native['seconds']:>10.2f}"
              f"{caf['seconds']:>8.2f}{caf['seconds'] / native['seconds']:>6.2f}x"
              f"{native['cpu']:>11.2f} /{caf['cpu']:>5.2f}{caf['cpu'] / native['cpu']:>6.2f}x"
              f"{native['peak_rss_mb']:>9.0f} MB"
              f"{caf['peak_rss_mb']:>6.0f} MB  {_load()}{note}", flush=True)
    print("target: CAF <= 2.5x the native reader for every format")
    print(f"benchmarks.formats took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
