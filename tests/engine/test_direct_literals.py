"""The engine's one-round-trip path writes values as literals into EXECUTE: they must stay data."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from database.direct import direct, sql_literal

HOSTILE = [
    "plain", "it's", "back\\slash", "\\'; DROP TABLE tasks; --", "$$ dollar $$", "$tag$ x $tag$",
    "ünïcødé ✓ 日本", "line\nbreak\ttab", "E'x'", "\\x41\\u0041", "'" * 50, "\\" * 51,
]


@pytest.mark.parametrize("value", HOSTILE)
def test_string_literals_round_trip_unchanged(deps, value: str) -> None:
    with direct(deps.sessions) as conn:
        for setting in ("on", "off"):
            rows = conn.script(f"SET standard_conforming_strings = {setting}; SELECT {sql_literal(value)}")
            assert rows[-1][0] == value


def test_other_literals_and_refusals(deps) -> None:
    when = datetime(2026, 11, 20, 12, 30, 1, 123456, tzinfo=UTC)
    with direct(deps.sessions) as conn:
        rows = conn.script(f"SELECT {sql_literal(42)}, {sql_literal(True)}, {sql_literal(None)}, {sql_literal(when)}")
    assert rows[-1] == [42, True, None, when]
    with pytest.raises(ValueError):
        sql_literal("nul\x00byte")
    with pytest.raises(ValueError):
        sql_literal(datetime(2026, 1, 1))  # naive
    with pytest.raises(TypeError):
        sql_literal(1.5)
    with deps.engine.connect() as check:  # the hostile strings above never ran as SQL
        assert check.exec_driver_sql("SELECT to_regclass('tasks')").scalar() is not None
