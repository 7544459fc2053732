"""Parsing a ``where`` expression with lark (an LALR grammar) into a tree of dataclasses.

``FIELD OP VALUE`` terms and ``SOFTWARE.TABLE.count[(ROW_EXPR)] OP NUMBER`` terms, joined with
``and``, ``or``, ``not`` and parentheses (``not`` binds tighter than ``and``, ``and`` than ``or``).
A syntax error is :class:`~heartbeat.errors.InvalidInput` (400) naming the column of the fault.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lark

from heartbeat.errors import InvalidInput

MAX_EXPRESSION_CHARS = 4000

GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr ("or"i and_expr)*
?and_expr: not_expr ("and"i not_expr)*
?not_expr: "not"i not_expr -> negation
         | atom
?atom: comparison
     | "(" or_expr ")"
comparison: path OP value
          | path "(" or_expr ")" OP value -> counted
path: NAME ("." NAME)*
value: SIGNED_NUMBER -> number
     | STRING -> text
     | "true"i -> true
     | "false"i -> false
     | "null"i -> null
OP: "!=" | "<=" | ">=" | "=" | "<" | ">"
STRING: /'([^']|'')*'/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""

Value = float | int | str | bool | None


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``path op value``: the path as written (resolved later against the software's tables)."""

    path: tuple[str, ...]
    op: str
    value: Value
    column: int  # where the term starts in the expression, from 1


@dataclasses.dataclass(frozen=True)
class RowCount:
    """``SOFTWARE.TABLE.count[(rows)] op number``: how many of the image's rows (matching ``rows``)."""

    software: str
    table: str
    rows: Expression | None
    op: str
    value: Value
    column: int


@dataclasses.dataclass(frozen=True)
class Not:
    operand: Expression


@dataclasses.dataclass(frozen=True)
class Logic:
    op: str  # "and" or "or"
    operands: tuple[Expression, ...]


Expression = Comparison | RowCount | Not | Logic

_parser = lark.Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)


class _ToTree(lark.Transformer[Any, Expression]):
    def or_expr(self, operands: list[Expression]) -> Expression:
        return Logic("or", tuple(operands))

    def and_expr(self, operands: list[Expression]) -> Expression:
        return Logic("and", tuple(operands))

    def negation(self, operands: list[Expression]) -> Expression:
        return Not(operands[0])

    def path(self, names: list[lark.Token]) -> tuple[tuple[str, ...], int]:
        return tuple(str(name) for name in names), names[0].column or 0

    def number(self, tokens: list[lark.Token]) -> Value:
        text = str(tokens[0])
        number = float(text)
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidInput(f"where: {text} at column {tokens[0].column} is not a finite number")
        return int(text) if text.lstrip("+-").isdigit() else number

    def text(self, tokens: list[lark.Token]) -> Value:
        return str(tokens[0])[1:-1].replace("''", "'")

    def true(self, _tokens: list[Any]) -> Value:
        return True

    def false(self, _tokens: list[Any]) -> Value:
        return False

    def null(self, _tokens: list[Any]) -> Value:
        return None

    def comparison(self, items: list[Any]) -> Expression:
        (path, column), op, value = items
        return Comparison(path, str(op), value, column)

    def counted(self, items: list[Any]) -> Expression:
        (path, column), rows, op, value = items
        if len(path) != 3 or path[2] != "count":
            raise InvalidInput(f"where: at column {column}: only SOFTWARE.TABLE.count takes (ROW_EXPRESSION)")
        return RowCount(path[0], path[1], rows, str(op), value, column)


def parse(expression: str) -> Expression:
    """The tree of ``expression``; :class:`InvalidInput` (400) with the column of a fault."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidInput(f"where: at most {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = _parser.parse(expression)
    except lark.exceptions.UnexpectedInput as error:
        token = getattr(error, "token", None)
        if isinstance(error, lark.exceptions.UnexpectedEOF) or getattr(token, "type", None) == "$END":
            raise InvalidInput(f"where: the expression ends too early, at column {len(expression) + 1}") from None
        raise InvalidInput(f"where: unexpected input at column {error.column}") from None
    try:
        return _ToTree().transform(tree)
    except lark.exceptions.VisitError as error:
        if isinstance(error.orig_exc, InvalidInput):
            raise error.orig_exc from None
        raise
