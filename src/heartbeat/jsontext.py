"""Strict JSON (RFC 8259) in and out: the one reader of clients' JSON and the one writer of answers.

In: Python's reader takes more than JSON is. It gives ``NaN`` and ``Infinity``, turns ``1e999`` into
infinity without a word, and lets ``"\\ud800"`` (a lone surrogate, which no UTF-8 text can hold)
into strings and object keys; databases and other readers refuse all of them, so a value holding one
could be stored and then never sent back. :func:`parse` reads the syntax (UTF-8, no ``NaN``);
:func:`check_value` refuses what parses but cannot be stored and sent back: lone surrogates, numbers
beyond the largest double, nesting past ``MAX_JSON_DEPTH``. :func:`loads` does both.

Out: :func:`dumps` writes only strict JSON, in UTF-8. A value stored before these checks existed (a
lone surrogate, a non-finite number) is written repaired, U+FFFD for the surrogate and ``null`` for
the number, with a warning in the log: left as it is, it would break every read that meets it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from typing import Any

log = logging.getLogger(__name__)

MAX_JSON_DEPTH = 64
LARGEST_DOUBLE = sys.float_info.max
REPLACEMENT_CHARACTER = "\ufffd"
SURROGATE = re.compile("[\ud800-\udfff]")


def loads(text: str | bytes) -> Any:
    """``text`` parsed and checked; ValueError for anything that is not strict JSON of finite doubles
    and Unicode text within the depth limit."""
    value = parse(text)
    check_value(value)
    return value


def parse(text: str | bytes) -> Any:
    """``text`` (bytes must be UTF-8) parsed as JSON: ValueError for ``NaN``, ``Infinity`` and
    anything else that is not JSON syntax. The value is not checked yet: see :func:`check_value`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # json.loads would take UTF-8-encoded surrogates from bytes
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def check_value(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """ValueError for a lone surrogate in a string or key, a number beyond the largest double (an
    infinity, as ``1e999`` parses), NaN, or arrays and objects nested deeper than ``max_depth``.

    Walks one level of the tree at a time, each checked in bulk: this runs on every body.
    """
    level, depth = [value], 0
    while level:
        texts = [item for item in level if type(item) is str]
        if texts and SURROGATE.search("".join(texts)):
            raise ValueError("a string holds a lone surrogate, which is not Unicode text")
        floats = [item for item in level if type(item) is float]
        if floats and not all(map(math.isfinite, floats)):
            raise ValueError("a number is beyond the largest double")
        integers = [item for item in level if type(item) is int]
        if integers and (max(integers) > LARGEST_DOUBLE or min(integers) < -LARGEST_DOUBLE):
            raise ValueError("an integer is beyond the largest double")
        containers = [item for item in level if type(item) is dict or type(item) is list]
        if not containers:
            return
        depth += 1
        if depth > max_depth:
            raise ValueError(f"JSON nested deeper than {max_depth} levels")
        level = []
        for container in containers:
            if type(container) is dict:
                level.extend(container)  # the keys, strings to check like any other
                level.extend(container.values())
            else:
                level.extend(container)


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: no lone surrogate (the only str that UTF-8 cannot encode)."""
    return text.isascii() or SURROGATE.search(text) is None


def dumps(value: Any) -> bytes:
    """``value`` as strict JSON in UTF-8: never ``NaN``, ``Infinity`` or a lone surrogate."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        log.warning("an answer held a lone surrogate or a non-finite number, stored before they were refused: repaired")
        return json.dumps(_repaired(value), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _repaired(value: Any) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD and non-finite numbers by None."""
    if isinstance(value, str):
        return SURROGATE.sub(REPLACEMENT_CHARACTER, value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_repaired(key): _repaired(child) for key, child in value.items()}
    if isinstance(value, list | tuple):
        return [_repaired(child) for child in value]
    return value
