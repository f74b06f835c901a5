"""The README's commands name files and folders that exist in a fresh clone."""

from __future__ import annotations

import re

from config.settings import PROJECT_ROOT


def test_readme_paths_exist() -> None:
    text = (PROJECT_ROOT / "README.md").read_text()
    paths = re.findall(r"caf ingest (\S+)", text) + re.findall(r"caf (?:registry|tasks) sync (\S+)", text)
    assert paths, "the README shows no ingest / sync command any more"
    missing = [p for p in paths if not (PROJECT_ROOT / p).exists()]
    assert missing == []
