"""Run every benchmark in one go and print their figures (`make bench`)."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ("benchmarks.import_time", "benchmarks.ingest_csv", "benchmarks.small_files", "benchmarks.formats",
           "benchmarks.bigquery_jobs", "benchmarks.tasks_dag")


def main() -> None:
    for module in SCRIPTS:
        print(f"== {module}", flush=True)
        subprocess.run([sys.executable, "-m", module], check=True)


if __name__ == "__main__":
    main()
