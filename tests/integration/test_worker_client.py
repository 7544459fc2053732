"""The worker SDK's Client against a real ``heartbeat serve``: every route, typed answers, and the
exception tree; retries on connection errors and 503s only."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import PIL.Image
import pytest
import requests

from heartbeat.auth import tokens
from heartbeat.worker import (
    ClaimedJob,
    Client,
    Conflict,
    Forbidden,
    HeartbeatError,
    Image,
    InvalidRequest,
    Job,
    LeaseLost,
    NotFound,
    Result,
    ServerUnavailable,
    Software,
    Unauthorized,
)
from helpers import distinct_images, free_port, image_bytes


@pytest.fixture
def server(start_server, session_data_dir):
    # The test process's own database is the server's, so tokens can be made here.
    return start_server("--url-allow", "127.0.0.1", data_dir=session_data_dir)


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    SERVER_ONLY = {"falcon", "peewee", "PIL", "pymysql", "minio", "waitress", "jsonschema", "numpy", "skimage",
                   "tqdm", "prometheus_client", "pythonjsonlogger"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in SERVER_ONLY:
                raise ImportError(f"{name} is not installed on a worker machine")

    sys.meta_path.insert(0, Block())
    import heartbeat.worker
    from heartbeat.worker import Client, Worker
    Worker(Client("http://127.0.0.1:9"), "face_detection", lambda data, image: None)
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in SERVER_ONLY)
    print("loaded:", loaded)
    """
)


def test_the_sdk_imports_without_the_servers_dependencies():
    done = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded: []"


def test_every_image_route_answers_with_typed_values(client, server, tmp_path):
    first, second, third = distinct_images(3)
    created = client.upload(first, filename="first.png", origin="cam", other_data={"lens": 35})
    assert isinstance(created, Image)
    assert (created.filename, created.origin, created.other_data, created.duplicate) == (
        "first.png",
        "cam",
        {"lens": 35},
        False,
    )
    assert client.upload(first).duplicate is True
    path = tmp_path / "second.png"
    path.write_bytes(second)
    from_path = client.upload(path)
    assert from_path.filename == "second.png"
    from_file = client.upload(io.BytesIO(third), filename="third.png")

    signed = client.image_url(created.id)
    assert requests.get(signed.url, timeout=10).content == first
    assert signed.expires_at > time.time()
    assert requests.get(client.content_url(created.id), timeout=10).content == first
    assert client.download(from_path.id) == second
    # By URL: the server fetches its own signed URL (loopback allowed for this server): the same bytes.
    by_url = client.upload_url(signed.url, origin="web")
    assert (by_url.id, by_url.duplicate) == (created.id, True)
    with pytest.raises(InvalidRequest) as refused:
        client.upload_url(f"http://127.0.0.1:{free_port()}/gone.png")
    assert refused.value.status == 422

    page = client.images(limit=2)
    assert [image.id for image in page] == [created.id, from_path.id]
    assert page.next_cursor is not None
    assert [image.id for image in client.images(limit=2, cursor=page.next_cursor)] == [from_file.id]
    assert [image.id for image in client.iterate(client.images, limit=1)] == [created.id, from_path.id, from_file.id]
    assert [image.id for image in client.images(origin="cam")] == [created.id]

    client.register("ocr")
    assert client.image(created.id).jobs == {"ocr": "pending"}
    assert client.image(created.id).sha256 == created.sha256

    client.delete_image(created.id)
    with pytest.raises(NotFound) as missing:
        client.image(created.id)
    assert missing.value.status == 404
    assert "no image" in missing.value.description


