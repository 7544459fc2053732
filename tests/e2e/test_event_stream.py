"""The event stream through a real server (waitress): events arrive as they commit, one
``id:``/``data:`` message each, and a client reconnecting with ``Last-Event-ID`` misses none."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from helpers import distinct_images

TIMEOUT = 30


def messages(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The stream's messages, as ``{"id", "event"}``; comment lines and ``retry:`` skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if line:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        elif "data" in fields:
            yield {"id": fields["id"], "event": json.loads(fields["data"])}
            fields = {}
        else:
            fields = {}


def upload(url: str, data: bytes) -> str:
    answer = requests.post(f"{url}/v1/images", files={"file": ("p.png", data, "image/png")}, timeout=TIMEOUT)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def test_events_stream_as_they_commit_and_a_reconnect_with_last_event_id_misses_none(start_server):
    url = start_server().url
    first, second, third = distinct_images(3)
    with requests.get(f"{url}/v1/events/stream", params={"after": "now"}, stream=True, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = messages(response)
        image_id = upload(url, first)  # after the stream opened: it must arrive while the stream is open
        message = next(stream)
        assert message["event"]["type"] == "image.created" and message["event"]["image_id"] == image_id
        assert message["id"] == message["event"]["id"]
        last_seen = message["id"]
    missed = [upload(url, second), upload(url, third)]  # while no stream was open
    with requests.get(
        f"{url}/v1/events/stream",
        headers={"Last-Event-ID": last_seen},
        params={"after": "now"},
        stream=True,
        timeout=TIMEOUT,
    ) as response:
        stream = messages(response)
        resumed = [next(stream)["event"]["image_id"] for _ in missed]
    assert resumed == missed


def test_a_stream_ends_after_max_seconds_and_a_bad_cursor_is_refused(start_server):
    url = start_server().url
    answer = requests.get(f"{url}/v1/events/stream", params={"max_seconds": 0.3}, timeout=TIMEOUT)
    assert answer.status_code == 200 and answer.text.startswith("retry:")
    assert (
        requests.get(f"{url}/v1/events/stream", headers={"Last-Event-ID": "99999"}, timeout=TIMEOUT).status_code == 400
    )
