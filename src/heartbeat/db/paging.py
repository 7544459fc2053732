"""Keyset paging: a cursor is the sort key of the last row of the previous page, written out readably.

A page is read with one row more than it shows: that row's presence, not a full page, says there is
a next page, so the last page always answers ``next_cursor: null``.

Each list has its :class:`CursorGrammar`: the regular expression a cursor must match, which the
OpenAPI document states as the ``pattern`` of the ``cursor`` parameter, so that a string is a cursor
if and only if it matches (anything else answers 400 "cursor is not valid"):

- images and jobs, in upload order: ``<uploaded_date>~<id>``, the date as Python's ``repr`` of the
  double when that is plain digits (``1700000000.25``), else its exact decimal expansion
  (``1e+16`` is written ``10000000000000000``);
- software, by name: ``<name>``;
- rows of an extra table, by id: ``<id>``, a non-negative integer below 10^18.
"""

from __future__ import annotations

import dataclasses
import decimal
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import peewee

from heartbeat.errors import InvalidInput

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LARGEST_DOUBLE = sys.float_info.max

Row = TypeVar("Row")
M = TypeVar("M", bound=peewee.Model)


@dataclasses.dataclass(frozen=True)
class CursorGrammar:
    """How one kind of cursor is written (``write``: sort key -> text) and read (``read``: text that
    matches ``pattern`` -> sort key). The pattern is an ECMA-262 regular expression, as JSON Schema
    wants it, that Python reads alike."""

    pattern: str
    write: Callable[[Any], str]
    read: Callable[[str], tuple[Any, ...]]

    def parse(self, cursor: str | None) -> tuple[Any, ...] | None:
        """The sort key ``cursor`` names (None for no cursor); :class:`InvalidInput` (400) for a string
        that does not match the pattern."""
        if cursor is None:
            return None
        if re.fullmatch(self.pattern, cursor) is None:  # fullmatch: Python's "$" would let a final newline by
            raise InvalidInput("cursor is not valid")
        return self.read(cursor)


# Python's repr of a double when it is plain digits; it is exact, and short for every Unix time.
REPR_NUMBER = re.compile(r"[0-9]{1,16}(\.[0-9]{1,17})?")
# What an exact decimal expansion of a double needs: 309 integer digits (the largest double), 1074
# fraction digits (the smallest). Longer would name no double; anything past the largest is clamped.
NUMBER_PATTERN = r"-?[0-9]{1,309}(\.[0-9]{1,1074})?"
ID_PATTERN = r"[A-Za-z0-9._~-]{1,32}"  # an image ID: URL-safe, at most 32 characters


def write_number(number: float) -> str:
    """A double as a cursor writes it: its repr when that is plain digits, else its exact expansion."""
    text = repr(number)
    return text if REPR_NUMBER.fullmatch(text) else format(decimal.Decimal(number), "f")


def read_number(text: str) -> float:
    """The double nearest to ``text`` (exact for what :func:`write_number` wrote); a value past the
    largest double is clamped to it, a position after (or before) everything."""
    return max(-LARGEST_DOUBLE, min(LARGEST_DOUBLE, float(text)))


def _read_upload_position(cursor: str) -> tuple[float, str]:
    date, _, image_id = cursor.partition("~")  # the first "~": a date has none, an ID may
    return read_number(date), image_id


UPLOAD_ORDER = CursorGrammar(
    pattern=f"^{NUMBER_PATTERN}~{ID_PATTERN}$",
    write=lambda key: f"{write_number(key[0])}~{key[1]}",
    read=_read_upload_position,
)
NAME_ORDER = CursorGrammar(
    pattern="^[a-z][a-z0-9_]{0,47}$",  # the software name pattern
    write=lambda key: key[0],
    read=lambda cursor: (cursor,),
)
ROW_ORDER = CursorGrammar(
    pattern="^[0-9]{1,18}$",
    write=lambda key: str(key[0]),
    read=lambda cursor: (int(cursor),),
)


def keyset_page(
    query: peewee.ModelSelect[M],
    order: tuple[peewee.Field, ...],
    grammar: CursorGrammar,
    cursor: str | None,
    limit: int,
    *,
    descending: bool = False,
    key: Callable[[M], tuple[Any, ...]] | None = None,
) -> tuple[list[M], str | None]:
    """One page of ``query`` in the order of the ``order`` columns (a unique sort key): the rows past
    ``cursor`` (written in ``grammar``; :class:`InvalidInput` when it is not), at most ``limit`` of
    them, and the cursor of the next page, or None on the last one. One statement, along the index
    the order names. ``key``: a row's sort key, when its attributes are not named as the ``order``
    columns (those of a joined table)."""
    position = grammar.parse(cursor)
    if position is not None:
        query = query.where(after(order, position, descending=descending))
    query = query.order_by(*(column.desc() if descending else column for column in order)).limit(limit + 1)
    rows = list(query)
    key = key or (lambda row: tuple(getattr(row, column.name) for column in order))
    return page_of(rows, limit, key, grammar)


def page_of(
    rows: list[Row], limit: int, key: Callable[[Row], tuple[Any, ...]], grammar: CursorGrammar
) -> tuple[list[Row], str | None]:
    """``rows`` read with ``limit + 1``: the page to show, and the cursor of the next page or None."""
    if len(rows) <= limit:
        return rows, None
    shown = rows[:limit]
    return shown, grammar.write(key(shown[-1]))


def after(columns: tuple[peewee.Field, ...], key: tuple[Any, ...], *, descending: bool = False) -> peewee.Expression:
    """The rows past ``key`` in the order of ``columns`` (the sort key, ascending unless ``descending``)."""
    first, *rest = columns
    past: peewee.Expression = first < key[0] if descending else first > key[0]
    if not rest:
        return past
    tie: peewee.Expression = first == key[0]
    return past | (tie & after(tuple(rest), key[1:], descending=descending))
