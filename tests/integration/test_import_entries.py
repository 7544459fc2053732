"""``heartbeat import`` of what a folder or bucket really holds: entries that are no files, names that
are no plain text, Heartbeat's own objects, and pictures a user deleted.

A folder is a tree nobody vouches for: links, FIFOs, sockets and devices are listed as skipped, never
followed nor opened, and one of them never stops the run (the import of a FIFO used to hang for ever,
and a link to the data dir's ``secret.key`` served the URL-signing secret as a picture's bytes).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import minio
import pytest
import test_imports
from test_imports import Place, images_by_sha, run_import

from heartbeat.app import create_app
from heartbeat.catalog.check import find_problems
from heartbeat.config import Settings
from heartbeat.db.models import DeletedPicture, Image, ImportedObject, Upload
from heartbeat.ingest import source_import
from heartbeat.service import open_importer
from heartbeat.storage import Storage, open_storage, sources
from helpers import distinct_images, fetch_url, heartbeat, image_bytes, put_url, stored_keys, upload

DELETED = source_import.DELETED_REASON
place = test_imports.place  # the fixture: a folder, or a prefix of another bucket


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def served(client: falcon.testing.TestClient, image_id: str) -> bytes:
    """The bytes a reader gets for an image, through its signed URL."""
    got = fetch_url(client, client.simulate_get(f"/v1/images/{image_id}/url").json["url"])
    assert got.status_code == 200
    return got.content


def store_entries(root: Path) -> dict[str, str]:
    """Every entry under a local store's root and its kind ("file", "link", ...), no link followed."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            mode = os.lstat(Path(folder, name)).st_mode
            kind = "link" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file"
            if stat.S_ISREG(mode) or not stat.S_ISDIR(mode):
                found[Path(folder, name).relative_to(root).as_posix()] = kind
    return found


@pytest.fixture
def local(tmp_path: Path, db_auth: Any) -> Settings:
    """Local storage under the test's own data dir (a folder import needs it, whatever the pass)."""
    return Settings(data_dir=tmp_path / "data", db_auth=db_auth)


def import_flags(settings: Settings, db_flags: list[str]) -> list[str]:
    """``heartbeat import`` flags for the test database and ``settings``' store."""
    if settings.storage.startswith("s3://"):
        store = ["--storage", settings.storage, "--s3-endpoint", str(settings.s3_endpoint)]
        store += ["--s3-access-key", str(settings.s3_access_key), "--s3-secret-key", str(settings.s3_secret_key)]
    else:
        store = ["--storage", f"local:{settings.local_storage_dir}"]
    return [*db_flags, *store]


