"""Run Alembic programmatically (`caf db upgrade`, run/scripts/migrate, tests).

Every local CLI command checks that the schema is at head before it works (`cli.context.open_deps`):
that check reads the revision on a pooled connection the command then keeps using, and the head from the
version files' `revision` / `down_revision` lines, so it imports neither Alembic nor its
migration scripts (~0.15 s of a command's start-up); Alembic runs only when there is work to do.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def revision_of(engine: Engine) -> str | None:
    """The database's revision, read on a connection of the caller's pool (no engine of its own):
    None when never migrated; several heads (a branched history) come back comma-joined, which
    never equals `head()`."""
    from sqlalchemy import exc, text

    with engine.connect() as conn:
        try:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        except exc.ProgrammingError:  # undefined_table: never migrated
            return None
    return ",".join(sorted(versions)) or None


def head() -> str | None:
    """The head revision of migrations/versions (what `upgrade head` reaches)."""
    return _head_from_files() or _alembic_head()


_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


@functools.cache
def _head_from_files() -> str | None:
    """The one revision no other file revises, read from the files' assignments without importing
    them; None (Alembic decides) when a file is not in that plain form or there is not exactly one."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        found = dict(_ASSIGNMENT.findall(path.read_text(encoding="utf-8")))
        try:
            revision = ast.literal_eval(found["revision"])
            down = ast.literal_eval(found["down_revision"])
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(revision, str):
            return None
        revisions.add(revision)
        revised.update([down] if isinstance(down, str) else (down or ()))
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()
