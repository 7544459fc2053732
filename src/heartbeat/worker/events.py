"""Following the event feed: :class:`EventFollower`, what :meth:`Client.events` returns.

It asks for page after page of ``GET /v1/events``, each after the last one's ``next_cursor``, long
polling while there is nothing new. A connection error or a 5xx (after the client's own retries) is
tried again for ever (as is a 429), after an exponential backoff with jitter, or after the ``Retry-After`` the
server asked for; so is an empty page the server had no room to let wait. Anything else (a 4xx)
is raised: a 410 as :class:`CursorExpired`, after which the caller starts again without a cursor.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from heartbeat.worker.exceptions import HeartbeatError, ServerError, ServerUnavailable
from heartbeat.worker.models import EventPage

log = logging.getLogger("heartbeat.worker")

TOO_MANY_REQUESTS = 429  # a proxy's answer in front of the API: waited out as a 503 is
PageFetcher = Callable[[str | None, float], EventPage]  # (after, wait_seconds) -> the page


NOW = "now"  # a cursor the server reads as its last event


class EventFollower(Iterator[dict[str, Any]]):
    """The events after a cursor, each yielded once, in the server's commit order.

    :attr:`cursor` is where a consumer resumes from: the ``id`` of the last event yielded, or a later
    ``next_cursor`` once a page is through (the server may skip past events a filter leaves out).
    Store it after handling an event and pass it back as ``after=`` to miss nothing and see nothing
    twice. ``None`` until the first answer when the follower started without a cursor.

    With ``follow`` (the default) it never ends on its own: stop by leaving the ``for`` loop (or
    :meth:`close`). Without it, it ends once it has caught up: a page with no event that leaves the
    cursor where it was.
    """

    def __init__(
        self,
        fetch: PageFetcher,
        after: str | None,
        *,
        follow: bool = True,
        wait_seconds: float = 20,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 8.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.cursor = after
        self.follow = follow
        self._fetch = fetch
        self._wait_seconds = wait_seconds if follow else 0
        self._backoff_seconds = backoff_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._sleep = sleep
        self._pending: list[dict[str, Any]] = []
        self._page_cursor: str | None = None  # the next_cursor of the page being yielded
        self._failures = 0
        self._closed = False
        if after == NOW:
            # "From now" means from this call, not from the first next(): a consumer that starts its
            # loop a moment later must not miss what committed meanwhile. A server that cannot be
            # asked now leaves it to the first next().
            with contextlib.suppress(HeartbeatError):
                self.cursor = fetch(NOW, 0).next_cursor

    def __iter__(self) -> EventFollower:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._pending:
            if self._page_cursor is not None:  # the page is through: go on after all it scanned
                self.cursor, self._page_cursor = self._page_cursor, None
            if self._closed:
                raise StopIteration
            page = self._next_page()
            if page is None:
                continue
            caught_up = not page.events and page.next_cursor == self.cursor
            self._pending, self._page_cursor = list(page.events), page.next_cursor
            if caught_up and not self.follow:
                self._closed = True
            elif not page.events and page.retry_after_seconds:
                self._sleep(page.retry_after_seconds)  # no room to wait on the server: come back later
        event = self._pending.pop(0)
        self.cursor = str(event["id"])
        return event

    def close(self) -> None:
        """Stop: the next ``next()`` ends the iteration (a page already fetched is dropped; :attr:`cursor`
        stays at the last event yielded)."""
        self._closed = True
        self._pending.clear()
        self._page_cursor = None

    def _next_page(self) -> EventPage | None:
        """The page after :attr:`cursor`, or None after a failure it waited out."""
        try:
            page = self._fetch(self.cursor, self._wait_seconds)
        except HeartbeatError as error:
            if not isinstance(error, ServerUnavailable | ServerError) and error.status != TOO_MANY_REQUESTS:
                raise
            self._failures += 1
            pause = self._pause(error.retry_after)
            log.warning("events: %s; asking again in %.1f s", error, pause)
            self._sleep(pause)
            return None
        self._failures = 0
        return page

    def _pause(self, retry_after: float | None) -> float:
        """What the server asked for, else an exponential backoff with full jitter (never 0: a server
        that fails at once is not asked again in a tight loop)."""
        if retry_after is not None:
            return retry_after
        ceiling = min(self._max_backoff_seconds, self._backoff_seconds * 2 ** (self._failures - 1))
        return random.uniform(ceiling / 2, ceiling)
