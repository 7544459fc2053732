"""``/v1/events``: the events after a cursor, as pages (long-polled) or as a Server-Sent Events stream."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Generator
from typing import Any

import falcon

from heartbeat.api import schemas
from heartbeat.api.components import RETRY_AFTER, obj
from heartbeat.api.components import query as parameter
from heartbeat.api.params import check, query, query_integer, query_number
from heartbeat.api.routing import Operation, Parts, Reply, Route
from heartbeat.auth.roles import Access
from heartbeat.db.database import Database
from heartbeat.events.feed import CURSOR, NOW, EventFeed, EventFilter
from heartbeat.events.outbox import EVENT_TYPES
from heartbeat.queue.waiting import WaitingClaims

DEFAULT_LIMIT = 100
MAX_WAIT_SECONDS = 20
KEEPALIVE_SECONDS = 15.0  # a comment line at least this often (the contract's 15 s)
STREAM_SECONDS = 300.0  # a stream ends after this long; the client reconnects with Last-Event-ID
RECONNECT_MILLISECONDS = 2000  # the SSE ``retry:`` a client waits before it reconnects

TYPES = "|".join(re.escape(type) for type in EVENT_TYPES)
TYPES_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^(?:{TYPES})(?:,(?:{TYPES}))*$"}
CURSOR_SCHEMA: dict[str, Any] = {"type": "string", "pattern": f"^(?:{CURSOR.pattern}|{NOW})$"}
WAIT_SECONDS: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS}
STREAM_FOR: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0, "maximum": STREAM_SECONDS}
MAX_SECONDS = parameter("max_seconds", STREAM_FOR, f"end the stream after this long (default {STREAM_SECONDS:g})")
EVENT: dict[str, Any] = obj(
    {
        "id": {"type": "string", "description": "the event's cursor: its position in commit order"},
        "type": {"enum": list(EVENT_TYPES)},
        "time": {"type": "number"},
        "software": {"type": "string"},
        "image_id": {"type": "string"},
        "data": {"type": "object"},
    },
    ("id", "type", "time", "data"),
)
FILTERS = (
    parameter("types", TYPES_SCHEMA, f"event types, comma separated (default: all): {', '.join(EVENT_TYPES)}"),
    parameter("software", schemas.TEXT, "only events of this software"),
)


def event_filter(req: falcon.Request) -> EventFilter:
    """The ``types`` and ``software`` query parameters; 400 for an unknown type."""
    types = query(req, "types", TYPES_SCHEMA)
    return EventFilter(
        types=None if types is None else frozenset(types.split(",")), software=query(req, "software", schemas.TEXT)
    )


class EventsPage:
    """``GET /v1/events``: up to ``limit`` events after the cursor ``after``, waiting up to
    ``wait_seconds`` for one when there is none (bounded with waiting claims: past the bound the answer
    comes at once, with ``Retry-After``)."""

    def __init__(self, feed: EventFeed, waiting: WaitingClaims):
        self._feed = feed
        self._waiting = waiting

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = event_filter(req)
        limit = query_integer(req, "limit", schemas.LIMIT) or DEFAULT_LIMIT
        wait_seconds = query_number(req, "wait_seconds", WAIT_SECONDS) or 0
        after = self._feed.position(query(req, "after", CURSOR_SCHEMA))
        events, after = self._feed.page(after, wanted, limit)
        if not events and wait_seconds:
            if self._waiting.enter_reader():
                try:
                    deadline = time.monotonic() + wait_seconds
                    while not events and self._feed.wait(after, deadline - time.monotonic()):
                        events, after = self._feed.page(after, wanted, limit)
                finally:
                    self._waiting.leave_reader()
            else:
                resp.set_header("Retry-After", str(self._waiting.retry_after(wait_seconds)))
        resp.media = {"events": events, "next_cursor": str(after)}


class EventStream:
    """``GET /v1/events/stream``: the events as Server-Sent Events (WHATWG HTML, "Server-sent events"),
    from ``Last-Event-ID`` (a reconnecting client's) or ``after``. The stream holds a server thread, so
    it counts with waiting claims; past the bound it ends at once, telling the client when to come back
    (``retry:``). It ends after ``STREAM_SECONDS``, and when the server stops; the client reconnects."""

    def __init__(self, feed: EventFeed, waiting: WaitingClaims, database: Database):
        self._feed = feed
        self._waiting = waiting
        self._database = database

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        wanted = event_filter(req)
        after_parameter = query(req, "after", CURSOR_SCHEMA)
        stream_seconds = query_number(req, "max_seconds", STREAM_FOR) or STREAM_SECONDS
        last_event_id = req.get_header("Last-Event-ID")
        if last_event_id is not None:
            check(last_event_id, CURSOR_SCHEMA, where="Last-Event-ID")
        after = self._feed.position(last_event_id or after_parameter)
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Accel-Buffering", "no")  # a proxy in front must not hold events back
        if not self._waiting.enter_reader(stream=True):
            seconds = self._waiting.retry_after(KEEPALIVE_SECONDS)
            resp.set_header("Retry-After", str(seconds))
            resp.text = f"retry: {seconds * 1000}\n\n"
            return
        release = functools.partial(self._waiting.leave_reader, stream=True)
        resp.stream = HeldStream(self._events(after, wanted, stream_seconds), release)

    def _events(self, after: int, wanted: EventFilter, stream_seconds: float) -> Generator[bytes, None, None]:
        """The stream's lines."""
        yield f"retry: {RECONNECT_MILLISECONDS}\n\n".encode()
        ends = time.monotonic() + stream_seconds
        last_line = time.monotonic()
        while time.monotonic() < ends and not self._feed.stopping.is_set():
            events, after = self._feed.page(after, wanted, DEFAULT_LIMIT)
            if events:
                yield "".join(sse(event) for event in events).encode()
                last_line = time.monotonic()
                continue
            quiet = min(KEEPALIVE_SECONDS - (time.monotonic() - last_line), ends - time.monotonic())
            if not self._feed.wait(after, max(quiet, 0)) and time.monotonic() - last_line >= KEEPALIVE_SECONDS:
                yield b": keep-alive\n\n"
                last_line = time.monotonic()


class HeldStream:
    """A response body that holds a waiting reader's room until it ends or is closed: a generator
    closed before its first chunk (a HEAD, a client gone at once) would never run its ``finally``."""

    def __init__(self, chunks: Generator[bytes, None, None], release: Callable[[], None]):
        self._chunks = chunks
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> HeldStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._chunks.close()
        release, self._release = self._release, None
        if release is not None:
            release()


def sse(event: dict[str, Any]) -> str:
    """One event as a Server-Sent Events message: its ``id:`` (the cursor) and its JSON as ``data:``."""
    return f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'), allow_nan=False)}\n\n"


# --- its routes ----------------------------------------------------------------------------------


def events_page(parts: Parts) -> EventsPage:
    return EventsPage(parts.events, parts.waiting)


def event_stream(parts: Parts) -> EventStream:
    return EventStream(parts.events, parts.waiting, parts.database)


AFTER = parameter(
    "after",
    CURSOR_SCHEMA,
    "an event's `id` (or `next_cursor`): the events after it; `now`: after the last so far; none: the oldest kept",
)

ROUTES: list[Route] = [
    Route(
        "/v1/events",
        events_page,
        {
            "GET": Operation(
                Access.READ,
                "the events after a cursor, in commit order, waiting up to `wait_seconds` for one",
                Reply(
                    200,
                    obj({"events": {"type": "array", "items": EVENT}, "next_cursor": CURSOR_SCHEMA}),
                    headers={"Retry-After": RETRY_AFTER | {"description": "with no events: no room to wait"}},
                ),
                errors=(400, 410),
                parameters=(
                    AFTER,
                    *FILTERS,
                    parameter("limit", schemas.LIMIT, f"events at most (default {DEFAULT_LIMIT})"),
                    parameter("wait_seconds", WAIT_SECONDS, "wait this long for an event when there is none (0 to 20)"),
                ),
            )
        },
    ),
    Route(
        "/v1/events/stream",
        event_stream,
        {
            "GET": Operation(
                Access.READ,
                "the events as Server-Sent Events; a client reconnecting with `Last-Event-ID` misses none",
                Reply(200, media_type="text/event-stream"),
                errors=(400, 410),
                parameters=(
                    AFTER,
                    *FILTERS,
                    MAX_SECONDS,
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": CURSOR_SCHEMA,
                        "description": "the last event's `id` a reconnecting client received",
                    },
                ),
            )
        },
    ),
]
