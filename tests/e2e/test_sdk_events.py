"""The worker SDK's event feed, ``Client.events``: against a real ``heartbeat serve`` it yields every
event once, in order, waits for new ones and resumes from its cursor; against a scripted server it
waits out connection errors, 5xx answers and ``Retry-After``, and raises a 410 at once."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from heartbeat.worker import Client, CursorExpired, InvalidRequest, Unauthorized
from helpers import distinct_images


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    return [(event["type"], event.get("software"), event.get("image_id")) for event in events]


def test_the_feed_yields_every_kept_event_once_in_order_and_ends_when_caught_up_without_follow(client):
    client.register("ocr")
    ids = [client.upload(data).id for data in distinct_images(3)]
    events = list(client.events(follow=False, limit=2))  # pages of two: the cursor is followed
    assert kinds(events) == [("software.created", "ocr", None)] + [("image.created", None, id_) for id_ in ids]
    positions = [int(event["id"]) for event in events]
    assert positions == sorted(set(positions))
    assert events[1]["data"]["id"] == ids[0]  # image.created carries the image
    assert list(client.events(after=events[-1]["id"], follow=False)) == []


def test_a_consumer_that_stops_resumes_from_its_cursor_and_misses_nothing(client):
    client.register("ocr")
    for data in distinct_images(4):
        client.upload(data)
    everything = list(client.events(follow=False))
    feed = client.events(follow=False, limit=10)
    first = [next(feed), next(feed)]
    saved = feed.cursor  # the last event handled, though its page held more
    assert saved == first[-1]["id"]
    rest = list(client.events(after=saved, follow=False))
    assert first + rest == everything


def test_filters_reach_the_server_and_the_cursor_moves_past_what_they_leave_out(client):
    client.register("ocr")
    client.register("face_detection")
    client.upload(distinct_images(1)[0])
    feed = client.events(types=["software.created"], software="ocr", follow=False)
    assert kinds(list(feed)) == [("software.created", "ocr", None)]
    last = list(client.events(follow=False))[-1]["id"]
    assert feed.cursor == last, "the cursor went on past the events the filters left out"
    assert kinds(list(client.events(types="image.created,software.created", follow=False)))[-1][0] == "image.created"


def test_after_now_is_the_moment_the_follower_is_made_not_its_first_step(client, server):
    client.register("ocr")
    feed = client.events(after="now", types=["image.created"], follow=False)
    image_id = client.upload(distinct_images(1)[0]).id  # before the loop's first step
    assert [event["image_id"] for event in feed] == [image_id]


def test_following_waits_for_new_events_and_gets_them_without_polling_again(client, server):
    client.register("ocr")
    seen: queue.Queue[dict[str, Any]] = queue.Queue()
    feed = client.events(after="now", types=["image.created", "job.done"], wait_seconds=20)

    def follow() -> None:
        for event in feed:
            seen.put(event)
            if event["type"] == "job.done":
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    image_id = client.upload(distinct_images(1)[0]).id
    created = seen.get(timeout=10)
    assert (created["type"], created["image_id"]) == ("image.created", image_id)
    [job] = client.claim("ocr")
    client.submit("ocr", image_id, job.token, {"words": ["hello"]})
    done = seen.get(timeout=10)
    assert (done["type"], done["data"]["info"]) == ("job.done", {"words": ["hello"]})
    thread.join(timeout=10)
    assert feed.cursor == done["id"]
    # Long polls: one request answered with the upload's event, one with the result's, and perhaps
    # one in between that the claim woke (its events are none of these types) -- not a poll a second.
    event_reads = [line for line in server.log().splitlines() if "/v1/events" in line]
    assert 2 <= len(event_reads) <= 4, event_reads


def test_a_bad_filter_or_cursor_is_raised_not_retried(client):
    with pytest.raises(InvalidRequest):
        next(client.events(types=["job.nope"]))
    with pytest.raises(InvalidRequest):
        next(client.events(after="not-a-cursor"))


# --- against a scripted server ----------------------------------------------------------------


class Scripted(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /v1/events`` with the next step of ``script`` (the last one repeats): a
    ``(status, headers, body)``, or ``"hang up"`` (the connection closed without an answer). It notes
    each request's time and ``after``."""

    script: ClassVar[list[Any]] = []
    seen: ClassVar[list[tuple[float, str | None]]] = []

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        self.seen.append((time.monotonic(), query.get("after", [None])[0]))
        step = self.script[min(len(self.seen), len(self.script)) - 1]
        if step == "hang up":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        status, headers, body = step
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[Scripted]]]:
    handler = type("Answers", (Scripted,), {"script": [], "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def event(position: int) -> dict[str, Any]:
    return {"id": str(position), "type": "software.created", "time": 1.0, "software": "ocr", "data": {}}


def page(*positions: int, next_cursor: int) -> tuple[int, dict[str, str], dict[str, Any]]:
    return 200, {}, {"events": [event(p) for p in positions], "next_cursor": str(next_cursor)}


FAILED = (500, {}, {"title": "500 Internal Server Error", "description": "a bug"})


def test_connection_errors_and_5xx_are_waited_out_and_no_event_is_yielded_twice(scripted):
    url, answers = scripted
    answers.script = [
        page(1, 2, next_cursor=2),
        "hang up",
        FAILED,
        (503, {"Retry-After": "1"}, {"title": "503 Service Unavailable", "description": "the database is away"}),
        page(3, next_cursor=3),
    ]
    client = Client(url, retries=0, backoff_seconds=0.05, max_backoff_seconds=0.2)
    feed = client.events(wait_seconds=1)
    assert [next(feed)["id"] for _ in range(3)] == ["1", "2", "3"]
    times, afters = zip(*answers.seen, strict=True)
    assert afters == (None, "2", "2", "2", "2"), "each retry asks after the last event yielded"
    assert times[2] - times[1] < 1 and times[4] - times[3] >= 1, "backoff, then the 503's Retry-After"
    assert times[1] - times[0] < 1


def test_an_empty_page_the_server_could_not_let_wait_is_asked_again_after_its_retry_after(scripted):
    url, answers = scripted
    answers.script = [(200, {"Retry-After": "1"}, {"events": [], "next_cursor": "5"}), page(6, next_cursor=6)]
    feed = Client(url).events(after="5")
    assert next(feed)["id"] == "6"
    (first, _), (second, after) = answers.seen
    assert second - first >= 1 and after == "5"


def test_a_cursor_past_retention_raises_cursor_expired_at_once(scripted):
    url, answers = scripted
    gone = "events up to 40 are no longer kept (HEARTBEAT_EVENTS_RETAIN_SECONDS); start again without a cursor"
    answers.script = [(410, {}, {"title": "410 Gone", "description": gone})]
    feed = Client(url, backoff_seconds=0.01).events(after="7")
    with pytest.raises(CursorExpired) as expired:
        next(feed)
    assert expired.value.status == 410 and "start again without a cursor" in str(expired.value)
    assert len(answers.seen) == 1
    assert feed.cursor == "7"


def test_a_refused_token_is_raised_at_once(scripted):
    url, answers = scripted
    answers.script = [(401, {}, {"title": "401 Unauthorized", "description": "no token"})]
    with pytest.raises(Unauthorized):
        next(Client(url, backoff_seconds=0.01).events())
    assert len(answers.seen) == 1
