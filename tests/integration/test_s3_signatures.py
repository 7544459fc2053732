"""What a presigned URL is worth to a store that checks AWS Signature V4 (rclone serve s3, or the
MinIO of HEARTBEAT_TEST_S3_*), in every pass: the store, not Heartbeat, says yes or no here. A
store that accepted any signature (moto's) would fail every refusal below."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import falcon.testing
import pytest
import requests

import heartbeat.storage.s3
from heartbeat.app import create_app
from heartbeat.config import Settings
from heartbeat.storage import open_storage
from helpers import claim, image_bytes, register, upload


@pytest.fixture
def s3_settings(tmp_path, db_auth, s3_service, s3_bucket) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_auth=db_auth, **s3_service.settings(s3_bucket))


def with_host(url: str, host: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}"))


def altered(url: str) -> str:
    """The URL with the last hex digit of its signature changed."""
    last = url[-1]
    return url[:-1] + ("0" if last != "0" else "1")


def test_a_presigned_get_and_put_work_and_an_altered_signature_is_refused(s3_settings):
    storage = open_storage(s3_settings)
    data = image_bytes(fmt="PNG")
    put = storage.presigned_put("uploads/signed", expires_seconds=60, base_url="").url
    assert requests.put(altered(put), data=data, timeout=30).status_code == 403
    assert storage.stat("uploads/signed") is None
    assert requests.put(put, data=data, timeout=30).status_code == 200
    get = storage.presigned_get("uploads/signed", expires_seconds=60, base_url="").url
    fetched = requests.get(get, timeout=30)
    assert (fetched.status_code, fetched.content) == (200, data)
    assert requests.get(altered(get), timeout=30).status_code == 403
    # A URL signed for one key does not open another.
    assert requests.get(get.replace("uploads/signed", "uploads/other"), timeout=30).status_code == 403


def test_an_expired_presigned_url_is_refused(s3_settings, monkeypatch):
    storage = open_storage(s3_settings)
    storage.put_file("images/ab/expired.bin", _file(s3_settings, b"bytes"), "application/octet-stream")
    now = time.time()
    monkeypatch.setattr(heartbeat.storage.s3.time, "time", lambda: now - 120)  # signed two minutes ago
    expired = storage.presigned_get("images/ab/expired.bin", expires_seconds=60, base_url="")
    monkeypatch.undo()
    assert expired.expires_at < now
    refused = requests.get(expired.url, timeout=30)
    assert 400 <= refused.status_code < 500, refused.text
    assert b"bytes" not in refused.content
    fresh = storage.presigned_get("images/ab/expired.bin", expires_seconds=60, base_url="")
    assert requests.get(fresh.url, timeout=30).content == b"bytes"


def test_a_url_signed_for_the_public_endpoint_works_through_that_name_only(s3_settings, database, clock):
    port = urlsplit(s3_settings.s3_endpoint).port
    if urlsplit(s3_settings.s3_endpoint).hostname != "127.0.0.1":
        pytest.skip("needs the store at 127.0.0.1 (the test's own rclone), to reach it by two names")
    public = dataclasses.replace(
        s3_settings, s3_endpoint=f"http://127.0.0.1:{port}", s3_public_endpoint=f"localhost:{port}", s3_secure=False
    )
    client = falcon.testing.TestClient(
        create_app(public, database=database, storage=open_storage(public, clock), clock=clock)
    )
    register(client, "ocr")
    data = image_bytes((9, 8, 7))
    assert upload(client, data).status_code == 201
    (job,) = claim(client, "ocr")
    assert urlsplit(job["url"]).hostname == "localhost"
    fetched = requests.get(job["url"], timeout=30)
    assert (fetched.status_code, fetched.content) == (200, data)
    assert requests.get(with_host(job["url"], "127.0.0.1"), timeout=30).status_code == 403


def _file(settings: Settings, data: bytes) -> Path:
    path = settings.data_dir / "scratch.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
