"""A real ``heartbeat serve`` as a local attacker or a web page meets it: waitress's own error answers
carry the security headers, an open server refuses a rebinding page's ``Host``, a server that had a
token stays locked, and the data dir is no other user's to read."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from helpers import free_port, image_bytes

SECURITY_HEADERS = {"x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}
HTTP_TIMEOUT = 30


def raw_answer(url: str, request: bytes) -> tuple[int, dict[str, str]]:
    """Send ``request`` as it is on a new connection; the status and headers of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=HTTP_TIMEOUT) as connection:
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = connection.recv(65536)
            if not chunk:
                break
            received += chunk
    head = received.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(head[0].split()[1]), headers


WAITRESS_ANSWERS = {
    "bad-request-line": (400, b"NOT A REQUEST LINE AT ALL\r\n\r\n"),
    "bad-content-length": (400, b"POST /v1/images HTTP/1.1\r\nHost: localhost\r\nContent-Length: x\r\n\r\n"),
    "headers-too-large": (431, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n"),
    "body-too-large": (413, b"POST /v1/images HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n"),
    "unknown-transfer-coding": (
        501,
        b"POST /v1/images HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    ),
}


def test_waitress_own_error_answers_carry_the_security_headers(start_server):
    server = start_server("--max-upload-bytes", "1000")
    for name, (status, request) in WAITRESS_ANSWERS.items():
        answered, headers = raw_answer(server.url, request)
        assert answered == status, name
        assert {key: headers.get(key) for key in SECURITY_HEADERS} == SECURITY_HEADERS, (name, headers)
    # The app's own answers, through the same server, as ever.
    answer = requests.get(f"{server.url}/v1/health", timeout=HTTP_TIMEOUT)
    assert {key: answer.headers.get(key) for key in SECURITY_HEADERS} == SECURITY_HEADERS


def test_head_of_a_streamed_export_has_the_headers_of_get_and_no_body(start_server):
    """An export's length is unknown: GET is chunked, and HEAD must not send the chunked terminator
    (five bytes of body, which a client would take for the start of its next answer)."""
    server = start_server()
    port = urlsplit(server.url).port
    for fmt in ("jsonl", "csv", "coco"):
        head = f"HEAD /v1/export?format={fmt} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=HTTP_TIMEOUT) as connection:
            connection.sendall(head.encode())
            received = b""
            while chunk := connection.recv(65536):
                received += chunk
        first, _, body = received.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 "), received
        assert body == b"", f"HEAD of {fmt} sent a body: {body[:20]!r}"


def test_a_live_open_server_refuses_a_rebinding_pages_host_and_cross_site_writes(start_server):
    server = start_server()
    port = urlsplit(server.url).port
    rebound = requests.get(f"{server.url}/v1/images", headers={"Host": f"rebound.example:{port}"}, timeout=30)
    assert rebound.status_code == 403
    assert "loopback" in rebound.json()["description"]
    assert requests.get(f"{server.url}/v1/images", headers={"Host": f"localhost:{port}"}, timeout=30).ok
    form = {"file": ("a.jpg", image_bytes(), "image/jpeg")}
    cross = requests.post(
        f"{server.url}/v1/images", files=form, headers={"Origin": "http://rebound.example"}, timeout=30
    )
    assert cross.status_code == 403
    assert requests.get(f"{server.url}/v1/images", timeout=30).json()["images"] == []
    same = requests.post(f"{server.url}/v1/images", files=form, headers={"Origin": server.url}, timeout=30)
    assert same.status_code == 201


def heartbeat(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    return subprocess.run(
        [sys.executable, "-m", "heartbeat", *args], capture_output=True, text=True, timeout=60, env=clean
    )


def test_a_server_whose_tokens_are_all_revoked_stays_locked_and_never_serves_beyond_loopback(
    start_server, db_auth_file, tmp_path
):
    data = tmp_path / "data"
    db = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(data)]
    created = heartbeat("token", "create", "--role", "admin", *db)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    server = start_server(data_dir=data)
    assert requests.get(f"{server.url}/v1/images", headers={"Authorization": f"Bearer {secret}"}, timeout=30).ok
    token_id = created.stderr.split("token ")[1].split()[0]
    assert heartbeat("token", "revoke", token_id, *db).returncode == 0
    assert requests.get(f"{server.url}/v1/images", timeout=30).status_code == 401

    server.stop()
    restarted = start_server(data_dir=data)  # a new process reads the same record from the database
    assert requests.get(f"{restarted.url}/v1/images", timeout=30).status_code == 401
    assert requests.get(f"{restarted.url}/v1/health", timeout=30).status_code == 200
    refused = heartbeat("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(data), *db)
    assert refused.returncode == 2
    assert "no live API token" in refused.stderr


def modes(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (itself included) -> its permission bits."""
    found = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        found[str(path.relative_to(folder))] = stat.S_IMODE(path.lstat().st_mode)
    return found


@pytest.mark.local_storage
def test_the_data_dir_and_everything_in_it_are_no_other_users_to_read(start_server, db_auth_file, tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # as an older release left it
    os.chmod(data, 0o755)
    if db_auth_file is None:  # an older release's database, readable by all
        made = heartbeat("software", "add", "face_detection", "--data-dir", str(data))
        assert made.returncode == 0, made.stderr
        for name in ("heartbeat.db", "heartbeat.db-wal", "heartbeat.db-shm"):
            if (data / name).exists():
                os.chmod(data / name, 0o644)
        os.chmod(data, 0o755)
    server = start_server(data_dir=data)
    for number in range(3):
        form = {"file": (f"{number}.png", image_bytes((number, 2, 3), fmt="PNG"), "image/png")}
        assert requests.post(f"{server.url}/v1/images", files=form, timeout=30).status_code == 201

    found = modes(data)
    assert found["."] == 0o700
    assert any(name.startswith("images/") for name in found)  # pictures and thumbnails
    if db_auth_file is None:
        assert {"heartbeat.db", "heartbeat.db-wal", "heartbeat.db-shm"} <= set(found)
    assert "secret.key" in found
    readable = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert readable == {}


def test_commands_make_a_data_dir_and_database_of_their_users_own(tmp_path):
    data = tmp_path / "new"
    made = heartbeat("token", "create", "--role", "reader", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    found = modes(data)
    assert found["."] == 0o700
    assert "heartbeat.db" in found
    assert {name: oct(mode) for name, mode in found.items() if mode & 0o077} == {}
