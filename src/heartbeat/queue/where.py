"""Compiling a resolved ``where`` tree (``heartbeat.query``) to one peewee expression over the
``images`` table: every value a parameter, every term two-valued (never SQL's unknown), so that
``not`` means what it says. The JSON functions differ between SQLite and MySQL/MariaDB; this is
the one place that knows.

Semantics (the contract's "Queries"): an image field or a job's ``status``/``version`` compares as
written, a missing value (``null``) only with ``= null`` / ``!= null``; ``SOFTWARE.info.K...`` holds
when the image's result has a value at that path of the same kind as the literal (number, text,
boolean) that compares true, and ``= null`` when there is no value there or it is JSON null;
``SOFTWARE.TABLE.count(...)`` counts the image's rows that hold the row expression.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import peewee

from heartbeat.db.database import Database
from heartbeat.db.models import Image, column_attribute, extra_table_model, job_model
from heartbeat.query.resolve import (
    ColumnTerm,
    CountTerm,
    ImageTerm,
    InfoTerm,
    JobTerm,
    LogicTerm,
    NotTerm,
    Resolved,
)

OPERATORS: dict[str, Callable[[Any, Any], peewee.Expression]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# JSON value types as each database names them.
JSON_TYPES = {
    False: {
        "number": ("integer", "real"),
        "text": ("text",),
        "true": ("true",),
        "false": ("false",),
        "null": ("null",),
    },
    True: {
        "number": ("INTEGER", "DOUBLE", "DECIMAL", "UNSIGNED INTEGER"),
        "text": ("STRING",),
        "true": ("BOOLEAN",),
        "false": ("BOOLEAN",),
        "null": ("NULL",),
    },
}


def compile_where(database: Database, term: Resolved) -> peewee.Expression:
    """``term`` as a condition on :class:`~heartbeat.db.models.Image` rows."""
    return _Compiler(database).compile(term)


class _Compiler:
    def __init__(self, database: Database):
        self._mysql = database.features.mysql

    def compile(self, term: Resolved) -> peewee.Expression:
        if isinstance(term, LogicTerm):
            parts = [self.compile(item) for item in term.operands]
            combined: peewee.Expression = parts[0]
            for part in parts[1:]:
                combined = (combined & part) if term.op == "and" else (combined | part)
            return combined
        if isinstance(term, NotTerm):
            negated: peewee.Expression = ~self.compile(term.operand)
            return negated
        if isinstance(term, ImageTerm):
            return _compare(getattr(Image, term.field), term.op, term.value)
        if isinstance(term, JobTerm):
            job = job_model(term.software.name)
            matching = _compare(getattr(job, term.field), term.op, term.value)
            return _exists(job, matching)
        if isinstance(term, InfoTerm):
            job = job_model(term.software.name)
            return _exists(job, self._info(job.info, term))
        if isinstance(term, CountTerm):
            extra = extra_table_model(term.software.id, term.table, term.software.tables[term.table])
            rows = extra.image_id == Image.id
            if term.rows is not None:
                rows &= self._row(extra, term.rows)
            counted = extra.select(peewee.fn.COUNT(extra.id)).where(rows)
            return OPERATORS[term.op](counted, term.value)
        raise TypeError(f"not a query term: {term!r}")

    def _row(self, extra: Any, term: Resolved) -> peewee.Expression:
        if isinstance(term, LogicTerm):
            parts = [self._row(extra, item) for item in term.operands]
            combined: peewee.Expression = parts[0]
            for part in parts[1:]:
                combined = (combined & part) if term.op == "and" else (combined | part)
            return combined
        if isinstance(term, NotTerm):
            negated: peewee.Expression = ~self._row(extra, term.operand)
            return negated
        if isinstance(term, ColumnTerm):
            return _compare(getattr(extra, column_attribute(term.column)), term.op, term.value)
        raise TypeError(f"not a row term: {term!r}")

    def _info(self, info: peewee.Field, term: InfoTerm) -> peewee.Expression:
        path = "$" + "".join(f".{key}" for key in term.keys)
        fn = peewee.fn
        if self._mysql:
            json_type = fn.JSON_TYPE(fn.JSON_EXTRACT(info, path))
            scalar = fn.JSON_VALUE(info, path)
        else:
            json_type = fn.json_type(info, path)
            scalar = fn.json_extract(info, path)
        types = JSON_TYPES[self._mysql]
        value = term.value
        if value is None:
            missing: peewee.Expression = json_type.is_null() | json_type.in_(types["null"])
            return missing if term.op == "=" else ~missing
        if isinstance(value, bool):
            kind = json_type.in_(types["true"] + types["false"] if self._mysql else ("true", "false"))
            literal = "true" if value else "false"
            # MariaDB's JSON_VALUE gives 1 and 0 for booleans, MySQL's true and false: the JSON text is the same.
            holds = (fn.JSON_UNQUOTE(fn.JSON_EXTRACT(info, path)) == literal) if self._mysql else (json_type == literal)
            boolean: peewee.Expression = kind & (holds if term.op == "=" else ~holds)  # unknown: left out by IN
            return boolean
        if isinstance(value, str):
            if self._mysql:  # byte for byte, as SQLite and Python compare text
                compared = OPERATORS[term.op](peewee.Cast(scalar, "BINARY"), peewee.Cast(peewee.Value(value), "BINARY"))
            else:
                compared = OPERATORS[term.op](scalar, value)
            text: peewee.Expression = json_type.in_(types["text"]) & compared
            return text
        number = peewee.Cast(scalar, "DOUBLE") if self._mysql else scalar
        numeric: peewee.Expression = json_type.in_(types["number"]) & OPERATORS[term.op](number, value)
        return numeric


def _compare(field: Any, op: str, value: Any) -> peewee.Expression:
    """``field op value`` that is false, never unknown, where the field is NULL."""
    compared: peewee.Expression
    if value is None:
        compared = field.is_null() if op == "=" else field.is_null(False)
    else:
        compared = field.is_null(False) & OPERATORS[op](field, value)
    return compared


def _exists(job: Any, condition: peewee.Expression) -> peewee.Expression:
    """The image's job holds ``condition``, as a count of its one job: MariaDB turns ``IN`` and
    ``EXISTS`` into a semi-join that reads every job of a status first, while a count stays a lookup
    by the job's primary key for each image the page reads, whatever the size of the tables."""
    holding = job.select(peewee.fn.COUNT(peewee.SQL("*"))).where((job.image_id == Image.id) & condition)
    found: peewee.Expression = holding > 0
    return found