def cli_import(source: str, settings: Settings, db_flags: list[str], cwd: Path, *more: str) -> list[str]:
    """``heartbeat import SOURCE`` as a user runs it: its output's lines (a hang or a traceback fails)."""
    done = heartbeat("import", source, *import_flags(settings, db_flags), *more, cwd=cwd, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


# --- entries that are no regular files ---------------------------------------------------------------


def test_a_folder_import_takes_regular_files_only_and_lists_every_other_entry_as_skipped(
    local, database, db_flags, tmp_path, monkeypatch
):
    storage = open_storage(local)  # makes the data dir's secret.key, as `heartbeat serve` does
    secret = local.data_dir / "secret.key"
    picture, deeper, outside_picture, linked_folder_picture = distinct_images(4)
    folder = tmp_path / "camera"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.png").write_bytes(picture)
    (folder / "sub" / "deeper.png").write_bytes(deeper)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "elsewhere.png").write_bytes(outside_picture)
    (outside / "in-linked-folder.png").write_bytes(linked_folder_picture)
    links = {
        "inside.png": "good.png",  # to a file of the folder
        "outside.png": str(outside / "elsewhere.png"),  # out of the folder
        "key.png": str(secret),  # the URL-signing secret
        "dangling.png": "nowhere.png",
        "a.png": "b.png",  # a loop
        "b.png": "a.png",
        "linked-folder": str(outside),  # a folder
        "sub/up.png": "../good.png",
    }
    for name, target in links.items():
        (folder / name).symlink_to(target)
    os.mkfifo(folder / "pipe.png")
    monkeypatch.chdir(folder)  # a socket's path is short: bound relative to the folder
    listening = socket.socket(socket.AF_UNIX)
    listening.bind("socket.png")
    monkeypatch.undo()
    skipped_kinds = {name: "a symbolic link: not followed" for name in links}
    skipped_kinds |= {"pipe.png": "a named pipe (FIFO), not a file", "socket.png": "a socket, not a file"}
    if os.geteuid() == 0:  # making a device takes root
        os.mknod(folder / "device.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        skipped_kinds["device.png"] = "a device, not a file"

    try:
        lines = cli_import(str(folder), local, db_flags, tmp_path)
    finally:
        listening.close()
    assert [line for line in lines if line.startswith("skipped: ")] == [
        f"skipped: {name}: {reason}" for name, reason in sorted(skipped_kinds.items())
    ]
    assert f"2 objects: 2 new, 0 duplicate, 0 refused, 0 gone, 0 unchanged, {len(skipped_kinds)} skipped" in lines
    database.close()
    assert set(images_by_sha()) == {sha(picture), sha(deeper)}
    assert ImportedObject.select().count() == 2  # skipped entries are not recorded: listed again next run
    # The store holds regular files only, and serves each picture's own bytes: never the secret.
    assert set(store_entries(storage.root).values()) == {"file"}  # type: ignore[attr-defined]
    client = falcon.testing.TestClient(create_app(local, database=database, storage=storage))
    for image in list(Image.select()):
        assert served(client, image.id) in (picture, deeper)
    assert (folder / "pipe.png").exists() and stat.S_ISFIFO(os.lstat(folder / "pipe.png").st_mode)
    again = cli_import(str(folder), local, db_flags, tmp_path)
    assert f"2 objects: 0 new, 0 duplicate, 0 refused, 0 gone, 2 unchanged, {len(skipped_kinds)} skipped" in again


def swap_for_fifo(path: Path, secret: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def swap_for_link_to_secret(path: Path, secret: Path) -> None:
    path.unlink()
    path.symlink_to(secret)


def swap_folder_for_link(path: Path, secret: Path) -> None:
    """The file's folder becomes a link to the secret's folder, where another picture of that name lies."""
    path.parent.rename(path.parent.with_name("moved"))
    (secret.parent / path.name).write_bytes(image_bytes((1, 2, 3)))
    path.parent.symlink_to(secret.parent)


@pytest.mark.parametrize("swap", [swap_for_fifo, swap_for_link_to_secret, swap_folder_for_link])
def test_an_entry_swapped_after_the_listing_is_skipped_neither_waited_on_nor_followed(
    local, database, tmp_path, monkeypatch, swap
):
    """Listed as a regular file, then swapped before the read: the open finds what is there now."""
    storage = open_storage(local)
    secret = local.data_dir / "secret.key"
    swapped, kept = distinct_images(2)
    folder = tmp_path / "camera"
    (folder / "day").mkdir(parents=True)
    (folder / "day" / "swapped.png").write_bytes(swapped)
    (folder / "kept.png").write_bytes(kept)
    listing = sources.FolderSource.list

    def list_then_swap(self: Any) -> Iterator[Any]:
        for entry in listing(self):
            yield entry
            if getattr(entry, "key", "") == "day/swapped.png" and not getattr(entry, "reason", ""):
                swap(folder / "day" / "swapped.png", secret)

    monkeypatch.setattr(sources.FolderSource, "list", list_then_swap)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    report = run_import(place_, database, storage)
    assert (report.new, report.refused) == (1, [])
    [(key, reason)] = report.skipped
    assert key == "day/swapped.png" and ("not a file" in reason or "symbolic link" in reason), reason
    assert set(images_by_sha()) == {sha(kept)}
    assert set(store_entries(storage.root).values()) == {"file"}  # type: ignore[attr-defined]


def test_what_is_linked_into_the_store_is_the_file_read_never_a_link_put_in_its_place(
    local, database, tmp_path, monkeypatch
):
    """The file becomes a link to the secret between its read and its hard link into the store."""
    storage = open_storage(local)
    secret = local.data_dir / "secret.key"
    [picture] = distinct_images(1)
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "photo.png").write_bytes(picture)
    place_file = sources.FolderSource.place

    def swap_then_place(self: Any, *args: Any) -> Any:
        (folder / "photo.png").unlink()
        (folder / "photo.png").symlink_to(secret)
        return place_file(self, *args)

    monkeypatch.setattr(sources.FolderSource, "place", swap_then_place)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    assert run_import(place_, database, storage).new == 1
    image = Image.get()
    client = falcon.testing.TestClient(create_app(local, database=database, storage=storage))
    assert served(client, image.id) == picture
    assert set(store_entries(storage.root).values()) == {"file"}  # type: ignore[attr-defined]


@pytest.mark.local_storage
def test_a_stored_object_that_is_a_link_is_neither_served_nor_written_through(client, storage, settings, tmp_path):
    """Defence in depth: whatever put a link into the store, the store serves no file through it."""
    image = upload(client).json
    stored_key = Image.get_by_id(image["id"]).storage_key
    signed = client.simulate_get(f"/v1/images/{image['id']}/url").json["url"]  # handed out before the link came
    stored = storage._path(stored_key)
    secret = settings.data_dir / "secret.key"
    stored.unlink()
    stored.symlink_to(secret)
    assert fetch_url(client, signed).status_code == 404
    url = client.simulate_get(f"/v1/images/{image['id']}/url")
    assert url.status_code == 404 or fetch_url(client, url.json["url"]).status_code == 404
    assert storage.stat(stored_key) is None
    with pytest.raises(sources.NotFound), storage.open(stored_key):
        pass
    # `heartbeat check` finds such an image, as one whose bytes are gone.
    assert find_problems(storage, now=time.time(), grace_seconds=0).rows_without_objects == [(image["id"], stored_key)]
    # A direct upload's PUT to a key whose file is a link replaces the link, never what it points to.
    before = secret.read_bytes()
    target = client.simulate_post("/v1/uploads").json
    upload_path = storage._path(Upload.get_by_id(target["upload_id"]).storage_key)
    upload_path.parent.mkdir(parents=True, exist_ok=True)
    upload_path.symlink_to(secret)
    assert put_url(client, target["url"], b"new bytes") == 204
    assert not upload_path.is_symlink() and upload_path.read_bytes() == b"new bytes"
    assert secret.read_bytes() == before


# --- names that are no plain text --------------------------------------------------------------------


def odd_names(kind: str) -> dict[str, str]:
    """Object names, and the filename each image must have."""
    names = {
        "new\nline.png": "new\nline.png",
        "tab\there.png": "tab\there.png",
        "-rf.png": "-rf.png",
        "--help.png": "--help.png",
        "%41 +&=?#.png": "%41 +&=?#.png",
        "\u00e9t\u00e9 \u20ac\U0001f600.png": "\u00e9t\u00e9 \u20ac\U0001f600.png",
        "\ufffd.png": "\ufffd.png",
        "l" * 246 + ".png": "l" * 246 + ".png",
    }
    if kind == "local":  # a file system name is bytes: these are not UTF-8
        names |= {
            "caf\udce9.png": "caf\ufffd.png",
            "caf" + chr(0xDCE8) + ".png": "caf\ufffd.png",
            "\udcff\udcfe": "\ufffd\ufffd",
        }
    return names


def test_odd_names_are_imported_with_their_names_as_text_and_listed_on_one_line(place, database, db_flags, tmp_path):
    names = odd_names(place.kind)
    pictures = dict(zip(names, distinct_images(len(names)), strict=True))
    for name, data in pictures.items():
        place.put(name, data)
    place.put("notes/odd\nnote\x1b.txt", b"not a picture")
    storage = open_storage(place.settings)

    lines = cli_import(place.source, place.settings, db_flags, tmp_path)
    assert f"{len(names) + 1} objects: {len(names)} new, 0 duplicate, 1 refused, 0 gone, 0 unchanged, 0 skipped" in (
        lines
    )
    [refused] = [line for line in lines if line.startswith("refused: ")]
    assert refused.startswith(f"refused: {place.key('notes/odd')}\\nnote\\x1b.txt: "), refused
    database.close()
    images = images_by_sha()
    client = falcon.testing.TestClient(create_app(place.settings, database=database, storage=storage))
    for name, data in pictures.items():
        image = images[sha(data)]
        assert image.filename == names[name]
        assert served(client, image.id) == data
    assert client.simulate_get("/v1/images", params={"limit": 100}).status_code == 200
    again = cli_import(place.source, place.settings, db_flags, tmp_path)
    unchanged = len(names) + 1
    assert f"{unchanged} objects: 0 new, 0 duplicate, 0 refused, 0 gone, {unchanged} unchanged, 0 skipped" in again


def test_a_file_deeper_than_a_path_can_name_is_imported(local, database, tmp_path):
    """A path of more than PATH_MAX (4096) bytes: reached one folder at a time, copied into the store."""
    storage = open_storage(local)
    folder = tmp_path / "camera"
    folder.mkdir()
    [picture] = distinct_images(1)
    parent = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    parts = ["d" * 250] * 18
    try:
        for part in parts:
            os.mkdir(part, dir_fd=parent)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)
            os.close(parent)
            parent = inner
        fd = os.open("deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=parent)
        os.write(fd, picture)
        os.close(fd)
    finally:
        os.close(parent)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    report = run_import(place_, database, storage)
    assert (report.new, report.refused, report.skipped) == (1, [], [])
    image = Image.get()
    assert image.filename == "deep.png"
    with storage.open(image.storage_key) as stream:
        assert stream.read() == picture


# --- Heartbeat's own objects ---------------------------------------------------------------------------


@pytest.fixture
def s3_store(tmp_path: Path, db_auth: Any, request: pytest.FixtureRequest) -> Settings:
    service = request.getfixturevalue("s3_service")
    return Settings(
        data_dir=tmp_path / "data", db_auth=db_auth, **service.settings(request.getfixturevalue("s3_bucket"))
    )


def put_users_picture(settings: Settings, storage: Storage, name: str, data: bytes, tmp_path: Path) -> None:
    """A picture of the user's own beside the store's objects (in its bucket, or in the data dir)."""
    if settings.storage.startswith("s3://"):
        source = tmp_path / "upload-me"
        source.write_bytes(data)
        storage.put_file(name, source, "image/png")
    else:
        (settings.data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / name).write_bytes(data)


@pytest.mark.parametrize(
    ("kind", "source", "users"),
    [
        ("s3", "s3://{bucket}/", True),
        ("s3", "s3://{bucket}/thumbnails/", False),
        ("s3", "s3://{bucket}/thumb", False),
        ("s3", "s3://{bucket}/images/", False),
        ("s3", "s3://{bucket}/uploads/", False),
        ("local", "{store}", False),
        ("local", "{data}", True),
        ("local", "{store}/thumbnails", False),
        ("local", "{store}/images/{first}", False),
    ],
)
def test_an_import_of_the_stores_own_objects_takes_none_of_them_for_pictures(
    kind, source, users, local, request, database, tmp_path
):
    settings = request.getfixturevalue("s3_store") if kind == "s3" else local
    storage = open_storage(settings)
    client = falcon.testing.TestClient(create_app(settings, database=database, storage=storage))
    uploaded = distinct_images(5)
    ids = [upload(client, data).json["id"] for data in uploaded[:3]]
    direct = client.simulate_post("/v1/uploads").json  # a direct upload's object, not completed yet
    assert put_url(client, direct["url"], uploaded[4]) in (200, 204)
    put_users_picture(settings, storage, "camera/mine.png", uploaded[3], tmp_path)
    text = source.format(
        bucket=settings.storage.removeprefix("s3://"),
        store=settings.local_storage_dir.resolve(),
        data=settings.data_dir.resolve(),
        first=ids[0][:2],
    )
    importing = sources.open_source(text, storage)
    importer = open_importer(settings, database, storage, importing, origin=None, workers=2)
    for run in range(3):  # each run used to add the last run's thumbnails
        report = importer.run()
        assert report.new == (1 if users and run == 0 else 0), report
        assert report.own >= 1 and report.skipped == [], report
        assert Image.select().count() == 3 + users
    assert {image.sha256 for image in Image.select()} == {sha(data) for data in uploaded[: 3 + users]}
    assert len(stored_keys(storage, "thumbnails/")) == 3 + users


# --- entries that cannot be read ------------------------------------------------------------------------


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names whose opening the system refuses (EACCES), as for a user without the permission; the
    tests run as root, whom no mode bit stops."""
    names: set[str] = set()
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsdecode(path) in names:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    return names


def test_a_folder_that_cannot_be_read_is_skipped_and_prune_never_takes_its_images(local, database, tmp_path, refused):
    storage = open_storage(local)
    outside, inside, deeper = distinct_images(3)
    folder = tmp_path / "camera"
    (folder / "private" / "deeper").mkdir(parents=True)
    (folder / "a.png").write_bytes(outside)
    (folder / "private" / "b.png").write_bytes(inside)
    (folder / "private" / "deeper" / "c.png").write_bytes(deeper)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    assert run_import(place_, database, storage).new == 3

    refused.add("private")
    report = run_import(place_, database, storage, prune=True)
    assert report.skipped == [("private/", "a folder that cannot be read: Permission denied")]
    assert (report.gone, report.pruned, report.new) == ([], 0, 0)
    assert set(images_by_sha()) == {sha(outside), sha(inside), sha(deeper)}

    refused.clear()
    (folder / "private" / "b.png").unlink()  # now really gone: pruned
    report = run_import(place_, database, storage, prune=True)
    assert (report.gone, report.pruned, report.unchanged) == (["private/b.png"], 1, 2)
    assert set(images_by_sha()) == {sha(outside), sha(deeper)}


def test_a_file_that_cannot_be_opened_is_skipped_saying_why_and_read_once_it_can(local, database, tmp_path, refused):
    storage = open_storage(local)
    locked, other = distinct_images(2)
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "locked.png").write_bytes(locked)
    (folder / "other.png").write_bytes(other)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    refused.add("locked.png")
    report = run_import(place_, database, storage)
    assert (report.new, report.skipped) == (1, [("locked.png", "cannot be read: Permission denied")])
    assert set(images_by_sha()) == {sha(other)}
    assert [record.key for record in ImportedObject.select()] == ["other.png"]
    refused.clear()
    report = run_import(place_, database, storage)
    assert (report.new, report.unchanged, report.skipped) == (1, 1, [])
    assert set(images_by_sha()) == {sha(other), sha(locked)}


# --- pictures deleted through the API ------------------------------------------------------------------


def test_a_picture_deleted_through_the_api_is_not_imported_again_from_its_object_or_a_copy(
    place, database, db_flags, tmp_path
):
    deleted, kept, pruned = distinct_images(3)
    place.put("a.png", deleted)
    place.put("b.png", kept)
    place.put("c.png", pruned)
    storage = open_storage(place.settings)
    client = falcon.testing.TestClient(create_app(place.settings, database=database, storage=storage))
    assert run_import(place, database, storage).new == 3
    doomed = Image.get(Image.sha256 == sha(deleted))
    assert client.simulate_delete(f"/v1/images/{doomed.id}").status_code == 204

    # Every trace of the picture goes; what stays is its digest, and the record that its object was deleted.
    assert Image.get_or_none(Image.sha256 == sha(deleted)) is None
    assert storage.stat(f"thumbnails/{doomed.id[:2]}/{doomed.id}.jpg") is None
    assert storage.stat(doomed.storage_key) is None
    assert [row.sha256 for row in DeletedPicture.select()] == [sha(deleted)]
    assert ImportedObject.select().where(ImportedObject.image_id == doomed.id).count() == 0
    assert [record.key for record in ImportedObject.select().where(ImportedObject.outcome == "deleted")] == [""]

    # Not again from its own object, nor from a copy of its bytes elsewhere; said so. (In a bucket its
    # object went with the image, as every trace does: the user puts it back.)
    if place.kind == "s3":
        assert "camera/a.png" not in place.contents()
        place.put("a.png", deleted)
    place.put("copies/a-again.png", deleted)
    lines = cli_import(place.source, place.settings, db_flags, tmp_path)
    assert f"skipped: {place.key('a.png')}: {DELETED}" in lines
    assert f"skipped: {place.key('copies/a-again.png')}: {DELETED}" in lines
    assert "4 objects: 0 new, 0 duplicate, 0 refused, 0 gone, 2 unchanged, 2 skipped" in lines
    database.close()
    assert set(images_by_sha()) == {sha(kept), sha(pruned)}
    assert run_import(place, database, storage).skipped == [
        (place.key(n), DELETED) for n in ("a.png", "copies/a-again.png")
    ]

    # --prune: an object gone whose picture was deleted is no image to prune; a pruned image is no
    # deletion by a user: its picture put back is imported again.
    place.remove("a.png")
    place.remove("c.png")
    report = run_import(place, database, storage, prune=True)
    assert (report.gone, report.pruned) == ([place.key("c.png")], 1)
    assert report.skipped == [(place.key("copies/a-again.png"), DELETED)]
    assert [row.sha256 for row in DeletedPicture.select()] == [sha(deleted)]
    place.put("c.png", pruned)
    assert run_import(place, database, storage).new == 1

    # An upload through the API is not an import: the user may upload the picture again.
    assert upload(client, deleted).status_code == 201


def test_a_picture_deleted_through_the_api_while_an_import_reads_it_is_not_registered_again(
    place, database, tmp_path, monkeypatch
):
    """The deletion commits after the run looked for deleted pictures and before its rows commit."""
    picture, other = distinct_images(2)
    storage = open_storage(place.settings)
    client = falcon.testing.TestClient(create_app(place.settings, database=database, storage=storage))
    doomed = upload(client, picture).json["id"]
    place.put("alice-at-home.png", picture)
    place.put("other.png", other)
    commit = source_import.Importer._commit

    def delete_then_commit(self: source_import.Importer, batch: list[Any]) -> Any:
        if Image.get_or_none(Image.id == doomed) is not None:
            assert client.simulate_delete(f"/v1/images/{doomed}").status_code == 204
        return commit(self, batch)

    monkeypatch.setattr(source_import.Importer, "_commit", delete_then_commit)
    report = run_import(place, database, storage)
    assert (report.new, report.skipped) == (1, [(place.key("alice-at-home.png"), DELETED)])
    assert set(images_by_sha()) == {sha(other)}
    [kept] = Image.select()
    # No trace of the picture: its row, bytes and thumbnail, and the name of its object.
    expected = {f"thumbnails/{kept.id[:2]}/{kept.id}.jpg"} | ({kept.storage_key} if place.kind == "local" else set())
    assert set(stored_keys(storage)) == expected  # a bucket's object stays where it lies
    records = {record.outcome: record.key for record in ImportedObject.select()}
    assert records == {"new": place.key("other.png"), "deleted": ""}
    monkeypatch.undo()
    assert run_import(place, database, storage).skipped == [(place.key("alice-at-home.png"), DELETED)]
    assert set(images_by_sha()) == {sha(other)}


def test_a_picture_moved_within_the_source_keeps_its_image_and_is_neither_gone_nor_pruned(place, database, tmp_path):
    picture, other = distinct_images(2)
    place.put("a.png", picture)
    place.put("other.png", other)
    storage = open_storage(place.settings)
    client = falcon.testing.TestClient(create_app(place.settings, database=database, storage=storage))
    assert run_import(place, database, storage).new == 2
    image = Image.get(Image.sha256 == sha(picture))

    place.put("renamed/a.png", picture)  # moved: the same bytes under another name, the old one gone
    place.remove("a.png")
    report = run_import(place, database, storage, prune=True)
    assert (report.gone, report.pruned, report.new, report.duplicate) == ([], 0, 0, 1)
    assert Image.get(Image.sha256 == sha(picture)).id == image.id  # the same image: its jobs, results, ID
    assert served(client, image.id) == picture
    other_id = Image.get(Image.sha256 == sha(other)).id
    records = {record.key: (record.outcome, record.image_id) for record in ImportedObject.select()}
    assert records == {place.key("renamed/a.png"): ("new", image.id), place.key("other.png"): ("new", other_id)}

    report = run_import(place, database, storage, prune=True)
    assert (report.unchanged, report.gone, report.pruned) == (2, [], 0)
    place.remove("renamed/a.png")  # now really gone
    report = run_import(place, database, storage, prune=True)
    assert (report.gone, report.pruned) == ([place.key("renamed/a.png")], 1)
    assert set(images_by_sha()) == {sha(other)}


def test_an_imported_file_that_becomes_a_link_is_gone_and_pruned_and_its_target_never_read(
    local, database, tmp_path, monkeypatch
):
    storage = open_storage(local)
    picture, other = distinct_images(2)
    folder = tmp_path / "camera"
    folder.mkdir()
    (folder / "photo.png").write_bytes(picture)
    place_ = Place("local", str(folder), local, lambda *a: None, lambda *a: None, dict, str)
    assert run_import(place_, database, storage).new == 1
    (tmp_path / "elsewhere.png").write_bytes(other)
    (folder / "photo.png").unlink()
    (folder / "photo.png").symlink_to(tmp_path / "elsewhere.png")
    report = run_import(place_, database, storage, prune=True)
    assert (report.gone, report.pruned, report.new) == (["photo.png"], 1, 0)
    assert report.skipped == [("photo.png", "a symbolic link: not followed")]
    assert Image.select().count() == 0 and DeletedPicture.select().count() == 0
    assert (tmp_path / "elsewhere.png").read_bytes() == other
    assert stored_keys(storage) == []


def test_an_s3_key_is_never_taken_for_a_heartbeat_object_of_another_bucket(s3_store, s3_service, database):
    """Only the store's own bucket holds Heartbeat's objects: images/ of another bucket are the user's."""
    storage = open_storage(s3_store)
    service_client: minio.Minio = s3_service.client()
    bucket = f"{s3_store.storage.removeprefix('s3://')}-other"
    service_client.make_bucket(bucket)
    try:
        data = image_bytes((9, 9, 9))
        service_client.put_object(bucket, "images/mine.png", io.BytesIO(data), len(data))
        importer = open_importer(
            s3_store, database, storage, sources.open_source(f"s3://{bucket}/", storage), origin=None, workers=1
        )
        report = importer.run()
        assert (report.new, report.own) == (1, 0)
    finally:
        for listed in service_client.list_objects(bucket, recursive=True):
            service_client.remove_object(bucket, listed.object_name)
        service_client.remove_bucket(bucket)
