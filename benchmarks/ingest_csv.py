"""Full ingestion pipeline vs DuckDB's native CSV load, on the same generated file.

    python -m benchmarks.ingest_csv [--rows 1000000]    (1,000,000 rows × 12 columns ≈ 100 MB)
    python -m benchmarks.ingest_csv --rows 10000000     (≈ 1 GB: the streaming / memory check)

Each contender runs in its own process so its peak RSS is its own. Printed side by side:
seconds, rows/s, peak RSS, and the ratio pipeline / DuckDB (target ≤ 1.5×, RSS ≤ 350 MB).
In-process means a warm instance: each contender's libraries are imported before its clock
starts (DuckDB's `import duckdb`; the handler's pyarrow, numpy, DuckDB and pipeline modules,
which it imports on first use). Cold start is what the whole-process figure measures.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".local" / "bench"
TABLE_YAML = """
dataset: bench
table: events
source: "bench/events/*.csv"
format: csv
schema:
  - {name: id, type: INT64, mode: REQUIRED}
  - {name: customer_id, type: INT64}
  - {name: amount, type: NUMERIC}
  - {name: price, type: FLOAT64}
  - {name: name, type: STRING}
  - {name: comment, type: STRING}
  - {name: country, type: STRING}
  - {name: event_date, type: DATE}
  - {name: created_at, type: TIMESTAMP}
  - {name: active, type: BOOL}
  - {name: quantity, type: INT64}
  - {name: category, type: STRING}
