"""An export is one snapshot: what commits while it streams (a result, a deletion, an upload) is not
in it, in any format, and however the stream ends (read to the end, dropped midway, failed) the
snapshot ends with it and the server thread's connection is free for the next request.

The export's body is read here as a WSGI server reads it, a chunk at a time after the responder has
returned, while another thread (its own connection) commits changes between two chunks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlencode

import falcon.testing
import pytest

from heartbeat.catalog.export import Exporter, ExportRequest
from helpers import TEST_CLIENT_HOST, claim, distinct_images, register, upload

SW = "/v1/software/faces"
TABLES = {"boxes": {"x": "float", "y": "float", "w": "float", "h": "float"}}
EXPORTS = {
    "jsonl": {"format": "jsonl"},
    "csv": {"format": "csv"},
    "coco": {"format": "coco", "table": "faces.boxes", "where": "faces.status = 'done'"},
}


def submit(client, job: dict, number: int) -> None:
    rows = [{"x": number, "y": 1, "w": 2, "h": 3}, {"x": number, "y": 5, "w": 6, "h": 7}]
    body = {"token": job["token"], "info": {"n": number}, "rows": {"boxes": rows}}
    assert client.simulate_put(f"{SW}/jobs/{job['image_id']}/result", json=body).status_code == 200


@pytest.fixture
def images(client) -> list[str]:
    """Eight images, the first five done with two boxes each, three pending (and one claimed)."""
    register(client, "faces", tables=TABLES)
    ids = [upload(client, data).json["id"] for data in distinct_images(8)]
    for number, job in enumerate(claim(client, "faces", max=6)[:5]):
        submit(client, job, number)
    return ids


class Stream:
    """``GET /v1/export`` called as a WSGI server calls it: the body is read chunk by chunk, later."""

    def __init__(self, app: falcon.App, params: dict[str, str]):
        environ = falcon.testing.create_environ(
            path="/v1/export", query_string=urlencode(params), host=TEST_CLIENT_HOST
        )
        statuses: list[str] = []
        self.body: Iterable[bytes] = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        assert statuses == ["200 OK"]
        self._chunks = iter(self.body)

    def first(self) -> bytes:
        return next(self._chunks)

    def rest(self) -> bytes:
        return b"".join(self._chunks)

    def close(self) -> None:
        close: Callable[[], None] | None = getattr(self.body, "close", None)
        if close is not None:
            close()


def commit_meanwhile(client, database, images: list[str]) -> None:
    """In another thread, with its own connection: a done image deleted, a claimed job's result
    submitted, a new image uploaded; each committed before this returns."""

    def change() -> None:
        try:
            assert client.simulate_delete(f"/v1/images/{images[0]}").status_code == 204
            [job] = claim(client, "faces", max=1)
            submit(client, job, 99)
            assert upload(client, distinct_images(9)[8]).status_code == 201
        finally:
            database.close()

    thread = threading.Thread(target=change)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()


@pytest.mark.parametrize("fmt", list(EXPORTS))
def test_an_export_holds_what_was_there_when_it_began_and_its_snapshot_ends_with_its_stream(
    app, client, database, images, monkeypatch, fmt
):
    monkeypatch.setattr("heartbeat.catalog.export.PAGE_IMAGES", 2)  # four pages: the export reads them one by one
    params = EXPORTS[fmt]
    before = client.simulate_get("/v1/export", params=params).content
    stream = Stream(app, params)
    first = stream.first()
    commit_meanwhile(client, database, images)
    assert first + stream.rest() == before
    stream.close()
    after = client.simulate_get("/v1/export", params=params).content  # the same thread: its connection is free
    assert after != before

    dropped = Stream(app, params)
    dropped.first()
    dropped.close()  # the client went away: the server closes the body
    assert not database.in_transaction()
    assert upload(client, distinct_images(10)[9]).status_code == 201  # a write on the same connection

    every_page = Exporter._pages

    def failing_after_the_pages(self: Exporter, request: ExportRequest) -> Iterator[list]:
        yield from every_page(self, request)
        raise RuntimeError("the database went away midway")

    monkeypatch.setattr(Exporter, "_pages", failing_after_the_pages)
    failing = Stream(app, params)
    with pytest.raises(RuntimeError):
        failing.first()
        failing.rest()
    failing.close()
    assert not database.in_transaction()
    monkeypatch.setattr(Exporter, "_pages", every_page)
    assert client.simulate_delete(f"/v1/images/{images[1]}").status_code == 204
    assert images[1] not in client.simulate_get("/v1/export", params=params).text
