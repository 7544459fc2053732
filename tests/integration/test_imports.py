"""``heartbeat import``: a prefix of a bucket (on rclone serve s3, or the MinIO of HEARTBEAT_TEST_S3_*)
and a folder with local storage, in every pass. The bucket is another than the server's own, so that
"nothing copied" can be counted on it alone."""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import minio
import pytest

from heartbeat.app import create_app
from heartbeat.catalog.check import find_problems
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.db.models import Image, ImportedObject, create_base_tables, job_model
from heartbeat.ingest import source_import
from heartbeat.ingest.source_import import ImportReport
from heartbeat.service import open_importer
from heartbeat.storage import Storage, open_storage, sources
from heartbeat.storage.sources import open_source
from helpers import claim, distinct_images, fetch_url, heartbeat, image_bytes, register, stored_keys

PICTURES = 480
DUPLICATES = 12
NOT_PICTURES = 7  # and one truncated JPEG: 500 objects in all


@dataclasses.dataclass
class Place:
    """Where the objects to import lie, and how a test adds, removes and counts them."""

    kind: str
    source: str  # SOURCE as given to heartbeat import
    settings: Settings
    put: Callable[[str, bytes], None]
    remove: Callable[[str], None]
    contents: Callable[[], dict[str, bytes]]  # every object's name and bytes, as a plain listing and read gives them
    key: Callable[[str], str]  # the record's key of an object name


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path, db_auth: Any) -> Iterator[Place]:
    if request.param == "local":
        folder = tmp_path / "camera"
        folder.mkdir()

        def put_file(name: str, data: bytes) -> None:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)

        yield Place(
            "local",
            str(folder),
            Settings(data_dir=tmp_path / "data", db_auth=db_auth),
            put_file,
            lambda name: (folder / name).unlink(),
            lambda: {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()},
            lambda name: name,
        )
        return
    service = request.getfixturevalue("s3_service")
    settings = Settings(
        data_dir=tmp_path / "data", db_auth=db_auth, **service.settings(request.getfixturevalue("s3_bucket"))
    )
    client: minio.Minio = service.client()
    bucket = f"heartbeat-photos-{secrets.token_hex(4)}"
    client.make_bucket(bucket)

    def put_object(name: str, data: bytes) -> None:
        import io

        client.put_object(bucket, f"camera/{name}", io.BytesIO(data), len(data))

    def contents() -> dict[str, bytes]:
        found = {}
        for listed in client.list_objects(bucket, recursive=True):
            response = client.get_object(bucket, listed.object_name)
            found[listed.object_name] = response.read()
            response.close()
            response.release_conn()
        return found

    yield Place(
        "s3",
        f"s3://{bucket}/camera/",
        settings,
        put_object,
        lambda name: client.remove_object(bucket, f"camera/{name}"),
        contents,
        lambda name: f"s3://{bucket}/camera/{name}",
    )
    for listed in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, listed.object_name)
    client.remove_bucket(bucket)


