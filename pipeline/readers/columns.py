"""Python values → one Arrow column, shared by the readers that parse rows themselves (json, xlsx).

A column whose values share no Arrow type (a number here, text there) becomes text: the validate
stage then types it from the text, exactly. Each reader says how its own kinds of value read as
text (JSON objects as JSON, spreadsheet dates in ISO form) with a converter.
"""

from __future__ import annotations

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
