"""Imported at start by the Python of the benchmark's "without counters" server (its PYTHONPATH names
this folder): the job queue's counter updates do nothing there, so that the claim+submit rate with
them can be divided by the rate without them, side by side. Never on a real server."""

from heartbeat.queue.core import QueueCore


def _uncounted(*_args: object) -> None:
    return None


QueueCore._count = _uncounted  # type: ignore[method-assign]