def fill(place: Place) -> dict[str, bytes]:
    """500 objects: pictures (some in folders), duplicates of some under other names, a few files that
    are no picture, and a truncated JPEG. Returns the pictures that should become images, by name."""
    pictures = {
        f"{'day' + str(i % 3) + '/' if i % 2 else ''}p{i:04d}.png": data
        for i, data in enumerate(distinct_images(PICTURES))
    }
    for name, data in pictures.items():
        place.put(name, data)
    for i, data in enumerate(list(pictures.values())[:DUPLICATES]):
        place.put(f"copies/copy{i}.png", data)
    for i in range(NOT_PICTURES):
        place.put(f"notes/note{i}.txt", f"not a picture {i}".encode())
    whole = image_bytes((1, 2, 3), size=(64, 64))
    place.put("cut.jpg", whole[: len(whole) // 2])
    return pictures


@contextlib.contextmanager
def counted_reads(place: Place, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the objects the code under test reads (GETs on S3, opens of a folder's files)."""
    read: list[str] = []
    lock = threading.Lock()
    if place.kind == "s3":
        original = minio.Minio.get_object

        def get_object(self: minio.Minio, bucket: str, name: str, *args: Any, **kwargs: Any) -> Any:
            with lock:
                read.append(name)
            return original(self, bucket, name, *args, **kwargs)

        monkeypatch.setattr(minio.Minio, "get_object", get_object)
    else:
        opened = sources.FolderSource.open

        def open_file(self: sources.FolderSource, key: str) -> Any:
            with lock:
                read.append(key)
            return opened(self, key)

        monkeypatch.setattr(sources.FolderSource, "open", open_file)
    yield read
    monkeypatch.undo()


def run_import(
    place: Place, database: Database, storage: Storage, *, prune: bool = False, workers: int = 4
) -> ImportReport:
    source = open_source(place.source, storage)
    return open_importer(place.settings, database, storage, source, origin="camera", workers=workers).run(prune=prune)


def images_by_sha() -> dict[str, Image]:
    return {image.sha256: image for image in Image.select()}


def test_an_import_registers_exactly_the_pictures_in_place_a_worker_reads_them_and_a_second_run_reads_only_new_ones(
    place, database, monkeypatch
):
    storage = open_storage(place.settings)
    client = falcon.testing.TestClient(create_app(place.settings, database=database, storage=storage))
    register(client, "ocr")
    register(client, "road_only", origins=["road"])
    pictures = fill(place)
    before = place.contents()

    with counted_reads(place, monkeypatch) as read:
        report = run_import(place, database, storage)
    assert len(read) == 500 == report.listed  # each object read once
    assert (report.new, report.duplicate, len(report.refused), report.gone) == (
        PICTURES,
        DUPLICATES,
        NOT_PICTURES + 1,
        [],
    )
    assert {key for key, _ in report.refused} == {place.key(f"notes/note{i}.txt") for i in range(NOT_PICTURES)} | {
        place.key("cut.jpg")
    }
    assert "does not decode whole" in dict(report.refused)[place.key("cut.jpg")]
    images = images_by_sha()
    assert set(images) == {hashlib.sha256(data).hexdigest() for data in pictures.values()}
    assert {image.origin for image in images.values()} == {"camera"}
    assert place.contents() == before  # nothing written to, moved from or removed from the source
    if place.kind == "s3":  # nothing copied: the server's bucket holds the thumbnails alone
        assert [key.split("/")[0] for key in stored_keys(storage)] == ["thumbnails"] * PICTURES
        assert all(image.storage_key.startswith(place.key("")) for image in images.values())
    else:  # hard links of the folder's files, the same inodes
        folder = Path(place.source)
        by_name = {name: folder / name for name in pictures}
        for image in images.values():
            stored = storage._path(image.storage_key)  # type: ignore[attr-defined]
            assert any(
                os.path.samefile(stored, path) for name, path in by_name.items() if image.filename == Path(name).name
            )
    assert len(stored_keys(storage, "thumbnails/")) == PICTURES

    # A job for every software, as an upload makes them: pending, or skipped for an origin it does not take.
    assert client.simulate_get("/v1/software/ocr").json["counts"]["pending"] == PICTURES
    assert client.simulate_get("/v1/software/road_only").json["counts"]["skipped"] == PICTURES

    # A worker: every job, fetched through its presigned URL, gives the bytes of its image.
    fetched = 0
    while jobs := claim(client, "ocr", max=100):
        for job in jobs:
            got = fetch_url(client, job["url"])
            assert got.status_code == 200
            assert hashlib.sha256(got.content).hexdigest() == job["image"]["sha256"]
            result = client.simulate_put(
                f"/v1/software/ocr/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}}
            )
            assert result.status_code == 200
            fetched += 1
    assert fetched == PICTURES

    # 50 new, 20 gone: the second run reads the 50 alone, and lists the 20.
    added = {f"later/n{i:03d}.png": data for i, data in enumerate(distinct_images(PICTURES + 50)[PICTURES:])}
    for name, data in added.items():
        place.put(name, data)
    gone = sorted(pictures)[DUPLICATES : DUPLICATES + 20]  # pictures no copy duplicates
    for name in gone:
        place.remove(name)
    with counted_reads(place, monkeypatch) as read:
        second = run_import(place, database, storage)
    assert sorted(read) == sorted(name if place.kind == "local" else f"camera/{name}" for name in added)
    assert (second.new, second.duplicate, second.refused) == (50, 0, [])
    assert second.gone == sorted(place.key(name) for name in gone)
    assert Image.select().count() == PICTURES + 50

    gone_ids = [ImportedObject.get(ImportedObject.key == place.key(name)).image_id for name in gone]
    with counted_reads(place, monkeypatch) as read:
        pruned = run_import(place, database, storage, prune=True)
    assert read == []
    assert (pruned.pruned, pruned.gone) == (20, second.gone)
    assert Image.select().where(Image.id.in_(gone_ids)).count() == 0
    assert job_model("ocr").select().where(job_model("ocr").image_id.in_(gone_ids)).count() == 0
    assert ImportedObject.select().where(ImportedObject.image_id.in_(gone_ids)).count() == 0
    assert Image.select().count() == PICTURES + 50 - 20
    assert len(stored_keys(storage, "thumbnails/")) == PICTURES + 50 - 20
    assert run_import(place, database, storage, prune=True).gone == []

    # check: imported objects are owned; an imported image whose object is gone is found.
    findings = find_problems(storage, now=time.time(), grace_seconds=0)
    assert (findings.rows_without_objects, findings.orphaned_objects) == ([], [])
    lost = Image.get(Image.filename == "n000.png")
    place.remove("later/n000.png")
    if place.kind == "local":
        storage.delete(lost.storage_key)  # the store's own link is the image's object
    assert find_problems(storage, now=time.time(), grace_seconds=0).rows_without_objects == [
        (lost.id, lost.storage_key)
    ]

    # DELETE of an imported image removes its object too.
    doomed = Image.get(Image.filename == "n001.png")
    assert client.simulate_delete(f"/v1/images/{doomed.id}").status_code == 204
    assert storage.stat(doomed.storage_key) is None
    assert storage.stat(f"thumbnails/{doomed.id[:2]}/{doomed.id}.jpg") is None
    assert ImportedObject.get_or_none(ImportedObject.image_id == doomed.id) is None


def test_two_imports_of_one_source_at_once_double_nothing(place, database):
    pictures = fill(place)
    storage = open_storage(place.settings)
    reports: list[ImportReport] = []
    runs = [threading.Thread(target=lambda: reports.append(run_import(place, database, storage))) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert len(reports) == 2
    assert (
        Image.select().count()
        == PICTURES
        == len(set(images_by_sha()) & {hashlib.sha256(d).hexdigest() for d in pictures.values()})
    )
    assert ImportedObject.select().count() == 500
    assert sum(report.new for report in reports) == PICTURES
    assert len(stored_keys(storage, "thumbnails/")) == PICTURES
    if place.kind == "local":
        assert len(stored_keys(storage, "images/")) == PICTURES


def test_an_import_reads_no_further_ahead_of_its_commits_than_a_batch_and_a_few_reads_a_worker(
    place, database, monkeypatch
):
    """A bucket of millions of objects is not queued (nor its results held) all at once."""
    fill(place)
    workers = 4
    ahead = source_import.COMMIT_BATCH + 2 * workers
    submitted = 0
    committed = 0
    most_ahead = 0

    class CountingPool(concurrent.futures.ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal submitted
            submitted += 1
            return super().submit(*args, **kwargs)

    commit = source_import.Importer._commit

    def counted_commit(self: source_import.Importer, batch: list[Any]) -> Any:
        nonlocal committed, most_ahead
        committed += len(batch)
        most_ahead = max(most_ahead, submitted - committed)
        return commit(self, batch)

    monkeypatch.setattr(source_import.concurrent.futures, "ThreadPoolExecutor", CountingPool)
    monkeypatch.setattr(source_import.Importer, "_commit", counted_commit)
    report = run_import(place, database, open_storage(place.settings), workers=workers)
    assert report.new == PICTURES and submitted == 500
    # Submitted but not committed: read ahead, and the objects that are no picture (never committed).
    assert most_ahead <= ahead + NOT_PICTURES + 1, most_ahead


def test_an_import_lists_a_page_at_a_time_ahead_of_its_reads(place, database, monkeypatch):
    """A run holds a page of the listing (and its records), not the whole source: the listing is
    consumed no further than a page past the reads, and a second run still finds what is new and gone."""
    pictures = fill(place)
    page = 50
    monkeypatch.setattr(source_import, "LIST_PAGE", page)
    listed = 0
    most_ahead = 0

    def counting(list_objects: Any) -> Any:
        def listing(self: Any) -> Any:
            nonlocal listed
            for stored in list_objects(self):
                listed += 1
                yield stored

        return listing

    for kind in (sources.BucketSource, sources.FolderSource):
        monkeypatch.setattr(kind, "list", counting(kind.list))
    read_one = source_import.Importer._read_one
    started = 0

    def counted_read(self: source_import.Importer, *args: Any) -> Any:
        nonlocal started, most_ahead
        started += 1
        most_ahead = max(most_ahead, listed - started)
        return read_one(self, *args)

    monkeypatch.setattr(source_import.Importer, "_read_one", counted_read)
    storage = open_storage(place.settings)
    report = run_import(place, database, storage)
    assert (report.listed, report.new, started) == (500, PICTURES, 500)
    assert most_ahead <= page + source_import.COMMIT_BATCH + 2 * 4, most_ahead
    gone = sorted(pictures)[DUPLICATES : DUPLICATES + 3]  # pictures no copy duplicates
    for key in gone:
        place.remove(key)
    started = 0
    again = run_import(place, database, storage, prune=True)
    assert (again.listed, again.unchanged, started, again.pruned) == (497, 497, 0, 3)
    assert again.gone == sorted(place.key(name) for name in gone)


READ_PICTURES = PICTURES + DUPLICATES  # a duplicate's row is found out at its commit


@pytest.mark.parametrize(
    ("commit_seconds", "batches"), [(3600.0, -(-READ_PICTURES // source_import.COMMIT_BATCH)), (0.0, READ_PICTURES)]
)
def test_an_import_commits_a_batch_of_rows_at_a_time_or_what_was_read_within_commit_seconds(
    place, database, monkeypatch, commit_seconds, batches
):
    """A commit costs the database a log flush: rows wait for COMMIT_BATCH others, but no longer than
    COMMIT_SECONDS (with 0, each picture commits as soon as it is read)."""
    fill(place)
    sizes: list[int] = []
    commit = source_import.Importer._commit

    def counted_commit(self: source_import.Importer, batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return commit(self, batch)

    monkeypatch.setattr(source_import, "COMMIT_SECONDS", commit_seconds)
    monkeypatch.setattr(source_import.Importer, "_commit", counted_commit)
    report = run_import(place, database, open_storage(place.settings), workers=4)
    assert (report.new, report.duplicate) == (PICTURES, DUPLICATES)
    assert sum(sizes) == READ_PICTURES
    assert len(sizes) == batches and max(sizes) <= source_import.COMMIT_BATCH, sizes


def test_an_import_killed_midway_then_run_again_finishes_with_nothing_doubled_or_missing(
    place, database, db_flags, tmp_path
):
    pictures = fill(place)
    storage = open_storage(place.settings)
    flags = list(db_flags)
    if place.kind == "s3":
        s = place.settings
        flags += [
            "--storage",
            s.storage,
            "--s3-endpoint",
            str(s.s3_endpoint),
            "--s3-access-key",
            str(s.s3_access_key),
            "--s3-secret-key",
            str(s.s3_secret_key),
        ]
    else:
        flags += ["--storage", f"local:{place.settings.local_storage_dir}"]
    command = [sys.executable, "-m", "heartbeat", "import", place.source, "--workers", "1", *flags]
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while ImportedObject.select().count() < 100:  # the records it commits are all there is to watch
            assert process.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
            database.close()
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    partial = Image.select().count()
    assert 0 < partial < PICTURES
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    database.close()
    assert set(images_by_sha()) == {hashlib.sha256(data).hexdigest() for data in pictures.values()}
    assert Image.select().count() == PICTURES
    assert ImportedObject.select().count() == 500
    assert "0 gone" in again.stdout
    findings = find_problems(storage, now=time.time(), grace_seconds=0)
    assert findings.rows_without_objects == []
    # What the kill left behind is at most the objects of the reads in flight and of the batch of rows
    # that had not committed (thumbnails, and links on local storage): check lists them.
    assert len(findings.orphaned_objects) <= 2 * (source_import.COMMIT_BATCH + 1)
    assert {stored.key.split("/")[0] for stored in findings.orphaned_objects} <= {"thumbnails", "images"}


@pytest.mark.parametrize(
    ("source", "storage", "named"),
    [
        ("{tmp}/no-such-folder", None, "no such folder"),
        ("s3://no-such-bucket/photos/", "s3", "no bucket 'no-such-bucket'"),
        ("s3://Not_A..Bucket!/photos/", "s3", "invalid bucket name Not_A..Bucket!"),
        ("s3://photos/", None, "needs S3 storage"),
        ("{tmp}", "s3", "needs local storage"),
        ("ftp://host/photos", None, "expected s3://BUCKET/PREFIX or a folder"),
    ],
)
def test_a_source_that_cannot_be_read_is_one_line_naming_it_and_creates_nothing(
    tmp_path, request, source, storage, named
):
    flags = ["--data-dir", str(tmp_path / "data")]
    if storage == "s3":
        service = request.getfixturevalue("s3_service")
        bucket = request.getfixturevalue("s3_bucket")
        flags += ["--storage", f"s3://{bucket}", "--s3-endpoint", service.endpoint]
        flags += ["--s3-access-key", service.access_key, "--s3-secret-key", service.secret_key]
    done = heartbeat("import", source.format(tmp=tmp_path), *flags)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: SOURCE ") and named in lines[0], done.stderr
    assert not (tmp_path / "data").exists(), "nothing is created"


def test_a_folder_whose_absolute_path_is_too_long_to_record_is_refused_naming_it(tmp_path):
    """SOURCE given relative to a deep folder: what is recorded is its absolute path, 255 characters at most."""
    deep = tmp_path / ("a" * 200) / ("b" * 60)
    deep.mkdir(parents=True)
    done = heartbeat("import", ".", "--data-dir", str(tmp_path / "data"), cwd=deep)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: SOURCE .: its absolute path is longer than 255 characters"
    assert not (tmp_path / "data").exists(), "nothing is created"


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--workers", "0"], "heartbeat import: error: argument --workers: expected a number from 1 to 64, not '0'"),
        # Each worker may hold a database connection: MySQL's default max_connections is 151.
        (["--workers", "65"], "heartbeat import: error: argument --workers: expected a number from 1 to 64, not '65'"),
        (["--origin", "x" * 256], "error: --origin: origin must be Unicode text of at most 255 characters"),
    ],
)
def test_a_flag_that_cannot_be_used_is_refused_naming_it(tmp_path, flags, said):
    done = heartbeat("import", str(tmp_path), *flags, "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert done.stderr.strip() == said
    assert not (tmp_path / "data").exists(), "nothing is created"


def test_every_argument_of_import_has_a_help_text():
    from heartbeat.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if action.dest == "command")
    assert all(action.help for action in commands.choices["import"]._actions)  # type: ignore[union-attr]


def test_an_object_whose_bytes_changed_is_read_again_and_its_old_image_goes(place, database):
    storage = open_storage(place.settings)
    first, second, other = distinct_images(3)
    place.put("a.png", first)
    place.put("b.png", other)
    assert run_import(place, database, storage).new == 2
    old = Image.get(Image.sha256 == hashlib.sha256(first).hexdigest())
    place.put("a.png", second)
    report = run_import(place, database, storage)
    assert (report.changed, report.new, report.unchanged) == (1, 1, 1)
    assert Image.get_or_none(Image.id == old.id) is None
    assert storage.stat(f"thumbnails/{old.id[:2]}/{old.id}.jpg") is None
    assert set(images_by_sha()) == {hashlib.sha256(data).hexdigest() for data in (second, other)}
    assert place.contents()[("camera/" if place.kind == "s3" else "") + "a.png"] == second
    new = Image.get(Image.sha256 == hashlib.sha256(second).hexdigest())
    with storage.open(new.storage_key) as stream:
        assert stream.read() == second


def test_an_object_whose_key_is_as_long_as_s3_allows_becomes_an_image_where_it_lies(place, database):
    """An S3 key may have 1,024 bytes: its image's storage key (s3://BUCKET/KEY) holds it whole."""
    name = "/".join(["d" * 200] * 4) + "/" + "p" * 196 + ".png"  # names of 200: a file system's limit is 255
    [data] = distinct_images(1)
    place.put(name, data)
    storage = open_storage(place.settings)
    report = run_import(place, database, storage)
    assert (report.new, report.refused) == (1, [])
    image = Image.get()
    if place.kind == "s3":
        assert image.storage_key == place.key(name) and len(image.storage_key) > 1024
    assert image.filename == "p" * 196 + ".png"
    with storage.open(image.storage_key) as stream:
        assert stream.read() == data
    assert run_import(place, database, storage).unchanged == 1


def test_a_database_from_before_long_keys_gets_its_storage_key_column_widened(database):
    if not database.features.mysql:
        pytest.skip("about MySQL's VARCHAR length: SQLite holds text to no declared length")
    database.execute("ALTER TABLE images MODIFY storage_key VARCHAR(255) NOT NULL")  # as an older release made it
    create_base_tables(database)
    [(length,)] = database.execute(
        "SELECT character_maximum_length FROM information_schema.columns"
        " WHERE table_schema = DATABASE() AND table_name = 'images' AND column_name = 'storage_key'"
    ).fetchall()
    assert length == Image.storage_key.max_length >= len("s3://") + 63 + len("/") + 1024
