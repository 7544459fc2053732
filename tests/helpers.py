"""Helpers the tests share: real pictures, multipart bodies, and the common API calls."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import falcon.testing
import peewee
import PIL.Image
import requests

from heartbeat.db.database import Database, Features
from heartbeat.storage import Storage

# Falcon's test client answers as this host: the URLs the API signs itself name it.
TEST_CLIENT_HOST = "falconframework.org"


def image_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24), fmt: str = "JPEG"
) -> bytes:
    """A small real picture; a different colour gives different bytes."""
    out = io.BytesIO()
    PIL.Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def distinct_images(count: int) -> list[bytes]:
    return [image_bytes(((i * 37) % 256, (i * 91) % 256, i // 256 % 256), fmt="PNG") for i in range(count)]


def multipart(
    fields: dict[str, str] | None = None, file: bytes | None = None, filename: str = "photo.jpg"
) -> dict[str, Any]:
    """Keyword arguments for ``client.simulate_post`` that send a multipart form."""
    boundary = "heartbeat-test-boundary"
    body = io.BytesIO()
    for name, value in (fields or {}).items():
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    if file is not None:
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        body.write(file + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return {"body": body.getvalue(), "headers": {"Content-Type": f"multipart/form-data; boundary={boundary}"}}


def upload(
    client: falcon.testing.TestClient,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> falcon.testing.Result:
    form = multipart(fields, data if data is not None else image_bytes())
    return client.simulate_post("/v1/images", body=form["body"], headers=form["headers"] | (headers or {}))


def register(
    client: falcon.testing.TestClient,
    name: str = "face_detection",
    headers: dict[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    result = client.simulate_post("/v1/software", json={"name": name, **options}, headers=headers)
    assert result.status_code == 201, result.text
    return result.json


def claim(
    client: falcon.testing.TestClient,
    name: str = "face_detection",
    headers: dict[str, str] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    result = client.simulate_post(f"/v1/software/{name}/claim", json=options, headers=headers)
    assert result.status_code == 200, result.text
    return result.json["jobs"]


def heartbeat(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``heartbeat ARGS`` in a fresh process, with no HEARTBEAT_* settings but those given."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    return subprocess.run(
        [sys.executable, "-m", "heartbeat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean | (env or {}),
    )


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class Fetched:
    status_code: int
    content: bytes
    headers: Mapping[str, str]


def _through_test_client(url: str) -> bool:
    return urlsplit(url).netloc in ("", TEST_CLIENT_HOST)


def fetch_url(client: falcon.testing.TestClient, url: str) -> Fetched:
    """GET a URL the API handed out: its own signed route through the test client, or the store's
    presigned URL over real HTTP."""
    if _through_test_client(url):
        parts = urlsplit(url)
        result = client.simulate_get(parts.path, query_string=parts.query)
        return Fetched(result.status_code, result.content, result.headers)
    response = requests.get(url, timeout=30)
    return Fetched(response.status_code, response.content, response.headers)


def put_url(client: falcon.testing.TestClient, url: str, data: bytes) -> int:
    """PUT bytes to a direct upload's URL, as ``fetch_url`` GETs; the status code."""
    if _through_test_client(url):
        parts = urlsplit(url)
        return client.simulate_put(parts.path, query_string=parts.query, body=data).status_code
    return requests.put(url, data=data, timeout=30).status_code


def stored_keys(storage: Storage, prefix: str = "") -> list[str]:
    """Every object key in the store (pictures under images/, thumbnails under thumbnails/, ...), sorted."""
    return sorted(stored.key for stored in storage.list_objects(prefix))


def unreachable_database() -> Database:
    """A MariaDB that does not answer: nothing listens on its port."""
    engine = peewee.MySQLDatabase("x", host="127.0.0.1", port=free_port(), user="root", connect_timeout=2)
    return Database(engine, Features(mysql=True, skip_locked=True, max_result_bytes=None, collation=None))
