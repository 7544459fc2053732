"""Keyset paging: a cursor is the sort key of the last row of the previous page.

A page is read with one row more than it shows: that row's presence, not a full page, says there is
a next page, so the last page always answers ``next_cursor: null``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from heartbeat import jsontext
from heartbeat.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Row = TypeVar("Row")
NUMBER = (int, float)
TEXT = (str,)


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kinds: Sequence[tuple[type, ...]]) -> list[Any] | None:
    """The sort key inside ``cursor`` (None for no cursor), each part of the kind ``kinds`` names;
    :class:`InvalidInput` (400) for anything that is not a cursor of ours."""
    if not cursor:
        return None
    try:
        key = jsontext.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidInput("cursor is not valid") from None
    if not isinstance(key, list) or len(key) != len(kinds):
        raise InvalidInput("cursor is not valid")
    for part, kind in zip(key, kinds, strict=True):
        if isinstance(part, bool) or not isinstance(part, kind):
            raise InvalidInput("cursor is not valid")
    return key


def page_of(rows: list[Row], limit: int, key: Callable[[Row], list[Any]]) -> tuple[list[Row], str | None]:
    """``rows`` read with ``limit + 1``: the page to show, and the cursor of the next page or None."""
    if len(rows) <= limit:
        return rows, None
    shown = rows[:limit]
    return shown, encode_cursor(key(shown[-1]))