keys: [id]
write_mode: append
"""


def generate(path: Path, rows: int) -> None:
    rnd = random.Random(42)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    countries = ["DE", "FR", "GB", "US", "CZ", "NL", "ES", "IT"]
    start = datetime(2026, 1, 1, 12, 0, 0)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("id,customer_id,amount,price,name,comment,country,event_date,created_at,active,quantity,category\n")
        for i in range(1, rows + 1):
            comment = "" if i % 10 == 0 else f'"said ""{rnd.choice(words)}"", then {rnd.choice(words)}"'
            amount = "" if i % 17 == 0 else f"{rnd.randint(0, 99999)}.{rnd.randint(0, 99):02d}"
            day = date(2026, 1, 1) + timedelta(days=i % 365)
            ts = (start + timedelta(seconds=i * 7)).isoformat() + "Z"
            fh.write(f"{i},{rnd.randint(1, 50000)},{amount},{rnd.random() * 1000:.6f},"
                     f"{rnd.choice(words)} {rnd.choice(words)},{comment},{rnd.choice(countries)},{day},{ts},"
                     f"{'true' if i % 3 else 'false'},{rnd.randint(1, 20)},{rnd.choice(words)}\n")


def run_duckdb(csv: Path) -> dict:
    import duckdb

    db = WORK / "native.duckdb"
    db.unlink(missing_ok=True)
    start, cpu = time.perf_counter(), time.process_time()
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [str(csv)])
        rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    return {"seconds": time.perf_counter() - start, "rows": rows, "cpu": time.process_time() - cpu}


def run_pipeline(csv: Path, fmt: str = "csv") -> dict:
    import shutil

    import logs
    from app.deps import Deps
    from config.settings import load_settings
    from database import embedded, migrate
    from database.registry import sync_definition
    from database.session import unit_of_work
    from handlers import raw_file
    from values.definitions import parse_definition
    from values.messages import ObjectRef

    logs.configure("text", "WARNING")
    for stale in ("pipeline.duckdb", "buckets"):
        target = WORK / stale
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    server = embedded.start(ROOT / ".local")
    embedded.ensure_database(server, "caf_bench")
    url = embedded.with_database(server, "caf_bench")
    migrate.upgrade(url)
    settings = load_settings(database_url=url, warehouse_url=f"duckdb://{WORK / 'pipeline.duckdb'}",
                             storage_url=f"file://{WORK / 'buckets'}", log_level="WARNING")
    deps = Deps(settings)
    with deps.engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE files, tables, schemas, domain, task_batch, outbox RESTART IDENTITY CASCADE")
    suffix = csv.name.removesuffix(".gz").rsplit(".", 1)[-1]
    (WORK / "table.yaml").write_text(TABLE_YAML.replace("format: csv", f"format: {fmt}")
                                     .replace("*.csv", f"*.{suffix}"))
    with unit_of_work(deps.sessions) as session:
        sync_definition(session=session, definition=parse_definition(WORK / "table.yaml"))
    info = deps.storage.put_file("landing", f"bench/events/{csv.name}", csv)
    ref = ObjectRef(bucket=info.bucket, name=info.name, generation=info.generation, size=info.size)
    warm_imports()
    start, cpu = time.perf_counter(), time.process_time()
    raw_file.handle(ref, deps)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    rows = deps.warehouse.count_rows("bench", "events")
    deps.close()
    return {"seconds": seconds, "rows": rows, "cpu": cpu}


def warm_imports() -> None:
    """What a warm instance has imported already: the modules the handler imports on first use."""
    import duckdb  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from pipeline import ingest, scratch, steps  # noqa: F401
    from pipeline.readers import csv  # noqa: F401


def child(which: str, csv: Path) -> None:
    result = run_duckdb(csv) if which == "duckdb" else run_pipeline(csv)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def whole_process(csv: Path, repeat: int = 3) -> dict[str, list[float]]:
    """`caf ingest` of the file as a user runs it, against DuckDB's CTAS as a whole process too.

    `repeat` runs of each, alternated (one run of each moved by 2x from one run to the next on a
    shared machine); wall seconds, and CPU seconds (user + system of the process, all threads).
    """
    import resource

    from benchmarks.small_files import WORK as SMALL
    from benchmarks.small_files import _caf, _database, _fresh

    (SMALL / "tables").mkdir(parents=True, exist_ok=True)
    (SMALL / "tables" / "events.yaml").write_text(TABLE_YAML)
    url = _database("caf_bench_whole")
    db = WORK / "native-process.duckdb"
    code = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
            "c.execute('CREATE TABLE t AS SELECT * FROM read_csv(?)', [sys.argv[2]]); c.close()")
    runs: dict[str, list[float]] = {"duckdb": [], "caf": [], "duckdb_cpu": [], "caf_cpu": []}

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    for _ in range(repeat):
        db.unlink(missing_ok=True)
        cpu, start = children_cpu(), time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(db), str(csv)], check=True,  # output dropped, as caf's
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs["duckdb"].append(time.perf_counter() - start)
        runs["duckdb_cpu"].append(children_cpu() - cpu)
        env = _fresh("whole", url)
        cpu = children_cpu()
        runs["caf"].append(_caf(env, "ingest", str(csv), "--prefix", "bench/events/"))
        runs["caf_cpu"].append(children_cpu() - cpu)
    return runs


def _load() -> str:
    import os

    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the median is printed")
    parser.add_argument("--child", choices=["duckdb", "pipeline"])
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--whole-only", action="store_true", help="only the whole-process figure")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.csv)
        return
    import statistics

    WORK.mkdir(parents=True, exist_ok=True)
    csv = WORK / f"events-{args.rows}.csv"
    if not csv.exists():
        print(f"generating {csv.name} ...", flush=True)
        generate(csv, args.rows)
    size_mb = csv.stat().st_size / 1e6
    if args.whole_only:
        return _print_whole(csv, args.repeat)
    runs: dict[str, list[dict]] = {"duckdb": [], "pipeline": []}
    for _ in range(args.repeat):
        for which in ("duckdb", "pipeline"):  # alternated, so both see the same machine load
            out = subprocess.run([sys.executable, "-m", "benchmarks.ingest_csv", "--child", which, "--csv",
                                  str(csv)], cwd=ROOT, check=True, capture_output=True, text=True).stdout
            runs[which].append(json.loads(out.strip().splitlines()[-1]))
    results = {k: min(v, key=lambda r: abs(r["seconds"] - statistics.median(x["seconds"] for x in v)))
               for k, v in runs.items()}
    print(f"file: {args.rows:,} rows × 12 columns, {size_mb:,.0f} MB; median of {args.repeat}; load avg {_load()}")
    print(f"{'':24}{'seconds':>10}{'CPU s':>8}{'rows/s':>12}{'peak RSS MB':>14}{'rows':>12}   all runs (s)")
    for label, key in (("DuckDB native CTAS", "duckdb"), ("CAF full handler", "pipeline")):
        r = results[key]
        every = ", ".join(f"{x['seconds']:.2f}" for x in runs[key])
        print(f"{label:24}{r['seconds']:>10.2f}{r['cpu']:>8.2f}{r['rows'] / r['seconds']:>12,.0f}"
              f"{r['peak_rss_mb']:>14.0f}{r['rows']:>12,}   {every}")
    ratio = results["pipeline"]["seconds"] / results["duckdb"]["seconds"]
    # CPU seconds (all threads, medians): what the machine's load moves least; wall is the target.
    cpu = statistics.median(x["cpu"] for x in runs["pipeline"]) / statistics.median(x["cpu"] for x in runs["duckdb"])
    print(f"ratio CAF / DuckDB in-process: {ratio:.2f}x (target <= 1.5x), CPU seconds {cpu:.2f}x; CAF peak RSS "
          f"{max(r['peak_rss_mb'] for r in runs['pipeline']):.0f} MB (target <= 350 MB)", flush=True)
    _print_whole(csv, args.repeat)


def _print_whole(csv: Path, repeat: int) -> None:
    import statistics

    whole = whole_process(csv, repeat)
    med = {k: statistics.median(v) for k, v in whole.items()}
    print(f"whole process (median of {repeat}): DuckDB {med['duckdb']:.2f} s, caf ingest {med['caf']:.2f} s, "
          f"ratio {med['caf'] / med['duckdb']:.2f}x (target <= 2.0x), CPU seconds "
          f"{med['caf_cpu'] / med['duckdb_cpu']:.2f}x; runs DuckDB {', '.join(f'{x:.2f}' for x in whole['duckdb'])}, "
          f"caf {', '.join(f'{x:.2f}' for x in whole['caf'])}; load avg {_load()}")


if __name__ == "__main__":
    main()
