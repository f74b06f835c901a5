"""Typed conversion of one column to its BigQuery type, vectorised, with the exact rows that fail.

`convert` returns the column as `adapters.warehouse.types.arrow_type` plus the positions of the
values that cannot be converted, each with a reason. The common case is one pyarrow cast per
column. Only when a cast fails does a bisection over slices find the offending positions: a few
dozen extra casts for a handful of bad values, never a Python loop over the whole column.

Text values are trimmed of surrounding whitespace for non-text types, and a blank text value
is NULL there (a quoted "" in a numeric column); STRING and BYTES values are kept as they are.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from adapters.warehouse.types import arrow_type
from errors import PermanentError
from pipeline.readers.columns import json_scalar, json_text, number_text

Problems = list[tuple[int, str]]
_Conv = Callable[[pa.Array], tuple[pa.Array, list[int]]]

_TRUE = pa.array(["true", "t", "yes", "y", "1"])
_FALSE = pa.array(["false", "f", "no", "n", "0"])
_TIME = r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$"
# A time of day (`T03`, ` 03:04`, `T03:04:05.5`) followed by a zone (`Z`, `+01`, `+0100`, `-05:30`);
# the time is required, or the day of a plain date (`2024-01-02`) would read as a `-02` zone.
_ZONED = r"[T ]\d\d(:?\d\d(:?\d\d(\.\d+)?)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$"
_BIGNUMERIC = r"^[+-]?(\d{1,38}(\.\d{0,38})?|\.\d{1,38})$"
_MIDNIGHT = r"^(\d{4}-\d\d-\d\d)[T ]00(:00(:00(\.0*)?)?)?$"  # a date written as a datetime (Excel)
_TIME_OF_DAY = re.compile(r"^\s*\d{4}-\d\d-\d\d[T ](\d\d(:\d\d(:\d\d(\.\d+)?)?)?)")
_TS_UTC = pa.timestamp("us", tz="UTC")
_TS = pa.timestamp("us")


def convert(arr: pa.Array, bq_type: str, mode: str = "NULLABLE", *, column: str) -> tuple[pa.Array, Problems]:
    """`arr` as `arrow_type(bq_type, mode)`; bad positions become NULL and are returned with a reason.

    Raises:
        PermanentError: the file's values for this column are of a kind that can never be
            loaded as `bq_type` (e.g. a nested record into INT64).
    """
    arr = _plain(arr)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), arrow_type(bq_type, mode)), []
    if mode == "REPEATED":
        return _repeated(arr, bq_type, column)
    conv = _converter(arr.type, bq_type)
    if conv is None:
        raise PermanentError(f"column {column}: the file's {arr.type} values cannot be loaded as {bq_type}")
    try:
        typed, bad = conv(arr)
    except pa.ArrowInvalid as exc:
        # A conversion that fails on the column but on none of its values alone (a mix the
        # bisection cannot pin down) is still a property of the file: recorded, not retried.
        raise PermanentError(f"column {column}: cannot parse its values as {bq_type}: {exc}") from exc
    return typed, [(p, _reason(arr[p].as_py(), bq_type, column)) for p in bad]


def _reason(value: Any, bq_type: str, column: str) -> str:
    reason = f"column {column}: {_show(value)} is not a valid {bq_type}"
    if bq_type == "DATE":
        if isinstance(value, dt.datetime):
            return f"{reason}: it has a time of day ({value.time().isoformat()})"
        found = _TIME_OF_DAY.match(value) if isinstance(value, str) else None
        if found and found.group(1).strip("0:."):  # at midnight the date itself is what is wrong
            return f"{reason}: it has a time of day ({found.group(1)})"
    if bq_type == "NUMERIC" and (why := _beyond_numeric(value)):
        return f"{reason}: {why} (NUMERIC's limit; BIGNUMERIC keeps 38 of each)"
    return reason


def _beyond_numeric(value: Any) -> str | None:
    """Why a well-formed number does not fit NUMERIC (29 integer digits, 9 decimals), if it is one."""
    try:
        number = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        return None
    if not number.is_finite():
        return None
    number = number.normalize()
    if number and number.adjusted() >= 29:
        return "it has more than 29 digits before the decimal point"
    if int(number.as_tuple().exponent) < -9:
        return "it has more than 9 digits after the decimal point"
    return None


def _plain(arr: pa.Array) -> pa.Array:
    t = arr.type
    if pa.types.is_dictionary(t):
        return _plain(arr.dictionary_decode())
    if isinstance(t, pa.ExtensionType):
        return _plain(arr.storage)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return arr.cast(pa.string())
    if pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        return arr.cast(pa.binary())
    if pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t):
        return arr.cast(pa.list_(t.value_type))
    return arr


def _converter(t: pa.DataType, bq: str) -> _Conv | None:
    target = arrow_type(bq)
    text, nested = pa.types.is_string(t), _is_nested(t)
    integer, floating, dec = pa.types.is_integer(t), pa.types.is_floating(t), pa.types.is_decimal(t)
    number = integer or floating or dec
    if bq == "STRING":
        if text:
            return lambda a: (a, [])
        if dec:
            return _strict(_decimal_text)
        return _nested_to_json if nested else _strict(lambda a: a.cast(pa.string()))
    if nested:
        return _nested_to_json if bq == "JSON" else None
    if bq == "BYTES":
        return _base64 if text else (_strict(lambda a: a.cast(pa.binary())) if pa.types.is_binary(t) else None)
    if text:
        return _TEXT.get(bq)
    if bq == "FLOAT64" and dec:
        # Through the decimal's text: Arrow's decimal → double divides by a power of ten in
        # floating point and can miss the nearest double by one unit; parsing the text cannot.
        return _strict(lambda a: a.cast(pa.string()).cast(target))
    if bq == "FLOAT64" and integer:
        # The nearest double, as the same digits written as text get: past 2**53 a float column
        # holds an approximation of a large integer; a safe cast would reject it.
        return lambda a: (a.cast(target, safe=False), [])
    if bq in ("INT64", "NUMERIC", "FLOAT64") and (number or (bq == "INT64" and pa.types.is_boolean(t))):
        return _strict(lambda a: a.cast(target))
    if bq == "BIGNUMERIC" and number:
        return _blank_to_null(_bignumeric, _decimal_text if dec else lambda a: a.cast(pa.string()))
    if bq == "BOOL":
        if pa.types.is_boolean(t):
            return lambda a: (a, [])
        return _int_bool if integer else None
    if bq == "JSON" and (number or pa.types.is_boolean(t)):
        return _strict(_decimal_text if dec else lambda a: a.cast(pa.string()))
    if bq == "DATE" and pa.types.is_date(t):
        return _strict(lambda a: a.cast(target))
    if bq == "DATE" and pa.types.is_timestamp(t):
        return _exact_date
    if bq in ("DATETIME", "TIMESTAMP") and (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        return _strict(lambda a: _to_timestamp(a, target))
    if bq == "TIME" and pa.types.is_time(t):
        return _strict(lambda a: a.cast(target))
    return None


def _decimal_text(a: pa.Array) -> pa.Array:
    """Decimals as `number_text` writes them: Arrow's text carries the column's scale (`2.500`,
    `0E-9`) and switches to an exponent for small values (`1.000E-7`), so the same number read in
    another block (another scale) would be other text."""
    text = pc.replace_substring_regex(a.cast(pa.string()), r"^(-?\d+)(\.\d*?)0*$", r"\1\2")
    text = pc.replace_substring_regex(text, r"\.$", "")
    if not pc.any(pc.match_substring(text, "E")).as_py():
        return text
    return pa.array([None if v is None else number_text(decimal.Decimal(v)) if "E" in v else v
                     for v in text.to_pylist()], pa.string())


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_struct(t) or pa.types.is_map(t)


# -- strict casts and the bisection that finds their bad values ------------------------------

def _strict(fn: Callable[[pa.Array], pa.Array]) -> _Conv:
    """A cast that raises on any bad value → (result, bad positions)."""

    def run(arr: pa.Array) -> tuple[pa.Array, list[int]]:
        try:
            return fn(arr), []
        except pa.ArrowInvalid:
            pass
        bad = _bisect(arr, fn)
        return fn(_null_at(arr, bad)), bad

    return run


def _bisect(arr: pa.Array, fn: Callable[[pa.Array], Any]) -> list[int]:
    bad: list[int] = []
    stack = [(0, len(arr))]
    while stack:
        start, length = stack.pop()
        try:
            fn(arr.slice(start, length))
        except pa.ArrowInvalid:
            if length == 1:
                bad.append(start)
            else:
                half = length // 2
                stack += [(start + half, length - half), (start, half)]
    return sorted(bad)


def _null_at(arr: pa.Array, positions: list[int]) -> pa.Array:
    if not positions:
        return arr
    mask = np.zeros(len(arr), dtype=bool)
    mask[positions] = True
    return pc.if_else(pa.array(mask), pa.nulls(len(arr), arr.type), arr)


def _blank_to_null(conv: _Conv, prepare: Callable[[pa.Array], pa.Array] | None = None) -> _Conv:
    """Trim text and make blank values NULL before `conv` (text sources of non-text types)."""

    def run(arr: pa.Array) -> tuple[pa.Array, list[int]]:
        if prepare is not None:
            arr = prepare(arr)
        trimmed = pc.utf8_trim_whitespace(arr)
        blank = pc.equal(trimmed, "")
        if pc.any(blank).as_py():
            trimmed = pc.if_else(blank, pa.nulls(len(arr), pa.string()), trimmed)
        return conv(trimmed)

    return run


def _text(fn: Callable[[pa.Array], pa.Array]) -> _Conv:
    """Text → type: the plain cast first (fast path); trim/blank handling and bisection only on failure."""
    return _text_or(fn, _blank_to_null(_strict(fn)))


def _text_or(fast: Callable[[pa.Array], pa.Array], slow: _Conv) -> _Conv:
    """`fast` when it accepts every value (it must agree with `slow` on those), else `slow`."""

    def run(arr: pa.Array) -> tuple[pa.Array, list[int]]:
        try:
            return fast(arr), []
        except pa.ArrowInvalid:
            return slow(arr)

    return run


# -- text sources ---------------------------------------------------------------------------

def _int64(a: pa.Array) -> pa.Array:
    if pc.any(pc.starts_with(a, "0x")).as_py() or pc.any(pc.starts_with(a, "0X")).as_py():
        raise pa.ArrowInvalid("hexadecimal integer")
    return a.cast(pa.int64())


def _timestamp(a: pa.Array) -> pa.Array:
    """ISO 8601 with a zone → that instant; without a zone → UTC (one cast when the column agrees)."""
    try:
        return a.cast(_TS_UTC)
    except pa.ArrowInvalid:
        pass
    try:
        return a.cast(_TS).cast(_TS_UTC)
    except pa.ArrowInvalid:
        return _timestamp_each(a)


def _timestamp_each(a: pa.Array) -> pa.Array:
    """Zoned and zone-less values mixed: each value's form decides, so that a value fails or passes
    the same way alone as in any slice (what the bisection that finds bad values relies on)."""
    zoned = pc.fill_null(pc.match_substring_regex(a, _ZONED), False)
    nulls = pa.nulls(len(a), pa.string())
    aware = pc.if_else(zoned, a, nulls).cast(_TS_UTC)
    naive = pc.if_else(zoned, nulls, a).cast(_TS).cast(_TS_UTC)
    return pc.if_else(zoned, aware, naive)


def _time(a: pa.Array) -> pa.Array:
    ok = pc.match_substring_regex(a, _TIME)
    if not pc.all(ok).as_py():
        raise pa.ArrowInvalid("not a time")
    stamped = pc.binary_join_element_wise("1970-01-01T", a, "")
    return stamped.cast(_TS).cast(pa.time64("us"))


def _bool(a: pa.Array) -> tuple[pa.Array, list[int]]:
    lower = pc.ascii_lower(a)
    true, false = pc.is_in(lower, _TRUE), pc.is_in(lower, _FALSE)
    out = pc.if_else(true, True, pc.if_else(false, pa.scalar(False), pa.scalar(None, pa.bool_())))
    return out, _positions(pc.and_(pc.is_valid(a), pc.invert(pc.or_(true, false))))


def _bignumeric(a: pa.Array) -> tuple[pa.Array, list[int]]:
    ok = pc.match_substring_regex(a, _BIGNUMERIC)
    bad = _positions(pc.invert(pc.fill_null(ok, True)))
    return _null_at(a, bad), bad


def _json(a: pa.Array) -> tuple[pa.Array, list[int]]:
    bad = []
    for i, value in enumerate(a.to_pylist()):
        if value is not None:
            try:
                json.loads(value)
            except ValueError:
                bad.append(i)
    return _null_at(a, bad), bad


def _base64(a: pa.Array) -> tuple[pa.Array, list[int]]:
    out: list[bytes | None] = []
    bad = []
    for i, value in enumerate(a.to_pylist()):
        try:
            out.append(None if value is None else base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            out.append(None)
            bad.append(i)
    return pa.array(out, pa.binary()), bad


_TEXT: dict[str, _Conv] = {
    "INT64": _text(_int64),
    "NUMERIC": _text(lambda a: a.cast(pa.decimal128(38, 9))),
    "FLOAT64": _text(lambda a: a.cast(pa.float64())),
    "DATE": _text_or(lambda a: a.cast(pa.date32()), _blank_to_null(_strict(
        lambda a: pc.replace_substring_regex(a, _MIDNIGHT, r"\1").cast(pa.date32())))),
    "DATETIME": _text(lambda a: a.cast(_TS)),
    "TIMESTAMP": _text_or(_timestamp, _blank_to_null(_strict(_timestamp_each))),
    "TIME": _blank_to_null(_strict(_time)),
    "BOOL": _text_or(lambda a: a.cast(pa.bool_()), _blank_to_null(_bool)),
    "BIGNUMERIC": _blank_to_null(_bignumeric),
    "JSON": _blank_to_null(_json),
}


# -- typed sources --------------------------------------------------------------------------

def _to_timestamp(a: pa.Array, target: pa.DataType) -> pa.Array:
    if pa.types.is_date(a.type):
        return a.cast(_TS).cast(target)
    if target.tz is not None and a.type.tz is None:  # naive → UTC
        return a.cast(_TS).cast(target)
    if target.tz is None and a.type.tz is not None:  # an instant → its UTC wall time
        return a.cast(_TS_UTC).cast(_TS)
    return a.cast(target)


def _exact_date(a: pa.Array) -> tuple[pa.Array, list[int]]:
    """Timestamps → DATE only at midnight; any time of day is a bad value, not silently dropped."""
    days = a.cast(pa.date32())
    back = days.cast(a.type)
    bad = _positions(pc.not_equal(back, a))
    return _null_at(days, bad), bad


def _int_bool(a: pa.Array) -> tuple[pa.Array, list[int]]:
    bad = _positions(pc.invert(pc.fill_null(pc.is_in(a, pa.array([0, 1], a.type)), True)))
    return _null_at(a, bad).cast(pa.bool_()), bad


def _nested_to_json(a: pa.Array) -> tuple[pa.Array, list[int]]:
    # json.dumps (in C) unless a decimal is inside: it would become a float and lose digits.
    dump = json_text if _holds_decimal(a.type) else _dumps
    return pa.array([None if v is None else dump(v) for v in a.to_pylist()], pa.string()), []


def _dumps(value: Any) -> str:
    return json.dumps(value, default=json_scalar, ensure_ascii=False)  # no decimal here: see _holds_decimal


def _holds_decimal(t: pa.DataType) -> bool:
    if pa.types.is_decimal(t):
        return True
    if pa.types.is_struct(t):
        return any(_holds_decimal(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_map(t):
        return _holds_decimal(t.key_type) or _holds_decimal(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_decimal(t.value_type)
    return False


# -- REPEATED -------------------------------------------------------------------------------

def _repeated(arr: pa.Array, bq_type: str, column: str) -> tuple[pa.Array, Problems]:
    reasons: dict[int, str] = {}
    if pa.types.is_string(arr.type):
        arr, not_arrays = _json_lists(arr)
        reasons.update((p, f"column {column}: {_show(v)} is not a JSON array") for p, v in not_arrays)
    if not pa.types.is_list(arr.type):
        raise PermanentError(f"column {column} is REPEATED but the file's values are {arr.type}, not arrays")
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets -= offsets[0]
    parents = np.repeat(np.arange(len(arr)), np.diff(offsets))
    typed, problems = convert(values, bq_type, column=column)
    for pos, reason in problems:
        reasons.setdefault(int(parents[pos]), reason)
    if typed.null_count > len(problems):
        bad = set(dict(problems))
        for pos in _positions(pc.is_null(typed)):
            if pos not in bad:
                reasons.setdefault(int(parents[pos]), f"column {column}: an array element is NULL")
    rebuilt = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), typed, mask=pc.is_null(arr))
    rows = sorted(reasons)
    return _null_at(rebuilt, rows), [(r, reasons[r]) for r in rows]


def _json_lists(arr: pa.Array) -> tuple[pa.Array, list[tuple[int, str]]]:
    """Text cells holding JSON arrays (e.g. a CSV column for a REPEATED field) → list<string>."""
    out: list[list[str | None] | None] = []
    bad: list[tuple[int, str]] = []
    for i, value in enumerate(arr.to_pylist()):
        try:
            items = None if value is None or not value.strip() else json.loads(value)
        except ValueError:
            items = False
        if items is not None and not isinstance(items, list):
            bad.append((i, value))
            items = None
        out.append(None if items is None else [_element_text(v) for v in items])
    return pa.array(out, pa.list_(pa.string())), bad


def _element_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _positions(mask: pa.Array) -> list[int]:
    return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)).tolist()


def _show(value: Any) -> str:
    if isinstance(value, decimal.Decimal):  # a JSON or Parquet number: as a number, not Python's repr
        text = number_text(value)
    else:
        text = repr(value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value)
    return text if len(text) <= 80 else text[:77] + "..."
