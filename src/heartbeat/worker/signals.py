"""SIGTERM and SIGINT as a worker takes them: the first stops it gently, the second hurries it."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("heartbeat.worker")


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], hurry: Callable[[], None], in_hand: Callable[[], int]) -> Iterator[None]:
    """While inside, SIGTERM or SIGINT calls ``stop`` (once) and then ``hurry``; outside, the old handlers.

    Only the main thread may set signal handlers: elsewhere this does nothing (``stop()`` still works).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:
            log.warning("%s again: releasing the jobs in hand without waiting for them", name)
            hurry()
            return
        stopping = True
        log.info("%s: stopping; no more claims, finishing the %d jobs in hand", name, in_hand())
        stop()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
