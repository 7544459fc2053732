"""The S3 backend over real S3 HTTP (rclone serve s3, or the MinIO of HEARTBEAT_TEST_S3_*), in every pass.

What a signature covers (the host it names, its lifetime, its region) is read off the URL here; that
the store checks it is test_s3_signatures.py's. moto is started here only to stop it (a store that
stops answering).
"""

from __future__ import annotations

import calendar
import dataclasses
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

import falcon.testing
import pytest
import requests
from minio import Minio
from moto.server import ThreadedMotoServer

from heartbeat.app import create_app
from heartbeat.config import SettingError, Settings
from heartbeat.db.models import Image
from heartbeat.storage import open_storage
from heartbeat.storage.s3 import S3Storage, parse_endpoint
from helpers import free_port, image_bytes, put_url, stored_keys, upload


@pytest.fixture
def s3_settings(tmp_path, db_auth, s3_service, s3_bucket) -> Settings:
    return Settings(data_dir=tmp_path / "data", db_auth=db_auth, **s3_service.settings(s3_bucket))


@pytest.fixture
def s3_client(s3_settings, database, clock) -> falcon.testing.TestClient:
    app = create_app(s3_settings, database=database, storage=open_storage(s3_settings, clock), clock=clock)
    return falcon.testing.TestClient(app)


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_the_bucket_is_created_when_missing(s3_settings, s3_service, s3_bucket):
    assert not s3_service.client().bucket_exists(s3_bucket)
    open_storage(s3_settings)
    assert s3_service.client().bucket_exists(s3_bucket)
    open_storage(s3_settings)  # and an existing one is used as it is


