"""The ``where`` language of the contract's "Queries": parsed here into a small tree
(:func:`parse`), checked against the registered software (:func:`resolve`), and compiled to SQL
by the queue (``queue/where.py``)."""

from heartbeat.query.parse import Comparison, Expression, Logic, Not, RowCount, parse
from heartbeat.query.resolve import resolve

__all__ = ["Comparison", "Expression", "Logic", "Not", "RowCount", "parse", "resolve"]
