"""A strict reader of the server's answers, written apart from the server's own (``heartbeat.jsontext``).

RFC 8259 JSON exchanged between systems is UTF-8, and has no NaN, no Infinity and no lone surrogate.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any


def strict_json(body: bytes) -> Any:
    """``body`` parsed; AssertionError naming the fault when it is not strict JSON."""
    try:
        text = body.decode("utf-8")  # strict: an encoded lone surrogate is not UTF-8
    except UnicodeDecodeError as error:
        raise AssertionError(f"the answer is not UTF-8: {error}") from None
    value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate from a \\ud800 escape fails here
    except UnicodeEncodeError as error:
        raise AssertionError(f"the answer holds a lone surrogate: {error}") from None
    return value


def _no_constant(constant: str) -> Any:
    raise AssertionError(f"the answer holds {constant}, which is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    assert math.isfinite(number), f"the answer holds {text}, which no double can hold"
    return number


def storable(body: bytes, max_depth: int = 64) -> bool:
    """Whether ``body`` is JSON the contract lets a server store: UTF-8, finite doubles, no lone
    surrogate, arrays and objects nested at most ``max_depth`` deep."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (AssertionError, ValueError, RecursionError):  # UnicodeError is a ValueError
        return False
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, int) and abs(item) > sys.float_info.max:
            return False
        if isinstance(item, dict | list):
            if depth + 1 > max_depth:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True