def test_an_uploaded_image_is_fetched_by_presigned_url_straight_from_the_store(s3_client, s3_settings):
    data = image_bytes(fmt="PNG")
    image = upload(s3_client, data).json
    signed = s3_client.simulate_get(f"/v1/images/{image['id']}/url").json
    assert signed["url"].startswith(f"{s3_settings.s3_endpoint}/{s3_settings.storage.removeprefix('s3://')}/images/")
    fetched = requests.get(signed["url"], timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Type"] == "image/png"
    redirect = s3_client.simulate_get(f"/v1/images/{image['id']}/content")
    assert redirect.status_code == 307
    assert requests.get(redirect.headers["Location"], timeout=30).content == data


def test_a_presigned_url_made_with_a_public_endpoint_names_that_host_and_the_configured_lifetime(
    s3_settings, database, clock
):
    public = dataclasses.replace(s3_settings, s3_public_endpoint="localhost:19000", signed_url_seconds=1234)
    client = falcon.testing.TestClient(
        create_app(public, database=database, storage=open_storage(public, clock), clock=clock)
    )
    image = upload(client).json
    for url in (
        client.simulate_get(f"/v1/images/{image['id']}/url").json["url"],
        client.simulate_get(f"/v1/images/{image['id']}/content").headers["Location"],
        client.simulate_post("/v1/uploads").json["url"],
    ):
        parts = urlsplit(url)
        # The endpoint is http://, so the public host is too; the signature covers exactly this host.
        assert (parts.scheme, parts.netloc) == ("http", "localhost:19000"), url
        signed = query(url)
        assert signed["X-Amz-SignedHeaders"] == "host"
        assert signed["X-Amz-Expires"] == "1234"
        assert signed["X-Amz-Credential"].split("/")[2] == "us-east-1"
    served = client.simulate_get(f"/v1/images/{image['id']}/url").json
    signed_at = calendar.timegm(time.strptime(query(served["url"])["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    assert served["expires_at"] == signed_at + 1234


def test_presigning_asks_the_store_nothing(s3_service):
    """The region is configured: a store nobody answers for still yields signed URLs."""
    nobody = f"127.0.0.1:{free_port()}"
    dead = Minio(nobody, access_key="k", secret_key="s", secure=False, region="eu-central-1")
    storage = S3Storage(dead, "some-bucket")
    signed = storage.presigned_get("images/ab/abc.png", expires_seconds=60, base_url="ignored")
    assert urlsplit(signed.url).netloc == nobody
    assert query(signed.url)["X-Amz-Credential"].split("/")[2] == "eu-central-1"
    assert query(storage.presigned_put("uploads/x", expires_seconds=60, base_url="").url)["X-Amz-Expires"] == "60"


def test_an_image_whose_object_is_gone_answers_404_for_its_url_and_content(s3_client, s3_settings):
    image = upload(s3_client).json
    storage = open_storage(s3_settings)
    storage.delete(Image.get_by_id(image["id"]).storage_key)
    for suffix in ("url", "content"):
        result = s3_client.simulate_get(f"/v1/images/{image['id']}/{suffix}")
        assert result.status_code == 404, result.text
        assert "missing from storage" in result.json["description"]
    assert s3_client.simulate_get(f"/v1/images/{image['id']}").status_code == 200


def test_a_store_that_stops_answering_gives_503_not_500(s3_settings, database, clock):
    own = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    own.start()
    host, port = own.get_host_and_port()
    settings = dataclasses.replace(s3_settings, s3_endpoint=f"http://{host}:{port}")
    client = falcon.testing.TestClient(
        create_app(settings, database=database, storage=open_storage(settings, clock), clock=clock)
    )
    image = upload(client, image_bytes((1, 1, 1))).json
    own.stop()

    health = client.simulate_get("/v1/health")
    assert health.status_code == 503
    assert health.json["checks"]["database"] == "ok"
    assert health.json["checks"]["storage"].startswith("unreachable: object storage did not answer")
    assert upload(client, image_bytes((2, 2, 2))).status_code == 503
    assert client.simulate_get(f"/v1/images/{image['id']}/url").status_code == 503
    assert [listed["id"] for listed in client.simulate_get("/v1/images").json["images"]] == [image["id"]]


def test_direct_upload_to_s3_refuses_a_too_large_and_a_non_image_object_and_leaves_nothing(
    s3_settings, database, clock
):
    limited = dataclasses.replace(s3_settings, max_upload_bytes=2000)
    storage = open_storage(limited, clock)
    client = falcon.testing.TestClient(create_app(limited, database=database, storage=storage, clock=clock))
    for data, status in ((b"x" * 2001, 413), (b"not a picture at all", 415)):
        started = client.simulate_post("/v1/uploads").json
        assert put_url(client, started["url"], data) == 200  # S3 takes any bytes; completing judges them
        assert stored_keys(storage, "uploads/") == [f"uploads/{started['upload_id']}"]
        completed = client.simulate_post(f"/v1/uploads/{started['upload_id']}/complete", json={})
        assert completed.status_code == status, completed.text
        assert stored_keys(storage) == []
    assert client.simulate_get("/v1/images").json["images"] == []


@pytest.mark.parametrize(
    ("text", "secure", "expected"),
    [
        ("minio:9000", None, ("minio:9000", True)),
        ("minio:9000", False, ("minio:9000", False)),
        ("http://minio:9000", None, ("minio:9000", False)),
        ("https://s3.example.org", False, ("s3.example.org", True)),
        ("http://minio:9000/", None, ("minio:9000", False)),
    ],
)
def test_an_endpoint_is_host_port_or_a_url_whose_scheme_decides(text, secure, expected):
    assert parse_endpoint(text, secure) == expected


@pytest.mark.parametrize("text", ["", "ftp://minio:9000", "http://minio:9000/bucket", "minio:9000/bucket"])
def test_a_bad_endpoint_is_refused_naming_it(text):
    with pytest.raises(SettingError, match="S3 endpoint"):
        parse_endpoint(text, None)


def test_serve_refuses_s3_storage_without_its_settings_and_says_which(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "heartbeat", "serve", "--data-dir", str(tmp_path), "--storage", "s3://images"],
        capture_output=True,
        text=True,
        timeout=60,
        env={name: value for name, value in os.environ.items() if not name.startswith("HEARTBEAT_")},
    )
    assert done.returncode == 2
    assert "HEARTBEAT_S3_ENDPOINT" in done.stderr and "HEARTBEAT_S3_SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr
