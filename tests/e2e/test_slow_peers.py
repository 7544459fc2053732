"""No peer holds what other requests need: a served API with one thread (or a few) still answers
a health check at once while a client sends its body slowly, reads an answer slowly, idles on many
keep-alive connections, or holds more connections than ``select()`` can watch.

Each test runs ``heartbeat serve`` as a real process, since these are promises of waitress as
Heartbeat configures it (``heartbeat.server.adjustments``), which Falcon's test client never meets.
"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from heartbeat.config import Settings
from heartbeat.server.adjustments import waitress_options

HEALTH_SECONDS = 5  # an idle server answers in milliseconds; this is only how long we wait to be sure it does not
LARGE_DOWNLOAD_BYTES = 40 * 1024 * 1024  # well past waitress's 16 MiB outbuf_high_watermark and the socket buffers


def health_answers(url: str) -> bool:
    return requests.get(f"{url}/v1/health", timeout=HEALTH_SECONDS).status_code == 200


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return str(parts.hostname), int(parts.port or 80)


@contextlib.contextmanager
def keep_alive_connections(url: str, count: int) -> Iterator[list[http.client.HTTPConnection]]:
    """``count`` connections that each made one request and then stay open, idle, as a worker's session does."""
    host, port = address(url)
    connections = []
    try:
        for _ in range(count):
            connection = http.client.HTTPConnection(host, port, timeout=HEALTH_SECONDS)
            connections.append(connection)
            connection.request("GET", "/dashboard/style.css")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            assert not answer.will_close
        yield connections
    finally:
        for connection in connections:
            connection.close()


def test_a_client_trickling_a_request_body_holds_no_thread(start_server):
    server = start_server("--threads", "1")
    head = (
        "POST /v1/images HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(address(server.url), timeout=HEALTH_SECONDS) as trickle:
        trickle.sendall(head.encode())
        for piece in (b"--b\r\n", b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n', b"\xff"):
            trickle.sendall(piece)
            assert health_answers(server.url)  # the one thread is free: waitress is still reading the body


@pytest.mark.local_storage
def test_a_client_reading_a_large_download_slowly_holds_no_thread(start_server, server_storage, tmp_path):
    server = start_server("--threads", "1")
    storage = server_storage(server.data_dir)
    large = tmp_path / "large.png"
    with open(large, "wb") as out:
        out.truncate(LARGE_DOWNLOAD_BYTES)
    storage.put_file("images/la/large.png", large, "image/png")
    signed = urlsplit(
        storage.presigned_get("images/la/large.png", expires_seconds=600, base_url=f"{server.url}/v1/blobs").url
    )

    with socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the slowest reader: one that reads nothing
        reader.settimeout(HEALTH_SECONDS)
        reader.connect(address(server.url))
        reader.sendall(f"GET {signed.path}?{signed.query} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = reader.recv(64)
        assert received.startswith(b"HTTP/1.1 200"), received

        assert health_answers(server.url)

        while b"\r\n\r\n" not in received:  # then it reads it all, at its own pace, and gets every byte
            received += reader.recv(4096)
        body_bytes = len(received.partition(b"\r\n\r\n")[2])
        while body_bytes < LARGE_DOWNLOAD_BYTES and (chunk := reader.recv(1024 * 1024)):
            body_bytes += len(chunk)
        assert body_bytes == LARGE_DOWNLOAD_BYTES


def test_idle_keep_alive_connections_past_a_hundred_hold_no_thread_and_leave_room(start_server):
    # waitress's own connection limit is 100: a fleet's idle sessions would lock everyone else out.
    server = start_server("--threads", "1")
    with keep_alive_connections(server.url, 150):
        assert health_answers(server.url)


@pytest.fixture
def server_started_with_1024_files(start_server):
    """A server started as a Debian shell starts it: allowed 1024 open files unless it asks for more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this machine's hard limit of {hard} open files is below the 2048 this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        server = start_server("--threads", "2", "--connection-limit", "1500")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return server


def test_more_connections_than_select_can_watch_are_served(server_started_with_1024_files):
    server = server_started_with_1024_files
    with keep_alive_connections(server.url, 1100):
        assert health_answers(server.url)


def test_the_connection_limit_lowers_itself_to_the_files_the_process_may_open(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: pytest.fail("no room to raise the limit"))
    options = waitress_options(Settings(threads=4, connection_limit=5000))
    assert 0 < options["connection_limit"] < 1024
