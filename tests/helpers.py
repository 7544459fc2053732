"""Helpers the tests share: real pictures, multipart bodies, and the common API calls."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import importlib.util
import io
import os
import pathlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import falcon.testing
import peewee
import PIL.Image
import requests

from heartbeat.db.database import Database, Features
from heartbeat.db.models import Image
from heartbeat.storage import Storage

# The Host the test clients send (conftest.py makes it their default, as a local client's): the URLs
# the API signs itself name it. Falcon's own default, falconframework.org, is what a page that rebinds
# its DNS name to 127.0.0.1 would send, and an open server refuses it.
TEST_CLIENT_HOST = "localhost"


def image_bytes(
    color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 24), fmt: str = "JPEG"
) -> bytes:
    """A small real picture; a different colour gives different bytes."""
    out = io.BytesIO()
    PIL.Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


# How a camera stores a picture it tags with each EXIF orientation: the upright picture turned by
# this transpose (the EXIF specification's table, written out here rather than taken from the code
# under test; 6, for one, is a camera turned a quarter clockwise, its pixels a quarter anticlockwise).
STORED_TURNS = {
    1: None,
    2: PIL.Image.Transpose.FLIP_LEFT_RIGHT,
    3: PIL.Image.Transpose.ROTATE_180,
    4: PIL.Image.Transpose.FLIP_TOP_BOTTOM,
    5: PIL.Image.Transpose.TRANSPOSE,
    6: PIL.Image.Transpose.ROTATE_90,
    7: PIL.Image.Transpose.TRANSVERSE,
    8: PIL.Image.Transpose.ROTATE_270,
}


def oriented(upright: PIL.Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    """``upright`` as a camera stores it with EXIF ``orientation`` (1 to 8), saying so: a JPEG (quality
    95), or a PNG, TIFF or WebP (lossless: its pixels turned back are the upright ones exactly)."""
    turn = STORED_TURNS[orientation]
    stored = (upright if turn is None else upright.transpose(turn)).convert("RGB")
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    options: dict[str, Any] = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    out = io.BytesIO()
    stored.save(out, fmt, exif=exif.tobytes(), **options)
    return out.getvalue()


@functools.cache
def upright_astronaut() -> PIL.Image.Image:
    """Eileen Collins' portrait from scikit-image, cropped wider than high (512 x 384), so that a
    picture stored sideways shows it; her face is near x 177, y 71, 85 pixels wide."""
    import skimage.data

    photo = pathlib.Path(skimage.data.__file__).parent / "astronaut.png"
    with PIL.Image.open(photo) as picture:
        return picture.convert("RGB").crop((0, 0, 512, 384))


def as_stored_before_orientation(database: Database) -> None:
    """The images table as the release before ``orientation`` left it: no such column (nor its index),
    and ``width``/``height`` as the pixels are stored, not upright."""
    for image in Image.select().where(Image.orientation.in_([5, 6, 7, 8])):  # one by one: MySQL's SET
        Image.update(width=image.height, height=image.width).where(Image.id == image.id).execute()  # is in order
    [index] = [index for index in Image._meta.fields_to_index() if "orientation" in index._name]
    on_table = f" ON {database.quote('images')}" if database.features.mysql else ""
    database.execute(f"DROP INDEX {database.quote(index._name)}{on_table}")
    database.execute(f"ALTER TABLE {database.quote('images')} DROP COLUMN {database.quote('orientation')}")


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


def heartbeat(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: pathlib.Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``heartbeat ARGS`` in a fresh process (in ``cwd``), with no HEARTBEAT_* settings but those given."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    return subprocess.run(
        [sys.executable, "-m", "heartbeat", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean | (env or {}),
        cwd=cwd,
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


def direct_upload(client: falcon.testing.TestClient, data: bytes, **fields: Any) -> falcon.testing.Result:
    """A direct upload of ``data``: ``POST /v1/uploads``, the PUT to its URL, then ``/complete``."""
    started = client.simulate_post("/v1/uploads")
    assert started.status_code == 201, started.text
    assert put_url(client, started.json["url"], data) in (200, 204)
    return client.simulate_post(f"/v1/uploads/{started.json['upload_id']}/complete", json=fields)


@contextlib.contextmanager
def serving(files: Mapping[str, bytes]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering ``files[path]`` (404 for any other path), for uploads by
    URL; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stored_keys(storage: Storage, prefix: str = "") -> list[str]:
    """Every object key in the store (pictures under images/, thumbnails under thumbnails/, ...), sorted."""
    return sorted(stored.key for stored in storage.list_objects(prefix))


def unreachable_database() -> Database:
    """A MariaDB that does not answer: nothing listens on its port."""
    engine = peewee.MySQLDatabase("x", host="127.0.0.1", port=free_port(), user="root", connect_timeout=2)
    return Database(engine, Features(mysql=True, skip_locked=True, max_result_bytes=None, collation=None))


def load_make_env() -> Any:
    """``deploy/make_env.py`` (a script, not a module of the package) loaded as a module."""
    path = pathlib.Path(__file__).parents[1] / "deploy" / "make_env.py"
    spec = importlib.util.spec_from_file_location("make_env", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
