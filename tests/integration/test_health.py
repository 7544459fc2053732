"""``GET /v1/health`` tells whether the database and the storage answer."""

from __future__ import annotations

import shutil

from conftest import STORAGE


def test_health_is_ok_when_database_and_storage_answer(client):
    result = client.simulate_get("/v1/health")
    assert result.status_code == 200
    assert result.json == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}


def test_health_answers_503_naming_the_storage_when_its_folder_or_bucket_is_gone(client, settings, request):
    if STORAGE == "s3":
        request.getfixturevalue("s3_service").client().remove_bucket(settings.storage.removeprefix("s3://"))
    else:
        shutil.rmtree(settings.local_storage_dir)
    result = client.simulate_get("/v1/health")
    assert result.status_code == 503
    assert result.json["checks"]["database"] == "ok"
    assert result.json["checks"]["storage"].startswith("unreachable")
