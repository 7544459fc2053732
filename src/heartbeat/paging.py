"""Keyset paging: a cursor is the sort key of the last row of the previous page."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from heartbeat.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def encode_cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, length: int) -> list[Any] | None:
    """The sort key inside ``cursor`` (none for an empty one); :class:`InvalidInput` when it is not one of ours."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidInput("cursor is not valid") from None
    if not isinstance(key, list) or len(key) != length:
        raise InvalidInput("cursor is not valid")
    return key


def next_cursor(rows: list[Any], limit: int, key: Any) -> str | None:
    """The cursor for the page after ``rows``, or None when this page is the last."""
    return encode_cursor(key(rows[-1])) if len(rows) == limit else None
