"""Strict JSON from clients: no ``NaN`` or ``Infinity`` (Python's reader takes them, JSON has no such
values, and databases and other readers refuse them), and no nesting past ``MAX_JSON_DEPTH``."""

from __future__ import annotations

import json
from typing import Any

MAX_JSON_DEPTH = 64


def loads(text: str | bytes) -> Any:
    """Parse ``text``; ValueError for anything that is not strict JSON within the depth limit."""
    try:
        value = json.loads(text, parse_constant=_refuse)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if _nesting_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _nesting_depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value``, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