def test_every_software_and_job_route_answers_with_typed_values(client):
    ids = [client.upload(data).id for data in distinct_images(4)]
    faces = {"faces": {"x": "int", "w": "int"}}
    software = client.register("faces", lease_seconds=30, max_attempts=2, tables=faces)
    assert isinstance(software, Software)
    assert (software.lease_seconds, software.max_attempts, software.tables) == (30, 2, faces)
    assert software.counts["pending"] == 4
    with pytest.raises(Conflict) as twice:
        client.register("faces")
    assert twice.value.status == 409 and not isinstance(twice.value, LeaseLost)
    assert [item.name for item in client.software_list()] == ["faces"]

    assert client.pause("faces").paused is True
    assert client.claim("faces", 4) == []
    assert client.resume("faces").paused is False

    jobs = client.claim("faces", 3, lease_seconds=20, wait_seconds=1)
    assert [job.image_id for job in jobs] == ids[:3]
    assert all(isinstance(job, ClaimedJob) and job.attempt == 1 for job in jobs)
    assert jobs[0].image.id == ids[0] and jobs[0].url.startswith("http")
    first, second, third = jobs
    assert client.extend("faces", first.image_id, first.token, lease_seconds=60) > first.lease_expires_at

    done = client.submit("faces", first.image_id, first.token, {"found": 1}, {"faces": [{"x": 1, "w": 9}]})
    assert isinstance(done, Job) and (done.status, done.info) == ("done", {"found": 1})
    assert client.job("faces", first.image_id) == done
    [row] = client.rows("faces", "faces", image_id=first.image_id)
    assert (row["x"], row["w"], row["image_id"]) == (1, 9, first.image_id)

    outcomes = client.submit_many(
        "faces",
        [
            Result(second.image_id, second.token, {"found": 0}),
            Result(first.image_id, "not-the-token", {"found": 5}),
            Result(third.image_id, third.token, {"found": 1}, {"faces": [{"nope": 1}]}),
        ],
    )
    assert [(outcome.image_id, outcome.status) for outcome in outcomes] == [
        (second.image_id, "done"),
        (first.image_id, "stale"),
        (third.image_id, "invalid"),
    ]
    assert "nope" in (outcomes[2].description or "")

    failed = client.fail("faces", third.image_id, third.token, "ValueError: no", retry=False)
    assert (failed.status, failed.error) == ("failed", "ValueError: no")
    [fourth] = client.claim("faces")
    assert client.release("faces", fourth.image_id, fourth.token).status == "pending"

    assert [job.image_id for job in client.jobs("faces", status="done")] == [first.image_id, second.image_id]
    page = client.jobs("faces", limit=3)
    assert len(page) == 3 and page.next_cursor is not None
    assert [job.image_id for job in client.iterate(client.jobs, "faces", limit=3)] == ids
    assert client.requeue("faces", "failed") == 1
    assert client.job("faces", third.image_id).status == "pending"
    assert client.software("faces").counts == {
        "pending": 2,
        "claimed": 0,
        "done": 2,
        "failed": 0,
        "skipped": 0,
        "outdated": 0,
    }
    assert client.health().ok is True


def test_software_list_gives_every_software_following_the_pages(client):
    names = [f"software_{number:03d}" for number in range(101)]  # one more than the server's default page
    for name in names:
        client.register(name)
    first = client.software_page(limit=60)
    assert [software.name for software in first] == names[:60] and first.next_cursor is not None
    last = client.software_page(limit=60, cursor=first.next_cursor)
    assert [software.name for software in last] == names[60:] and last.next_cursor is None
    assert [software.name for software in client.software_list()] == names


class RecordingFile(io.BufferedReader):
    """A file that records the size of every read asked of it."""

    def __init__(self, path: os.PathLike[str]):
        super().__init__(io.FileIO(path, "rb"))
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return super().read(size)


def noise_png(side: int = 256) -> bytes:
    """A PNG that compresses badly: about 3 bytes a pixel."""
    out = io.BytesIO()
    PIL.Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG")
    return out.getvalue()


def test_an_upload_streams_the_file_a_chunk_at_a_time(client, tmp_path):
    photo = noise_png()
    path = tmp_path / "noise.png"
    path.write_bytes(b"skipped" + photo)
    with RecordingFile(path) as file:
        file.seek(len(b"skipped"))  # a file object is sent from where it stands
        uploaded = client.upload(file, origin="cam")
    assert (uploaded.filename, uploaded.size, uploaded.origin) == ("noise.png", len(photo), "cam")
    assert uploaded.sha256 == hashlib.sha256(photo).hexdigest()
    assert client.download(uploaded.id) == photo
    assert len(file.sizes) > 4
    assert all(size is not None and 0 < size <= len(photo) // 4 for size in file.sizes), file.sizes


class UploadAnswers(http.server.BaseHTTPRequestHandler):
    """Reads each upload's body whole into ``bodies`` and answers the next status of ``script``."""

    script: ClassVar[list[int]] = []
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.script[len(self.bodies) - 1]
        image = {"id": "i", "filename": "f", "uploaded_date": 1.0, "origin": None, "other_data": None}
        body = json.dumps(image | {"sha256": "s", "size": 1}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def opened_pipe(data: bytes) -> io.BufferedReader:
    """A file object that cannot seek, holding ``data``."""
    read_end, write_end = os.pipe()
    threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)), daemon=True).start()
    return os.fdopen(read_end, "rb")


