"""Parsing a ``where`` expression with lark (an LALR grammar) into a tree of dataclasses.

``FIELD OP VALUE`` terms and ``SOFTWARE.TABLE.count[(ROW_EXPR)] OP NUMBER`` terms, joined with
``and``, ``or``, ``not`` and parentheses (``not`` binds tighter than ``and``, ``and`` than ``or``).
A syntax error is :class:`~heartbeat.errors.InvalidInput` (400) naming the column of the fault, and
so is an expression past one of the limits below: every expression within them compiles to SQL that
each supported engine runs (SQLite's parser takes about 100 nested parentheses, and an expression
tree 1,000 deep), and none makes the server recurse without bound.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
from typing import Any

import lark

from heartbeat.errors import InvalidInput

# The limits of one expression, each refused beyond with a 400 that names it. Within them, every
# expression runs on each engine: SQLite's parser runs out of stack at about 18 levels of nesting
# (in a requeue's statement; 24 in a listing's), and refuses a statement of about 300 terms inside
# one count(...) of a requeue.
MAX_EXPRESSION_CHARS = 16_000
# How deep ``and``, ``or``, ``not`` and ``count(...)`` may nest: ``not not x`` is 2 deep, and so is
# ``a or (b and c)``; a term alone is 0 deep.
MAX_DEPTH = 16
# How many ``FIELD OP VALUE`` terms one expression may hold, wherever they are: a count's row
# conditions each count as one (``t.count(x = 1 or x = 2) > 0`` is two terms), a bare count as one.
MAX_TERMS = 256
# Numbers beyond this (a double's largest) are refused; the others compare exactly as written.
MAX_NUMBER = sys.float_info.max
# The tree's nodes that make one level of nesting, and those that make one term.
_NESTING = frozenset({"or_expr", "and_expr", "negation", "counted"})
_TERMS = frozenset({"comparison"})

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
        shown = text if len(text) <= 24 else f"{text[:20]}..."
        if not math.isfinite(number):
            raise InvalidInput(
                f"where: at column {tokens[0].column}: {shown} is beyond {MAX_NUMBER:g}, the largest number it compares"
            )
        digits = text.lstrip("+-")
        if digits.isdigit():
            # Its leading zeros dropped first: int() refuses text of more than 4,300 digits, and a
            # finite number has at most 309 digits without them.
            whole = int(digits.lstrip("0") or "0")
            return -whole if text.startswith("-") else whole
        if number == 0 and any(digit in "123456789" for digit in text.lower().partition("e")[0]):
            raise InvalidInput(
                f"where: at column {tokens[0].column}: {shown} is nearer to 0 than the smallest number it "
                "compares (about 5e-324)"
            )
        return number

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


# A listing pages through one expression, request after request: each page parsed it again (6% of
# such a request's CPU). The trees are frozen; a refused expression is not kept (it raised).
@functools.lru_cache(maxsize=128)
def parse(expression: str) -> Expression:
    """The tree of ``expression``; :class:`InvalidInput` (400) with the column of a fault."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise InvalidInput(
            f"where: at column {MAX_EXPRESSION_CHARS + 1}: longer than {MAX_EXPRESSION_CHARS} characters, "
            "the most the server runs"
        )
    try:
        tree = _parser.parse(expression)
    except lark.exceptions.UnexpectedInput as error:
        token = getattr(error, "token", None)
        if isinstance(error, lark.exceptions.UnexpectedEOF) or getattr(token, "type", None) == "$END":
            raise InvalidInput(
                f"where: the expression ends too early, at column {len(expression) + 1}"
                + _expected(expression + " ", error, at=len(expression))
            ) from None
        raise InvalidInput(f"where: unexpected input at column {error.column}{_expected(expression, error)}") from None
    _check_size(tree)
    try:
        return _ToTree().transform(tree)
    except lark.exceptions.VisitError as error:
        if isinstance(error.orig_exc, InvalidInput):
            raise error.orig_exc from None
        raise


# What each terminal the parser may expect is called in a refusal.
_TERMINALS = {
    "OP": "an operator (= != < <= > >=)",
    "DOT": "`.`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "AND": "`and`",
    "OR": "`or`",
    "NOT": "`not`",
    "NAME": "a field",
    "SIGNED_NUMBER": "a number",
    "STRING": "'text'",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
}
_VALUES = frozenset({"SIGNED_NUMBER", "STRING", "TRUE", "FALSE", "NULL"})
# Other languages' spellings, and what this one writes instead.
_SPELLINGS = {
    "&&": "`and`",
    "||": "`or`",
    "!=": None,  # ours
    "!": "`not`",
    "<>": "`!=`",
}
_WORDS = {
    "in": "`in (...)` is not in the language: write `x = 'a' or x = 'b'`",
    "like": "`like` is not in the language: compare with `=`",
    "is": "write `= null` or `!= null`",
    "between": "write `x >= 1 and x <= 2`",
}


def _expected(expression: str, error: lark.exceptions.UnexpectedInput, *, at: int | None = None) -> str:
    """What was expected where ``error`` is, and for the mistakes people make, how this language writes
    it: ``==`` (SQL's ``=``), text in double quotes or in no quotes, ``&&``, ``||``, ``!``, ``<>``,
    ``in``, ``like``."""
    at = max(error.pos_in_stream or 0, 0) if at is None else at
    rest = expression[at:].strip()
    word = re.match(r"[A-Za-z_][A-Za-z0-9_]*", rest)
    expected = set(getattr(error, "expected", None) or getattr(error, "allowed", None) or ())
    if rest.startswith("=") and expression[at - 1 : at] == "=":
        return ": expected `=` (one equals sign)"
    if rest.startswith('"'):
        return ": text takes single quotes ('done', with '' for a quote)"
    if word and expected & _VALUES and word.group().lower() not in ("true", "false", "null"):
        return f": expected a value; text takes single quotes ('{word.group()}')"
    if word and word.group().lower() in _WORDS:
        return f": {_WORDS[word.group().lower()]}"
    for spelling, ours in _SPELLINGS.items():
        if rest.startswith(spelling) or expression[max(at - 1, 0) :].startswith(spelling):
            if ours is not None:
                return f": `{spelling}` is written {ours}"
            break
    named = sorted({_TERMINALS[str(name)] for name in expected if str(name) in _TERMINALS})
    if not named:
        return ""
    return ": expected " + (named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1])


def _check_size(tree: lark.Tree[lark.Token]) -> None:
    """:class:`InvalidInput` when ``tree`` nests deeper than ``MAX_DEPTH`` or holds more than
    ``MAX_TERMS`` terms, naming the column where it does; walked without recursion, so that the
    transformer, the resolver and the compiler after it recurse ``MAX_DEPTH`` levels at most."""
    terms = 0
    stack: list[tuple[lark.Tree[lark.Token], int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING:
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidInput(
                    f"where: at column {_column(node)}: nested deeper than {MAX_DEPTH} levels "
                    "(of and, or, not and count(...)), the most the server runs"
                )
        if node.data in _TERMS:
            terms += 1
            if terms > MAX_TERMS:
                raise InvalidInput(
                    f"where: at column {_column(node)}: more than {MAX_TERMS} terms, the most the server runs"
                )
        stack.extend((child, depth) for child in reversed(node.children) if isinstance(child, lark.Tree))


def _column(node: lark.Tree[lark.Token]) -> int:
    return getattr(node.meta, "column", 0) or 0
