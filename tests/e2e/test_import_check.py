"""``heartbeat check --fix`` while ``heartbeat import`` runs, as real processes: check never removes
the bytes an import has stored but not yet registered.

An import stores an image's objects (from a folder, a hard link that keeps its file's old
modification time; and a thumbnail) before the transaction that commits its row. Check used to take
such an old link for an orphan: 114 of 150 images were left without their bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.db.models import Image, PendingImage
from heartbeat.ingest import source_import
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.service import open_importer
from heartbeat.storage import Storage, open_storage, sources
from helpers import heartbeat, image_bytes

HOUR_AGO = time.time() - 3600
PICTURES = 150
LARGE = (1600, 1200)  # pictures that take an import some seconds: check runs again and again meanwhile


def store_flags(settings: Settings) -> list[str]:
    if settings.storage.startswith("s3://"):
        flags = ["--storage", settings.storage, "--s3-endpoint", str(settings.s3_endpoint)]
        return [*flags, "--s3-access-key", str(settings.s3_access_key), "--s3-secret-key", str(settings.s3_secret_key)]
    return ["--storage", f"local:{settings.local_storage_dir}"]


def pictures_to_import(
    kind: str,
    count: int,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    db_auth: Any,
    size: tuple[int, int] = (32, 24),
):
    """(settings, SOURCE, pictures): a folder of ``count`` pictures last changed an hour ago (local
    storage), or a prefix of the store's bucket (S3)."""
    pictures = [image_bytes(((i * 37) % 256, (i * 91) % 256, i // 256), size=size, fmt="PNG") for i in range(count)]
    if kind == "local":
        settings = Settings(data_dir=tmp_path / "data", db_auth=db_auth)
        folder = tmp_path / "camera"
        folder.mkdir()
        for i, data in enumerate(pictures):
            (folder / f"p{i:03d}.png").write_bytes(data)
            os.utime(folder / f"p{i:03d}.png", (HOUR_AGO, HOUR_AGO))
        return settings, str(folder), pictures
    service = request.getfixturevalue("s3_service")
    bucket = request.getfixturevalue("s3_bucket")
    settings = Settings(data_dir=tmp_path / "data", db_auth=db_auth, **service.settings(bucket))
    storage = open_storage(settings)
    for i, data in enumerate(pictures):
        source = tmp_path / "picture"
        source.write_bytes(data)
        storage.put_file(f"camera/p{i:03d}.png", source, "image/png")
    return settings, f"s3://{bucket}/camera/", pictures


def assert_every_image_has_its_bytes(storage: Storage, pictures: list[bytes]) -> None:
    images = list(Image.select())
    assert {image.sha256 for image in images} == {hashlib.sha256(data).hexdigest() for data in pictures}
    without = [image.filename for image in images if storage.stat(image.storage_key) is None]
    assert without == [], f"{len(without)} of {len(images)} images have no bytes"
    thumbless = [image.filename for image in images if storage.stat(thumbnail_key(image.id)) is None]
    assert thumbless == [], f"{len(thumbless)} of {len(images)} images have no thumbnail"
    for image in images:
        with storage.open(image.storage_key) as stream:
            assert hashlib.sha256(stream.read()).hexdigest() == image.sha256


@pytest.mark.parametrize(
    ("kind", "grace"), [("local", []), ("local", ["--grace-seconds", "0"]), ("s3", ["--grace-seconds", "0"])]
)
def test_check_fix_between_an_imports_objects_and_their_rows_removes_none_of_them(
    kind, grace, database: Database, db_flags, db_auth, tmp_path, request, monkeypatch
):
    """The import stops right before its first rows commit (its objects stored), check --fix runs as
    a process of its own, then the import goes on."""
    settings, source, pictures = pictures_to_import(kind, 30, tmp_path, request, db_auth)
    storage = open_storage(settings)
    stored = threading.Event()
    checked = threading.Event()
    commit = source_import.Importer._commit

    def commit_after_check(self: source_import.Importer, batch: list[Any]) -> Any:
        stored.set()
        assert checked.wait(120)
        return commit(self, batch)

    monkeypatch.setattr(source_import.Importer, "_commit", commit_after_check)
    importer = open_importer(settings, database, storage, sources.open_source(source, storage), origin=None, workers=2)
    reports: list[source_import.ImportReport] = []
    run = threading.Thread(target=lambda: reports.append(importer.run()))
    run.start()
    try:
        assert stored.wait(120)
        fixed = heartbeat("check", *db_flags, *store_flags(settings), "--fix", *grace)
        assert "Traceback" not in fixed.stderr, fixed.stderr
    finally:
        checked.set()
        run.join()
    assert reports and reports[0].new == len(pictures)
    database.close()
    assert_every_image_has_its_bytes(storage, pictures)
    assert PendingImage.select().count() == 0  # every reservation ended with its run
    clean = heartbeat("check", *db_flags, *store_flags(settings), *grace)
    assert clean.returncode == 0, clean.stdout + clean.stderr


@pytest.mark.concurrency
@pytest.mark.parametrize(("kind", "grace"), [("local", []), ("s3", ["--grace-seconds", "0"])])
def test_check_fix_run_again_and_again_during_an_import_leaves_every_image_its_bytes(
    kind, grace, database: Database, db_flags, db_auth, tmp_path, request
):
    settings, source, pictures = pictures_to_import(kind, PICTURES, tmp_path, request, db_auth, LARGE)
    storage = open_storage(settings)
    flags = [*db_flags, *store_flags(settings)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    command = [sys.executable, "-m", "heartbeat", "import", source, "--workers", "1", *flags]
    importing = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    checks = 0
    try:
        while importing.poll() is None:
            fixed = heartbeat("check", *flags, "--fix", *grace, cwd=tmp_path)
            assert "Traceback" not in fixed.stderr, fixed.stderr
            checks += 1
    finally:
        out, err = importing.communicate(timeout=300)
    assert importing.returncode == 0, err
    assert f"{len(pictures)} objects: {len(pictures)} new" in out
    assert checks >= 1
    database.close()
    assert_every_image_has_its_bytes(storage, pictures)


def test_every_image_an_import_stores_stays_reserved_until_its_row_commits_run_after_run(
    database: Database, db_auth, tmp_path, request, monkeypatch
):
    """What makes check leave an import's objects alone: at each commit, the batch's IDs are reserved,
    in a second run of the same importer too (its first run's reservations have ended)."""
    settings, source, _pictures = pictures_to_import("local", 3, tmp_path, request, db_auth)
    storage = open_storage(settings)
    commit = source_import.Importer._commit
    unreserved: list[str] = []

    def checked_commit(self: source_import.Importer, batch: list[Any]) -> Any:
        reserved = {pending.id for pending in PendingImage.select()}
        unreserved.extend(read.row["id"] for read in batch if read.row["id"] not in reserved)
        return commit(self, batch)

    monkeypatch.setattr(source_import.Importer, "_commit", checked_commit)
    importer = open_importer(settings, database, storage, sources.open_source(source, storage), origin=None, workers=1)
    assert importer.run().new == 3
    assert PendingImage.select().count() == 0
    (Path(source) / "later.png").write_bytes(image_bytes((1, 2, 3), fmt="PNG"))
    assert importer.run().new == 1
    assert unreserved == [] and PendingImage.select().count() == 0


def test_check_counts_a_reserved_ids_objects_as_owned_until_the_reservation_is_an_hour_old(
    storage, check_flags, tmp_path
):
    """A reservation of a killed import does not keep its objects for ever: after an hour, --fix
    removes them and it."""
    fresh, stale = "fresh-import-id0", "killed-import-id"
    PendingImage.insert_many(
        [{"id": fresh, "reserved_at": time.time()}, {"id": stale, "reserved_at": time.time() - 7200}]
    ).execute()
    source = tmp_path / "object"
    source.write_bytes(b"bytes of an import")
    for image_id in (fresh, stale):
        for key in (f"images/{image_id[:2]}/{image_id}.png", thumbnail_key(image_id)):
            storage.put_file(key, source, "application/octet-stream")
            source.write_bytes(b"bytes of an import")
    done = heartbeat("check", *check_flags, "--grace-seconds", "0", "--fix")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 image IDs reserved by imports that did not finish, over 3600 s ago (removed)" in done.stdout
    assert sorted(stored.key for stored in storage.list_objects("")) == sorted(
        [f"images/{fresh[:2]}/{fresh}.png", thumbnail_key(fresh)]
    )
    assert [pending.id for pending in PendingImage.select()] == [fresh]