@pytest.mark.parametrize("source", ["path", "file", "pipe", "bytes"])
def test_an_upload_answered_503_is_sent_again_whole(source, tmp_path):
    photo = noise_png(64)
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    handler: Any = type("Answers", (UploadAnswers,), {"script": [503, 503, 201], "bodies": []})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        sources = {
            "path": lambda: path,
            "file": lambda: path.open("rb"),
            "pipe": lambda: opened_pipe(photo),
            "bytes": lambda: photo,
        }
        sent = sources[source]()
        with Client(f"http://127.0.0.1:{httpd.server_address[1]}", retries=2, backoff_seconds=0.01) as client:
            assert client.upload(sent, priority=3).id == "i"
        if isinstance(sent, io.IOBase):
            sent.close()
        httpd.shutdown()
    first, second, third = handler.bodies
    assert first == second == third
    assert photo in first and b'name="priority"\r\n\r\n3\r\n' in first
    named = "photo.png" if source in ("path", "file") else "upload"  # bytes and a pipe have no name
    assert f'filename="{named}"'.encode() in first


def test_pipelines_priorities_and_filters_through_the_sdk(client):
    client.register("faces")
    encoding = client.register("encoding", after=["faces"])
    roads = client.register("plates", origins=["road_cam"])
    assert (encoding.after, roads.origins) == (["faces"], ["road_cam"])
    first, second = (client.upload(data, origin="road_cam") for data in distinct_images(2))
    urgent = client.upload(image_bytes((1, 2, 3)), priority=7)
    assert urgent.priority == 7 and client.set_priority(first.id, 8).priority == 8
    assert [job.image_id for job in client.claim("plates", 5)] == [first.id, second.id]  # urgent is not a road image
    assert client.job("plates", urgent.id).status == "skipped"

    [found] = client.claim("faces")
    assert found.image_id == first.id and found.upstream is None
    client.submit("faces", found.image_id, found.token, [{"x": 1, "y": 1, "w": 2, "h": 2}])
    [encode] = client.claim("encoding", 5)
    assert encode.upstream == encode.image.upstream == {"faces": [{"x": 1, "y": 1, "w": 2, "h": 2}]}


def test_errors_carry_status_title_and_description(client, server):
    image_id = client.upload(image_bytes()).id
    client.register("faces")
    with pytest.raises(NotFound) as unknown:
        client.claim("nobody")
    assert (unknown.value.status, unknown.value.description) == (404, "no software named 'nobody'")
    with pytest.raises(InvalidRequest) as bad:
        client.claim("faces", 500)
    assert bad.value.status == 400 and "max" in bad.value.description
    with pytest.raises(InvalidRequest) as not_an_image:
        client.upload(b"plain text, not a picture")
    assert not_an_image.value.status == 415
    [job] = client.claim("faces")
    for call in (
        lambda: client.extend("faces", image_id, "stale-token"),
        lambda: client.submit("faces", image_id, "stale-token", {}),
        lambda: client.fail("faces", image_id, "stale-token", "x"),
        lambda: client.release("faces", image_id, "stale-token"),
    ):
        with pytest.raises(LeaseLost) as lost:
            call()
        assert lost.value.status == 409 and lost.value.title and lost.value.description
    assert client.release("faces", image_id, job.token).status == "pending"

    _, other_software = tokens.create_token("worker", software="ocr", clock=time.time)
    _, faces_worker = tokens.create_token("worker", software="faces", clock=time.time)
    with pytest.raises(Unauthorized) as anonymous:
        client.images()
    assert anonymous.value.status == 401
    with Client(server.url, other_software) as wrong, pytest.raises(Forbidden) as forbidden:
        wrong.claim("faces")
    assert forbidden.value.status == 403 and "ocr" in forbidden.value.description
    with Client(server.url, faces_worker) as right:
        assert [job.image_id for job in right.claim("faces")] == [image_id]
        with pytest.raises(Forbidden):
            right.delete_image(image_id)
        assert right.health().ok  # health needs no token and is sent none
    assert isinstance(forbidden.value, HeartbeatError)


