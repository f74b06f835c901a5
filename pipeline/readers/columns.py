"""Python values → one Arrow column, shared by the readers that parse rows themselves (json, xlsx).

A column whose values share no Arrow type (a number here, text there) becomes text: the validate
stage then types it from the text, exactly. Each reader says how its own kinds of value read as
text (JSON objects as JSON, spreadsheet dates in ISO form) with a converter.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa

Converter = Callable[[Any], str]
"""Text for a value that is neither None, a string nor a boolean."""


def as_text(value: Any, convert: Converter) -> str | None:
    """None and strings unchanged, booleans as `true` / `false`, anything else by `convert`."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return convert(value)


def column(values: list[Any], convert: Converter) -> pa.Array:
    """The values as one Arrow array: their common type, or text (via `as_text`) when they have none."""
    if not values:
        return pa.array([], pa.string())
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([as_text(v, convert) for v in values], pa.string())


def number_text(value: int | decimal.Decimal) -> str:
    """A number as text that depends on its value only, not on how the file wrote it or how a
    column stored it: plain digits, no exponent, no trailing zeros in the fraction
    (`2.50` → `2.5`, `1E+2` → `100`, `0E-9` and `-0.0` → `0`)."""
    if isinstance(value, int) or not value.is_finite():
        return str(value)
    if not value:
        return "0"
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def json_text(value: Any) -> str:
    """A nested value as JSON text, its numbers exact: a decimal is written as `number_text`
    spells it (json.dumps can only make it a float, losing digits, or a string)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)}: {json_text(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    if isinstance(value, decimal.Decimal):
        return number_text(value) if value.is_finite() else "null"
    if value is None or isinstance(value, bool | int | float | str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(json_scalar(value), ensure_ascii=False)


def json_scalar(value: Any) -> Any:
    """A value JSON has no type for, as JSON text writes it: dates and times in ISO form, bytes in
    base64, anything else by `str` (json.dumps' `default`; decimals: see `json_text`)."""
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)
