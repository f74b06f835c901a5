"""Run every benchmark in one go and print their figures (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPTS = ("benchmarks.import_time", "benchmarks.ingest_csv", "benchmarks.small_files", "benchmarks.formats",
           "benchmarks.bigquery_jobs", "benchmarks.tasks_dag")


def main() -> None:
    started = time.perf_counter()
    took = []
    for module in SCRIPTS:
        print(f"== {module}", flush=True)
        begin = time.perf_counter()
        subprocess.run([sys.executable, "-m", module], check=True)
        took.append(f"{module.removeprefix('benchmarks.')} {time.perf_counter() - begin:.0f} s")
    print(f"== make bench took {time.perf_counter() - started:.0f} s ({', '.join(took)})")


if __name__ == "__main__":
    main()
