"""The NDJSON reader's two paths give the same warehouse values, whatever the block boundaries.

A block is parsed by pyarrow when that is exact, else line by line (a malformed line, a number
float64 cannot hold, ...): which path a row takes depends on its neighbours and on where blocks
end. Random files of every JSON kind, loaded into every type a column of that kind can be
loaded as, must validate to the same values and bad rows both ways.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest

from errors import PermanentError
from pipeline.read import read_batches
from pipeline.readers import ndjson_blocks
from pipeline.source import SourceOptions
from pipeline.validate import plan_header, validate_batch
from values.tables import Column, TableTarget

TARGETS = {"fraction": ["NUMERIC", "FLOAT64", "STRING", "BIGNUMERIC", "JSON"],
           "integer": ["INT64", "NUMERIC", "FLOAT64", "STRING"],
           "numeric text": ["NUMERIC", "STRING", "FLOAT64"], "text": ["STRING"],
           "number or text": ["STRING", "NUMERIC", "FLOAT64"], "list": ["JSON", "STRING"],
           "object": ["JSON", "STRING"], "bool": ["BOOL", "STRING"], "timestamp": ["STRING", "TIMESTAMP"]}


def number(r: random.Random) -> str:
    return r.choice([
        lambda: str(r.randint(-10**6, 10**6)),
        lambda: str(r.randint(-10**25, 10**25)),  # wider than int64
        lambda: f"{r.randint(-10**6, 10**6)}.{r.randint(0, 10**r.randint(1, 9))}",
        lambda: f"{r.randint(1, 9)}.{r.randint(0, 999)}e{r.randint(-8, 8)}",
        lambda: repr(round(r.random() * 10 ** r.randint(-3, 8), r.randint(0, 9))),
        lambda: f"{r.randint(0, 10**18)}.{r.randint(0, 10**9)}",  # more digits than float64 holds
        lambda: r.choice(["0.1", "1.0", "-0.0", "0", "1e2", "2.50", "0.000"]),
    ])()


def value(r: random.Random, kind: str) -> str:
    if r.random() < 0.08:
        return "null"
    return {
        "fraction": lambda: number(r),
        "integer": lambda: str(r.randint(-10**r.randint(1, 18), 10**r.randint(1, 18))),
        "numeric text": lambda: json.dumps(number(r)),
        "text": lambda: json.dumps(r.choice(["a", "b,c", "1.5", "x" * r.randint(0, 30), "é", "12"])),
        "timestamp": lambda: json.dumps(r.choice(["2026-01-02T03:04:05Z", "2026-01-02 03:04:05",
                                                  "2026-01-02T03:04:05.123+01:00"])),
        "number or text": lambda: r.choice([number(r), json.dumps(number(r))]),
        "list": lambda: "[" + ",".join(number(r) for _ in range(r.randint(0, 3))) + "]",
        "object": lambda: '{"k": ' + number(r) + ', "s": ' + json.dumps(number(r)) + "}",
        "bool": lambda: r.choice(["true", "false"]),
    }[kind]()


def load(data: bytes, target: TableTarget, block_size: int) -> Any:
    """The validated rows and bad rows, or the error that fails the file."""
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    plan = None
    try:
        for batch in read_batches(io.BytesIO(data), SourceOptions(format="ndjson", block_size=block_size), name="f"):
            plan = plan or plan_header(batch.columns, target, column_map={}, allow_new_columns=False, header=True,
                                       keys_per_row=True)
            validated = validate_batch(batch, plan, target)
            bad += [(b.row, b.reason) for b in [*batch.bad_rows, *validated.bad_rows]]
            rows += validated.data.to_pylist()
    except PermanentError as exc:
        return f"file fails: {exc}"
    return rows, sorted(bad)


@pytest.mark.parametrize("seed", range(60))
def test_pyarrow_blocks_and_line_by_line_parsing_load_the_same_values(seed: int, monkeypatch) -> None:
    r = random.Random(seed)
    kinds = {f"c{i}": r.choice(list(TARGETS)) for i in range(r.randint(1, 6))}
    target = TableTarget("d", "t", tuple(Column(name, r.choice(TARGETS[kind])) for name, kind in kinds.items()))
    lines = ["{" + ", ".join(f'"{name}": {value(r, kind)}' for name, kind in kinds.items() if r.random() > 0.05) + "}"
             for _ in range(r.randint(1, 600))]
    data = ("\n".join(lines) + "\n").encode()
    block_size = r.choice([256, 2048, 8192, 1 << 20])
    blocks = load(data, target, block_size)
    monkeypatch.setattr(ndjson_blocks, "parse_block", lambda *args, **kwargs: None)  # line by line only
    assert blocks == load(data, target, block_size)


@pytest.mark.parametrize("seed", range(30))
def test_block_boundaries_change_no_value_and_no_row_number(seed: int) -> None:
    """Malformed lines, blank lines and non-objects among good records, read in blocks of three
    sizes: the same rows, numbered the same, and the same rows rejected. (A bad row's reason may
    quote a number as text in one reading and not in another: a block mixing numbers and text in
    a column is read as text.)"""
    r = random.Random(1000 + seed)
    kinds = {f"c{i}": r.choice(list(TARGETS)) for i in range(r.randint(1, 5))}
    target = TableTarget("d", "t", tuple(Column(name, r.choice(TARGETS[kind])) for name, kind in kinds.items()))
    lines = [r.choice(["", '{"c0": 1,', "[1, 2]"]) if r.random() < 0.08 else
             "{" + ", ".join(f'"{name}": {value(r, kind)}' for name, kind in kinds.items() if r.random() > 0.05) + "}"
             for _ in range(r.randint(1, 400))]
    data = ("\n".join(lines) + "\n").encode()
    readings = []
    for block_size in (256, 2048, 1 << 20):
        outcome = load(data, target, block_size)
        readings.append(outcome if isinstance(outcome, str) else (outcome[0], [row for row, _ in outcome[1]]))
    assert readings[0] == readings[2] and readings[1] == readings[2]
