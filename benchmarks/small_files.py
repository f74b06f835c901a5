"""Many small files through one warm process: `caf ingest` and `caf serve` over HTTP.

    python -m benchmarks.small_files [--files 300] [--rows 100]

Three figures, printed with the load average and DuckDB's own `read_csv` on the same files in
the same run (the reference a user could write by hand, one connection, no bookkeeping):
- `caf ingest` of N files as a user runs it (whole process), and its warm rate: (t(N) - t(1))
  / (N - 1), i.e. without the one-off start-up that `caf ingest` of one file also pays (t(1):
  the median of three one-file runs);
- `caf serve` receiving N finalize CloudEvents over HTTP (binary mode, one after the other);
- the same events delivered again (already loaded): latency p50 / p95 per redelivery.
Targets (issue 14): >= 50 files/s warm for 100-row CSVs; a redelivery <= 5 ms p50.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.ingest_csv import ROOT, TABLE_YAML, generate

WORK = ROOT / ".local" / "bench" / "small"


def _load() -> str:
    return "load avg " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _env(url: str, tag: str) -> dict[str, str]:
    env = dict(os.environ, APP_ENV="local", DATABASE_URL=url, LOG_LEVEL="WARNING",
               WAREHOUSE_URL=f"duckdb://{WORK / f'{tag}.duckdb'}", STORAGE_URL=f"file://{WORK / f'{tag}-buckets'}")
    return env


def _database(name: str) -> str:
    from database import embedded, migrate

    server = embedded.start(ROOT / ".local")
    from sqlalchemy import create_engine, text

    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    url = embedded.with_database(server, name)
    migrate.upgrade(url)
    return url


def _caf(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "caf"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"caf {' '.join(args[:2])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def _fresh(tag: str, url: str) -> dict[str, str]:
    for stale in (WORK / f"{tag}.duckdb", WORK / f"{tag}-buckets"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    env = _env(url, tag)
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE files, tables, schemas, domain, task_batch, outbox RESTART IDENTITY CASCADE"))
    engine.dispose()
    _caf(env, "registry", "sync", str(WORK / "tables"))
    return env


def _files(count: int, rows: int) -> list[Path]:
    folder = WORK / f"csv-{count}x{rows}"
    if not folder.exists():
        tmp = folder.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        one = tmp / "template.csv"
        generate(one, rows)
        for i in range(count):
            shutil.copyfile(one, tmp / f"part-{i:05d}.csv")
        one.unlink()
        tmp.rename(folder)
    return sorted(folder.glob("*.csv"))


def native(files: list[Path]) -> float:
    """DuckDB alone: each file read with read_csv into one table, one connection, one process."""
    import duckdb

    db = WORK / "native-small.duckdb"
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE t AS SELECT * FROM read_csv(?) LIMIT 0", [str(files[0])])
        for f in files:
            conn.execute("INSERT INTO t SELECT * FROM read_csv(?)", [str(f)])
    return time.perf_counter() - start


def bench_ingest(url: str, files: list[Path]) -> tuple[float, float]:
    ones = []
    for _ in range(3):  # the start-up subtracted from the N-file run: a median, not one noisy run
        env = _fresh("ingest1", url)
        ones.append(_caf(env, "ingest", str(files[0]), "--prefix", "bench/events/"))
    one = statistics.median(ones)
    env = _fresh("ingestn", url)
    many = _caf(env, "ingest", *map(str, files), "--prefix", "bench/events/")
    return one, many


def _post(port: int, info: dict[str, object]) -> int:
    body = json.dumps(info).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/gcs/", data=body, method="POST", headers={
        "ce-specversion": "1.0", "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-source": f"//storage.googleapis.com/projects/_/buckets/{info['bucket']}",
        "ce-subject": f"objects/{info['name']}", "ce-id": uuid.uuid4().hex,
        "ce-time": datetime.now(UTC).isoformat(), "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return int(resp.status)


def bench_serve(url: str, files: list[Path]) -> tuple[float, list[float]]:
    env = _fresh("serve", url)
    os.environ.update({k: env[k] for k in ("APP_ENV", "DATABASE_URL", "WAREHOUSE_URL", "STORAGE_URL")})
    from adapters.storage import build_storage
    from config.settings import load_settings

    storage = build_storage(load_settings())
    infos = []
    for f in files:
        o = storage.put_file("landing", f"bench/events/{f.name}", f)
        infos.append({"kind": "storage#object", "bucket": o.bucket, "name": o.name, "generation": str(o.generation),
                      "size": str(o.size), "md5Hash": o.md5, "crc32c": o.crc32c, "contentType": "text/csv",
                      "timeCreated": datetime.now(UTC).isoformat()})
    proc = subprocess.Popen([str(Path(sys.executable).parent / "caf"), "serve", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = 0
        for line in proc.stdout:
            m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if not port:
            raise SystemExit("caf serve did not start")
        warm = infos[0]
        assert _post(port, warm) < 300
        start = time.perf_counter()
        for info in infos[1:]:
            code = _post(port, info)
            if code >= 300:
                raise SystemExit(f"caf serve answered HTTP {code}")
        seconds = time.perf_counter() - start
        latencies = []
        for info in infos[1:]:
            t0 = time.perf_counter()
            _post(port, info)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return seconds / (len(infos) - 1), latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "tables").mkdir(exist_ok=True)
    (WORK / "tables" / "events.yaml").write_text(TABLE_YAML)
    files = _files(args.files, args.rows)
    url = _database("caf_bench_small")
    n = len(files)
    print(f"{n} CSV files × {args.rows} rows × 12 columns; {_load()}", flush=True)
    nat = native(files)
    one, many = bench_ingest(url, files)
    warm = (many - one) / (n - 1)
    print(f"{'DuckDB read_csv, one connection':40}{n / nat:>10.1f} files/s  ({nat * 1000 / n:.1f} ms/file)")
    print(f"{'caf ingest, whole process':40}{n / many:>10.1f} files/s  ({many:.1f} s for {n}; 1 file: {one:.2f} s)")
    print(f"{'caf ingest, warm (marginal)':40}{1 / warm:>10.1f} files/s  ({warm * 1000:.1f} ms/file; "
          f"{warm / (nat / n):.1f}x DuckDB alone)  target >= 50", flush=True)
    per_file, latencies = bench_serve(url, files)
    print(f"{'caf serve over HTTP, warm':40}{1 / per_file:>10.1f} files/s  ({per_file * 1000:.1f} ms/file)"
          "  target >= 50")
    q = statistics.quantiles(latencies, n=20)
    print(f"{'redelivery of a loaded version':40}{statistics.median(latencies):>10.1f} ms p50  ({q[18]:.1f} ms p95)"
          "  target <= 5 ms p50")
    print(_load())


if __name__ == "__main__":
    main()
