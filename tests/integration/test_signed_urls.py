"""The API's own signed URLs for local storage: valid ones serve, forged or expired ones do not.

About the local backend alone: an S3 store signs and checks its own URLs (tests/integration/test_s3_storage.py).
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlencode, urlsplit

import falcon.testing
import pytest

from heartbeat.app import create_app
from heartbeat.storage import open_storage
from helpers import TEST_CLIENT_HOST, distinct_images, upload

pytestmark = pytest.mark.local_storage


def get(client, url, **query_changes):
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()} | query_changes
    return client.simulate_get(parts.path, query_string=urlencode(query))


def signed_url(client, image_id):
    return client.simulate_get(f"/v1/images/{image_id}/url").json


def test_a_signed_url_serves_until_it_expires(client, clock, settings):
    image = upload(client).json
    signed = signed_url(client, image["id"])
    assert signed["expires_at"] == int(clock.now) + settings.signed_url_seconds
    assert get(client, signed["url"]).status_code == 200
    clock.advance(settings.signed_url_seconds + 1)
    expired = get(client, signed["url"])
    assert expired.status_code == 403
    assert "expired" in expired.json["description"]


def test_a_forged_signature_or_a_changed_expiry_is_refused(client):
    url = signed_url(client, upload(client).json["id"])["url"]
    assert get(client, url, signature="0" * 64).status_code == 403
    assert get(client, url, expires="99999999999").status_code == 403
    assert get(client, url, signature="").status_code == 403
    assert get(client, url, signature="äy[¡ü\u0094").status_code == 403  # found by schemathesis: was a 500


def test_a_signature_for_one_image_does_not_open_another(client):
    first, second = (upload(client, data).json["id"] for data in distinct_images(2))
    url_first, url_second = signed_url(client, first)["url"], signed_url(client, second)["url"]
    signature = parse_qs(urlsplit(url_first).query)["signature"][0]
    assert get(client, url_second, signature=signature).status_code == 403


def test_signed_urls_survive_a_restart(client, settings, database, clock):
    image = upload(client).json
    url = signed_url(client, image["id"])["url"]
    restarted = falcon.testing.TestClient(
        create_app(settings, database=database, storage=open_storage(settings, clock), clock=clock)
    )
    assert get(restarted, url).status_code == 200
    assert (settings.data_dir / "secret.key").stat().st_mode & 0o077 == 0


def test_urls_name_the_public_url_when_one_is_configured(settings, database, clock):
    public = dataclasses.replace(settings, public_url="https://heartbeat.example.org/")
    client = falcon.testing.TestClient(
        create_app(public, database=database, storage=open_storage(public, clock), clock=clock)
    )
    url = signed_url(client, upload(client).json["id"])["url"]
    assert url.startswith("https://heartbeat.example.org/v1/blobs/")


def test_a_missing_object_behind_a_valid_signature_answers_404(client, settings):
    image = upload(client).json
    url = signed_url(client, image["id"])["url"]
    for path in settings.local_storage_dir.rglob("*.jpg"):
        path.unlink()
    assert get(client, url).status_code == 404


def put(client, url, data, **query_changes):
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()} | query_changes
    return client.simulate_put(parts.path, query_string=urlencode(query), body=data)


def test_a_direct_upload_url_takes_bytes_only_with_its_signature_and_until_it_expires(client, clock, settings):
    started = client.simulate_post("/v1/uploads").json
    assert started["url"].startswith(f"http://{TEST_CLIENT_HOST}/v1/blobs/uploads/")
    assert put(client, started["url"], b"bytes", signature="0" * 64).status_code == 403
    assert put(client, started["url"], b"bytes", expires="99999999999").status_code == 403
    assert get(client, started["url"]).status_code == 403, "a PUT signature does not open the object for GET"
    clock.advance(settings.signed_url_seconds + 1)
    assert put(client, started["url"], b"bytes").status_code == 403
    assert list(settings.local_storage_dir.rglob("*")) == []


def test_a_get_signature_does_not_allow_a_put(client, settings):
    image = upload(client).json
    url = signed_url(client, image["id"])["url"]
    assert put(client, url, b"overwritten").status_code == 403
    assert get(client, url).content != b"overwritten"
