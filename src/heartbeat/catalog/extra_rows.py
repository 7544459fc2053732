"""A software's extra tables: checking submitted rows against the declared columns, and reading them."""

from __future__ import annotations

import math
from typing import Any

from heartbeat.db.models import Software, column_attribute, extra_table_model
from heartbeat.db.paging import ROW_ORDER, keyset_page
from heartbeat.errors import NotFound, Refused

MAX_ROWS_PER_SUBMIT = 10_000


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


VALUE_CHECKS = {
    "text": lambda value: isinstance(value, str),
    "int": _is_int,
    "float": _is_number,
    "bool": lambda value: isinstance(value, bool),
    "json": lambda value: True,
    "time": _is_number,
}


def prepare_rows(software: Software, rows: Any) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Check ``{"<table>": [{column: value}, ...]}`` and map it onto the tables' models.

    Raises :class:`Refused` (422) naming the first bad table, row or column.
    """
    if rows is None:
        return []
    if not isinstance(rows, dict):
        raise Refused("rows must be an object of table name to a list of rows")
    prepared = []
    total = 0
    for table, table_rows in rows.items():
        columns = software.tables.get(table)
        if columns is None:
            raise Refused(f"{software.name} has no table {table!r}")
        if not isinstance(table_rows, list):
            raise Refused(f"rows of {table!r} must be a list")
        total += len(table_rows)
        if total > MAX_ROWS_PER_SUBMIT:
            raise Refused(f"at most {MAX_ROWS_PER_SUBMIT} rows per result")
        mapped = [_map_row(table, columns, index, row) for index, row in enumerate(table_rows)]
        prepared.append((extra_table_model(software.id, table, columns), mapped))
    return prepared


def _map_row(table: str, columns: dict[str, str], index: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise Refused(f"{table}[{index}] must be an object")
    mapped = {}
    for column, value in row.items():
        kind = columns.get(column)
        if kind is None:
            raise Refused(f"{table}[{index}]: no column {column!r}")
        if value is not None and not VALUE_CHECKS[kind](value):
            raise Refused(f"{table}[{index}].{column}: expected {kind}")
        mapped[column_attribute(column)] = value
    return mapped


def read_rows(
    software: Software, table: str, *, image_id: str | None, cursor: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of one extra table's rows in insertion order, each with its ``id`` and ``image_id``,
    past ``cursor`` (a ``ROW_ORDER`` cursor); and the next page's cursor, or None."""
    columns = software.tables.get(table)
    if columns is None:
        raise NotFound(f"{software.name} has no table {table!r}")
    model = extra_table_model(software.id, table, columns)
    query = model.select()
    if image_id is not None:
        query = query.where(model.image_id == image_id)
    rows, next_cursor = keyset_page(query, (model.id,), ROW_ORDER, cursor, limit)
    described = [
        {"id": row.id, "image_id": row.image_id} | {c: getattr(row, column_attribute(c)) for c in columns}
        for row in rows
    ]
    return described, next_cursor


def rows_of(software: Software, table: str, image_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The rows of these images in one extra table, in insertion order: ``{image_id: [row, ...]}``,
    each row with its ``id`` and its columns."""
    columns = software.tables[table]
    model = extra_table_model(software.id, table, columns)
    found: dict[str, list[dict[str, Any]]] = {}
    for row in model.select().where(model.image_id.in_(image_ids)).order_by(model.id):
        found.setdefault(row.image_id, []).append(
            {"id": row.id} | {column: getattr(row, column_attribute(column)) for column in columns}
        )
    return found
