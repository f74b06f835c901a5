"""`caf` as a user runs it: the real entry function (`cli.app.run`), its exit code and what it printed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def words(self) -> str:
        """stdout with every run of whitespace as one space: phrases survive 80-column wrapping
        (a long path on the same line moves where the terminal breaks it)."""
        return " ".join(self.out.split())


@pytest.fixture
def caf(deps, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `caf ARGS` in this process on the test's Deps; 80 columns like a default terminal."""
    from cli.app import run

    monkeypatch.setenv("COLUMNS", "80")

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


def write_yaml(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder


CAF = Path(sys.executable).parent / "caf"
SETTINGS = ("DATABASE_URL", "CLOUD_SQL_INSTANCE", "WAREHOUSE_URL", "STORAGE_URL", "LOG_LEVEL", "APP_ENV",
            "GCP_PROJECT", "PUBLISHER__PROJECT", "DATA_DIR")


def caf_process(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `caf` script in a child process (APP_ENV=test, this test's folders, 80 columns)."""
    from config.settings import PROJECT_ROOT

    base = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    base.update({"APP_ENV": "test", "DATA_DIR": str(tmp_path / "local"), "COLUMNS": "80",
                 "WAREHOUSE_URL": f"duckdb://{tmp_path / 'wh.duckdb'}", "STORAGE_URL": f"file://{tmp_path / 'b'}"})
    base.update(env)
    return subprocess.run([str(CAF), *args], capture_output=True, text=True, timeout=180, env=base,
                          cwd=PROJECT_ROOT, check=False)
