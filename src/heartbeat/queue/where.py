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

import math
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

# What the compiler makes: a condition peewee renders as SQL (an expression, a list of them, or SQL text).
Condition = peewee.ColumnBase

OPERATORS: dict[str, Callable[[Any, Any], Condition]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
# The image fields that hold whole numbers (the others compared with numbers hold doubles).
INTEGER_FIELDS = frozenset({"width", "height", "size", "priority"})
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# ``x = v`` and ``x != v`` for a ``v`` that no ``x`` of the column's kind equals.
EQUALITY_OUTCOME = {"=": False, "!=": True}
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


def compile_where(database: Database, term: Resolved) -> Condition:
    """``term`` as a condition on :class:`~heartbeat.db.models.Image` rows."""
    return _Compiler(database).compile(term)


class _Compiler:
    def __init__(self, database: Database):
        self._mysql = database.features.mysql

    def compile(self, term: Resolved) -> Condition:
        if isinstance(term, LogicTerm):
            return _joined(term.op, [self.compile(item) for item in term.operands])
        if isinstance(term, NotTerm):
            negated: Condition = ~self.compile(term.operand)
            return negated
        if isinstance(term, ImageTerm):
            return _compare(getattr(Image, term.field), term.op, term.value, integer=term.field in INTEGER_FIELDS)
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
            return _numeric(counted, term.op, term.value, integer=True)
        raise TypeError(f"not a query term: {term!r}")

    def _row(self, extra: Any, term: Resolved) -> Condition:
        if isinstance(term, LogicTerm):
            return _joined(term.op, [self._row(extra, item) for item in term.operands])
        if isinstance(term, NotTerm):
            negated: Condition = ~self._row(extra, term.operand)
            return negated
        if isinstance(term, ColumnTerm):
            field = getattr(extra, column_attribute(term.column))
            return _compare(field, term.op, term.value, integer=isinstance(field, peewee.IntegerField))
        raise TypeError(f"not a row term: {term!r}")

    def _info(self, info: peewee.Field, term: InfoTerm) -> Condition:
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
            missing: Condition = json_type.is_null() | json_type.in_(types["null"])
            return missing if term.op == "=" else ~missing
        if isinstance(value, bool):
            kind = json_type.in_(types["true"] + types["false"] if self._mysql else ("true", "false"))
            literal = "true" if value else "false"
            # MariaDB's JSON_VALUE gives 1 and 0 for booleans, MySQL's true and false: the JSON text is the same.
            holds = (fn.JSON_UNQUOTE(fn.JSON_EXTRACT(info, path)) == literal) if self._mysql else (json_type == literal)
            boolean: Condition = kind & (holds if term.op == "=" else ~holds)  # unknown: left out by IN
            return boolean
        if isinstance(value, str):
            if self._mysql:  # byte for byte, as SQLite and Python compare text
                compared = OPERATORS[term.op](peewee.Cast(scalar, "BINARY"), peewee.Cast(peewee.Value(value), "BINARY"))
            else:
                compared = OPERATORS[term.op](scalar, value)
            text = _joined("and", [json_type.in_(types["text"]), compared])
            return text
        return _joined("and", [json_type.in_(types["number"]), self._info_number(info, path, term.op, value)])

    def _info_number(self, info: peewee.Field, path: str, op: str, value: float) -> Condition:
        """A JSON number ``op value``: a 64-bit integer exactly, any other number (a fraction, an
        integer past 64 bits) as the double nearest it, as SQLite's JSON functions hold them.
        One ``CASE``, so that the term nests no deeper than a comparison."""
        fn = peewee.fn
        integer: Any
        if self._mysql:  # JSON_VALUE gives the number's text
            text = fn.JSON_VALUE(info, path)
            is_integer = _joined(
                "and",
                [
                    fn.JSON_TYPE(fn.JSON_EXTRACT(info, path)) == "INTEGER",
                    # MariaDB types 1e-05 (how JSON writers put small and large doubles) as INTEGER too
                    peewee.NodeList((text, peewee.SQL("REGEXP '^-?[0-9]+$'"))),
                    peewee.Cast(text, "DECIMAL(65, 0)").between(INT64_MIN, INT64_MAX),
                ],
            )
            integer, double = peewee.Cast(text, "SIGNED"), peewee.Cast(text, "DOUBLE")
        else:  # json_extract gives an integer only for a 64-bit one
            extracted = fn.json_extract(info, path)
            is_integer = fn.typeof(extracted) == "integer"
            integer, double = extracted, peewee.Cast(extracted, "REAL")
        exact = _numeric(integer, op, value, integer=True)
        nearest = _numeric(double, op, value, integer=False)
        compared: Condition = peewee.Case(None, [(is_integer, exact)], nearest)
        return compared


def _joined(op: str, parts: list[Condition]) -> Condition:
    """``a AND b AND c`` in one pair of parentheses: peewee's ``&`` would nest ``((a AND b) AND c)``,
    one level for each term, and SQLite's parser stack holds about 100 levels."""
    if len(parts) == 1:
        return parts[0]
    joined: Condition = peewee.NodeList(parts, glue=f" {op.upper()} ", parens=True)
    return joined


def _compare(field: Any, op: str, value: Any, *, integer: bool = False) -> Condition:
    """``field op value`` that is false, never unknown, where the field is NULL; a number compared as
    :func:`_numeric` says (``integer``: the field holds whole numbers)."""
    if value is None:
        nullness: Condition = field.is_null() if op == "=" else field.is_null(False)
        return nullness
    if isinstance(value, int | float) and not isinstance(value, bool):
        compared = _numeric(field, op, value, integer=integer)
    else:
        compared = OPERATORS[op](field, value)
    if not field.null:
        return compared
    return _joined("and", [field.is_null(False), compared])


def _numeric(number: Any, op: str, value: float, *, integer: bool) -> Condition:
    """``number op value``, exact as Python compares numbers, whatever the literal: the database is
    given only a bound it compares exactly (a 64-bit integer, or a double), or no bound at all."""
    bound = integer_bound(op, value) if integer else double_bound(op, value)
    if isinstance(bound, bool):
        return peewee.SQL("1 = 1" if bound else "1 = 0")
    compared: Condition = OPERATORS[bound[0]](number, bound[1])
    return compared


def integer_bound(op: str, value: float) -> tuple[str, int] | bool:
    """``x op value`` for every 64-bit integer ``x`` as ``x op' n`` with ``n`` a 64-bit integer, or as
    True or False (whatever ``x`` is): ``x < 16.5`` is ``x < 17``, ``x = 16.5`` is False, ``x <
    99999999999999999999`` is True."""
    if isinstance(value, float):
        if not value.is_integer() and op in EQUALITY_OUTCOME:
            return EQUALITY_OUTCOME[op]
        value = math.ceil(value) if op in ("<", ">=") else math.floor(value)
    if value > INT64_MAX:
        return op in ("<", "<=", "!=")
    if value < INT64_MIN:
        return op in (">", ">=", "!=")
    return op, value


def double_bound(op: str, value: float) -> tuple[str, float] | bool:
    """``x op value`` for every finite double ``x`` as ``x op' d`` with ``d`` a finite double, or as True
    or False: an integer literal no double equals is put between the two doubles around it."""
    if isinstance(value, float):
        return op, value
    try:
        nearest = float(value)
    except OverflowError:  # past the largest double
        return op in ("<", "<=", "!=") if value > 0 else op in (">", ">=", "!=")
    if nearest == value:
        return op, nearest
    if op in EQUALITY_OUTCOME:
        return EQUALITY_OUTCOME[op]
    if op in ("<", "<="):
        below = nearest if nearest < value else math.nextafter(nearest, -math.inf)
        return ("<=", below) if math.isfinite(below) else False
    above = nearest if nearest > value else math.nextafter(nearest, math.inf)
    return (">=", above) if math.isfinite(above) else False


def _exists(job: Any, condition: Condition) -> Condition:
    """The image's job holds ``condition``, as a count of its one job: MariaDB turns ``IN`` and
    ``EXISTS`` into a semi-join that reads every job of a status first, while a count stays a lookup
    by the job's primary key for each image the page reads, whatever the size of the tables."""
    holding = job.select(peewee.fn.COUNT(peewee.SQL("*"))).where(_joined("and", [job.image_id == Image.id, condition]))
    found: Condition = holding > 0
    return found
