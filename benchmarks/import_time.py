"""Cold-start cost: `python -c 'import main'` next to `python -c 'import functions_framework'`.

Prints the median of several runs of each and their ratio (target: ≤ 1.5×).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7


def median_seconds(code: str) -> float:
    times = []
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "0"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)  # warm the .pyc cache
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    base = median_seconds("import functions_framework")
    ours = median_seconds("import main")
    print(f"{'import functions_framework':<28} {base * 1000:8.1f} ms")
    print(f"{'import main':<28} {ours * 1000:8.1f} ms")
    print(f"{'ratio':<28} {ours / base:8.2f}x   (target <= 1.50x)")


if __name__ == "__main__":
    main()
