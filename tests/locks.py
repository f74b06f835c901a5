"""Hold a DuckDB file's single-writer lock from another process, as a second `caf` process would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_LOCKER = (
    "import sys, time\n"
    "import duckdb\n"
    "while True:\n"
    "    try:\n"
    "        conn = duckdb.connect(sys.argv[1])\n"
    "        break\n"
    "    except duckdb.IOException:\n"
    "        time.sleep(0.05)  # the test process releases the file once idle\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


class DuckDbLock:
    """`with DuckDbLock(path):` another process holds the warehouse file until the block ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> DuckDbLock:
        self.proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(self.path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "locked"
        return self

    def release(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.release()
