"""Checking a parsed ``where`` tree against the registered software: every name must exist and
every comparison must make sense for what it compares (400 with the column of the fault otherwise).
The result is a tree of resolved terms the queue compiles to SQL (``queue/where.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from heartbeat.db.models import JobStatus, Software
from heartbeat.errors import InvalidInput
from heartbeat.query.parse import Comparison, Expression, Logic, Not, RowCount, Value

STATUSES = tuple(status.value for status in JobStatus)

TEXT_FIELDS = frozenset({"origin", "content_type", "filename"})
NUMBER_FIELDS = frozenset({"uploaded_date", "width", "height", "size", "priority"})
EQUALITY = frozenset({"=", "!="})
COLUMN_KINDS = {"text": "text", "int": "number", "float": "number", "time": "number", "bool": "bool"}


@dataclasses.dataclass(frozen=True)
class ImageTerm:
    field: str
    op: str
    value: Value


@dataclasses.dataclass(frozen=True)
class JobTerm:
    """``software.status`` or ``software.version``."""

    software: Software
    field: str
    op: str
    value: Value


@dataclasses.dataclass(frozen=True)
class InfoTerm:
    """A value inside the result's JSON: ``software.info.k1.k2``."""

    software: Software
    keys: tuple[str, ...]
    op: str
    value: Value


@dataclasses.dataclass(frozen=True)
class ColumnTerm:
    """A column of an extra table's row, inside ``count(...)``."""

    column: str
    op: str
    value: Value


@dataclasses.dataclass(frozen=True)
class CountTerm:
    software: Software
    table: str
    rows: Resolved | None
    op: str
    value: int | float


@dataclasses.dataclass(frozen=True)
class NotTerm:
    operand: Resolved


@dataclasses.dataclass(frozen=True)
class LogicTerm:
    op: str
    operands: tuple[Resolved, ...]


Resolved = ImageTerm | JobTerm | InfoTerm | CountTerm | NotTerm | LogicTerm | ColumnTerm


def resolve(tree: Expression, software: Mapping[str, Software]) -> Resolved:
    """The tree with every name looked up; :class:`InvalidInput` (400) at the first that is wrong."""
    return _resolve(tree, software, None)


def _resolve(tree: Expression, software: Mapping[str, Software], columns: Mapping[str, str] | None) -> Resolved:
    if isinstance(tree, Logic):
        return LogicTerm(tree.op, tuple(_resolve(item, software, columns) for item in tree.operands))
    if isinstance(tree, Not):
        return NotTerm(_resolve(tree.operand, software, columns))
    if isinstance(tree, RowCount):
        if columns is not None:
            raise _fault(tree.column, "a count cannot be nested in a count")
        owner = _software(software, tree.software, tree.column)
        table = owner.tables.get(tree.table)
        if table is None:
            raise _fault(tree.column, f"{owner.name} has no table {tree.table!r}")
        if isinstance(tree.value, bool) or not isinstance(tree.value, int | float):
            raise _fault(tree.column, "a count compares with a number")
        rows = None if tree.rows is None else _resolve(tree.rows, software, table)
        return CountTerm(owner, tree.table, rows, tree.op, tree.value)
    return _comparison(tree, software, columns)


def _comparison(term: Comparison, software: Mapping[str, Software], columns: Mapping[str, str] | None) -> Resolved:
    path, op, value, column = term.path, term.op, term.value, term.column
    if columns is not None:  # inside count(...): the table's own columns
        if len(path) != 1 or path[0] not in columns or columns[path[0]] == "json":
            raise _fault(column, f"{'.'.join(path)!r} is not a column of that table (json columns cannot be compared)")
        _check(COLUMN_KINDS[columns[path[0]]], op, value, column, path[0])
        return ColumnTerm(path[0], op, value)
    if len(path) == 1:
        name = path[0]
        if name in TEXT_FIELDS or name in NUMBER_FIELDS:
            _check("text" if name in TEXT_FIELDS else "number", op, value, column, name)
            return ImageTerm(name, op, value)
        raise _fault(column, f"{name!r} is not an image field")
    owner = _software(software, path[0], column)
    if path[1:] in (("status",), ("version",)):
        _check("text", op, value, column, ".".join(path))
        if path[1] == "status" and value is not None and value not in STATUSES:
            raise _fault(column, f"no job is ever {value!r}: a status is one of {', '.join(STATUSES)}")
        return JobTerm(owner, path[1], op, value)
    if path[1] == "info":
        _check("any", op, value, column, ".".join(path))
        return InfoTerm(owner, path[2:], op, value)
    if len(path) == 3 and path[2] == "count" and path[1] in owner.tables:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fault(column, "a count compares with a number")
        return CountTerm(owner, path[1], None, op, value)
    raise _fault(column, f"{'.'.join(path)!r} names no status, version, info or table count of {owner.name}")


def _software(software: Mapping[str, Software], name: str, column: int) -> Software:
    found = software.get(name)
    if found is None:
        raise _fault(column, f"no software named {name!r}")
    return found


# How a field's numbers are written, where a reader could not guess it.
NUMBER_UNITS = {"uploaded_date": "seconds since 1970 (Unix time), e.g. 1764547200 for 2025-12-01"}


def _check(kind: str, op: str, value: Value, column: int, name: str) -> None:
    """Whether ``op value`` makes sense for the field ``name`` of ``kind`` (text, number, bool, any)."""
    if value is None or isinstance(value, bool):
        if op not in EQUALITY:
            raise _fault(column, f"{'null' if value is None else str(value).lower()} takes only = and !=")
        if value is not None and kind not in ("bool", "any"):
            raise _fault(column, f"{name} is a {kind}, never {str(value).lower()}")
        return
    if isinstance(value, str) and kind not in ("text", "any"):
        unit = f" ({NUMBER_UNITS[name]})" if name in NUMBER_UNITS else ""
        raise _fault(column, f"{name} is a {kind}{unit}: compare it with a {kind}, not with the text {value!r}")
    if not isinstance(value, str) and kind not in ("number", "any"):
        raise _fault(column, f"{name} is a {kind}: compare it with '{kind}' in single quotes, not with {value!r}")


def _fault(column: int, message: str) -> InvalidInput:
    return InvalidInput(f"where: at column {column}: {message}")
