"""Source globs on object names, shared by the table registry and upload jobs' staging entities."""

from __future__ import annotations

import fnmatch


def glob_matches(pattern: str, name: str) -> bool:
    """Glob on object names: `*` stays within one path segment, `**` crosses segments."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(name, pattern.replace("**", "*"))
    return fnmatch.fnmatchcase(name, pattern) and name.count("/") == pattern.count("/")


def source_matches(glob: str, name: str) -> bool:
    """`glob_matches`, also for the name without a `.gz` suffix (gzipped uploads match their table)."""
    return glob_matches(glob, name) or (name.endswith(".gz") and glob_matches(glob, name[:-3]))