SOFTWARE_ANSWER = b'{"name": "x", "lease_seconds": 1, "max_attempts": 1, "tables": {}, "counts": {}}'


class ScriptedAnswers(http.server.BaseHTTPRequestHandler):
    """Answers each request with the next status of ``script`` (the last one repeats), counting them;
    a redirect points to ``/redirected``."""

    script: ClassVar[list[int]] = []
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        status = self.script[min(len(self.seen), len(self.script)) - 1]
        body = SOFTWARE_ANSWER
        if status != 200:
            body = b'{"title": "scripted", "description": "as scripted"}'
        self.send_response(status)
        if status in (301, 302, 303, 307, 308):
            self.send_header("Location", "/redirected")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[ScriptedAnswers]]]:
    """A loopback HTTP server that answers as a test scripts it (the retry policy under test is the client's)."""
    handler = type("Answers", (ScriptedAnswers,), {"script": [], "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def test_503_is_retried_with_backoff_until_it_passes_and_4xx_never(scripted):
    url, answers = scripted
    client = Client(url, retries=3, backoff_seconds=0.05)
    answers.script = [503, 503, 200]
    assert client.software("x").name == "x"
    assert len(answers.seen) == 3

    answers.script, answers.seen[:] = [404], []
    with pytest.raises(NotFound):
        client.software("x")
    assert len(answers.seen) == 1

    answers.script, answers.seen[:] = [409], []
    with pytest.raises(Conflict):
        client.software("x")
    assert len(answers.seen) == 1

    answers.script, answers.seen[:] = [503, 404], []
    with pytest.raises(NotFound):
        client.claim("x")  # a 503 was not carried out: a claim too is sent again
    assert len(answers.seen) == 2

    answers.script, answers.seen[:] = [503], []
    with pytest.raises(ServerUnavailable) as unavailable:
        client.software("x")
    assert len(answers.seen) == 4  # the first try and three retries
    assert (unavailable.value.status, unavailable.value.description) == (503, "as scripted")


def test_a_lost_answer_is_sent_again_only_where_that_changes_nothing():
    """A claim whose answer was lost must not go out again: a second claim would lease more jobs,
    and those would sit leased to nobody until their leases ran out."""
    seen: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def hang_up() -> None:
            while True:
                try:
                    connection, _address = listener.accept()
                except OSError:
                    return
                with connection:
                    seen.append(connection.recv(65536).split(b" ")[0])  # read the request, answer nothing

        threading.Thread(target=hang_up, daemon=True).start()
        client = Client(url, retries=2, backoff_seconds=0.01)
        with pytest.raises(ServerUnavailable):
            client.claim("faces", 5)
        assert seen == [b"POST"]
        seen.clear()
        with pytest.raises(ServerUnavailable):
            client.software("faces")
        assert seen == [b"GET"] * 3  # the first try and two retries


def test_connection_errors_are_retried_then_raised_as_server_unavailable():
    client = Client(f"http://127.0.0.1:{free_port()}", retries=2, backoff_seconds=0.05)
    started = time.monotonic()
    with pytest.raises(ServerUnavailable) as unavailable:
        client.software_list()
    assert unavailable.value.status is None
    assert time.monotonic() - started >= 0.1  # the backoff before the second retry (0.05 * 2)


def test_the_storage_url_is_fetched_without_the_api_token(scripted):
    url, answers = scripted
    answers.script = [200]
    seen_headers: list[str] = []
    original = answers.do_GET

    def recording(self: ScriptedAnswers) -> None:
        seen_headers.append(self.headers.get("Authorization") or "")
        original(self)

    answers.do_GET = recording  # type: ignore[method-assign]
    with Client(url, "secret-token") as client:
        client.software("x")
        client.fetch(f"{url}/blob")
    assert seen_headers == ["Bearer secret-token", ""]


def test_a_download_follows_redirects_and_retries_503s_but_never_a_4xx(scripted):
    url, answers = scripted
    client = Client(url, backoff_seconds=0.01)
    answers.script = [503, 307, 200]
    assert client.fetch(f"{url}/blob?signature=s") == SOFTWARE_ANSWER
    assert answers.seen == ["/blob?signature=s", "/blob?signature=s", "/redirected"]

    answers.script, answers.seen[:] = [404], []
    with pytest.raises(NotFound):
        client.fetch(f"{url}/blob")
    assert answers.seen == ["/blob"]


def test_a_download_is_retried_and_timed_out_as_its_client_says():
    """The storage pools are the client's: its retries and its timeout, not a module's own."""
    seen: list[bytes] = []
    held: list[socket.socket] = []  # answered never, closed only when the test ends
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def never_answer() -> None:
            while True:
                try:
                    connection, _address = listener.accept()
                except OSError:
                    return
                held.append(connection)
                seen.append(connection.recv(65536).split(b" ")[0])

        threading.Thread(target=never_answer, daemon=True).start()
        started = time.monotonic()
        client = Client(url, timeout_seconds=0.2, retries=1, backoff_seconds=0.01)
        with client, pytest.raises(ServerUnavailable):
            client.fetch(f"{url}/blob")
        assert seen == [b"GET"] * 2  # the first try and one retry
        assert time.monotonic() - started < 10  # each try waited 0.2 s, not a default of its own
    for connection in held:
        connection.close()


def test_closing_the_client_closes_its_storage_connections(scripted):
    url, answers = scripted
    closed = threading.Event()
    answers.protocol_version = "HTTP/1.1"  # keep-alive: the connection stays open until the client closes it
    answers.finish = lambda self: (http.server.BaseHTTPRequestHandler.finish(self), closed.set())  # type: ignore[method-assign]
    answers.script = [200]
    with Client(url) as client:
        assert client.fetch(f"{url}/blob") == SOFTWARE_ANSWER
        assert client.fetch(f"{url}/blob") == SOFTWARE_ANSWER
        assert not closed.is_set()
    assert closed.wait(10)
    assert answers.seen == ["/blob", "/blob"]


def test_a_download_goes_through_the_proxy_the_environment_names(scripted, monkeypatch):
    url, answers = scripted
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    answers.script = [200]
    with Client("http://api.invalid") as client:
        assert client.fetch("http://storage.invalid/blob?signature=s") == SOFTWARE_ANSWER
    assert answers.seen == ["http://storage.invalid/blob?signature=s"]  # a proxy is sent the whole URL


def test_the_api_is_reached_through_the_proxy_the_environment_names(scripted, monkeypatch):
    url, answers = scripted
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    answers.script = [200]
    assert Client("http://api.invalid").software("x").name == "x"
    assert answers.seen == ["http://api.invalid/v1/software/x"]


def test_the_token_is_sent_even_where_netrc_names_the_api_host(scripted, monkeypatch, tmp_path):
    """requests would replace the bearer token with a ~/.netrc login for the host: the API takes none."""
    url, answers = scripted
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    answers.script = [200]
    sent: list[str] = []
    original = answers.do_GET

    def recording(self: ScriptedAnswers) -> None:
        sent.append(self.headers.get("Authorization") or "")
        original(self)

    answers.do_GET = recording  # type: ignore[method-assign]
    Client(url, "secret-token").software("x")
    assert sent == ["Bearer secret-token"]


def test_versions_through_the_sdk(client):
    client.register("versioned", version="a")
    image = client.upload(image_bytes((9, 8, 7)))
    [job] = client.claim("versioned")
    assert job.version == "a"
    assert client.submit("versioned", job.image_id, job.token, {"n": 1}).version == "a"
    changed = client.update("versioned", version="b", recompute=False)
    assert (changed.version, changed.counts["outdated"]) == ("b", 1)
    assert [item.image_id for item in client.jobs("versioned", version="a")] == [image.id]
    reopened = client.update("versioned", version="c", lease_seconds=30)
    assert (reopened.counts["pending"], reopened.lease_seconds) == (1, 30)
