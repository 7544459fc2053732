"""The command line, run as real processes against the test database and a real server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import requests

from conftest import BACKEND
from heartbeat.db.connect import sqlite_path
from helpers import free_port, heartbeat, image_bytes, upload


def listed_software(db_flags: list[str]) -> dict[str, dict[str, int]]:
    """``heartbeat software list`` as {name: {status: count}}."""
    done = heartbeat("software", "list", *db_flags)
    assert done.returncode == 0, done.stderr
    listing = {}
    for line in done.stdout.splitlines():
        name, *counts = line.split("\t")
        listing[name] = {status: int(count) for status, count in (item.split("=") for item in counts)}
    return listing


def make_pictures(folder: Path) -> list[Path]:
    """Three real pictures of different colours in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = [
        (folder / "red.jpg", image_bytes((220, 20, 20), fmt="JPEG")),
        (folder / "green.png", image_bytes((20, 220, 20), fmt="PNG")),
        (folder / "blue.png", image_bytes((20, 20, 220), fmt="PNG")),
    ]
    for path, data in pictures:
        path.write_bytes(data)
    return [path for path, _ in pictures]


def images_on(server) -> list[dict]:
    response = requests.get(f"{server.url}/v1/images", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["images"]


# --- heartbeat software ----------------------------------------------------------------------


def test_software_add_registers_it_and_software_list_shows_its_job_counts(client, db_flags):
    upload(client, image_bytes())  # an image already there: the new software gets a pending job for it
    added = heartbeat("software", "add", "ocr", "--lease-seconds", "30", "--max-attempts", "2", *db_flags)
    assert added.returncode == 0, added.stderr
    assert listed_software(db_flags) == {
        "ocr": {"pending": 1, "claimed": 0, "done": 0, "failed": 0, "skipped": 0, "outdated": 0}
    }
    software = client.simulate_get("/v1/software/ocr").json
    assert (software["lease_seconds"], software["max_attempts"]) == (30, 2)


def test_adding_the_same_software_twice_fails_with_a_message(db_flags):
    assert heartbeat("software", "add", "ocr", *db_flags).returncode == 0
    again = heartbeat("software", "add", "ocr", "--lease-seconds", "99", *db_flags)
    assert again.returncode != 0
    assert "ocr" in again.stderr
    assert "already" in again.stderr
    assert "Traceback" not in again.stderr
    assert list(listed_software(db_flags)) == ["ocr"]


@pytest.mark.parametrize(
    "args",
    [["Bad-Name"], ["1ocr"], ["x" * 49], ["ocr", "--lease-seconds", "0"], ["ocr", "--max-attempts", "0"]],
    ids=["capitals-and-dash", "leading-digit", "too-long", "lease-zero", "attempts-zero"],
)
def test_software_add_with_a_bad_value_fails_with_a_message_and_registers_nothing(db_flags, args):
    done = heartbeat("software", "add", *args, *db_flags)
    assert done.returncode != 0
    assert "error" in done.stderr
    assert "Traceback" not in done.stderr
    assert listed_software(db_flags) == {}


# --- heartbeat serve -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--host", "0.0.0.0"], {}), (["--host", "::"], {}), ([], {"HEARTBEAT_HOST": "0.0.0.0"})],
    ids=["flag-any-ipv4", "flag-any-ipv6", "env-any-ipv4"],
)
def test_serve_without_tokens_refuses_a_non_loopback_address(tmp_path, args, env):
    # Were it to start serving instead, the run would hit its timeout and fail.
    done = heartbeat("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), *args, env=env, timeout=30)
    assert done.returncode != 0
    assert "loopback" in done.stderr
    assert "heartbeat token create --role admin" in done.stderr, "the refusal says how to create a token"
    assert "serving on" not in done.stdout


# --- heartbeat upload ------------------------------------------------------------------------


def test_upload_of_a_folder_and_a_non_image_reports_the_failure_and_stores_the_pictures(start_server, tmp_path):
    server = start_server()
    pictures = make_pictures(tmp_path / "pictures")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    done = heartbeat("upload", str(tmp_path / "pictures"), str(notes), "--api", server.url, "--origin", "cli")
    assert done.returncode != 0
    failed = [line for line in done.stderr.splitlines() if str(notes) in line]
    assert len(failed) == 1 and "415" in failed[0], done.stderr
    assert not any(str(picture) in done.stderr for picture in pictures)
    images = images_on(server)
    assert sorted(image["filename"] for image in images) == sorted(p.name for p in pictures)
    assert {image["origin"] for image in images} == {"cli"}


def test_upload_of_only_pictures_exits_0(start_server, tmp_path):
    server = start_server()
    pictures = make_pictures(tmp_path / "pictures")
    done = heartbeat("upload", *map(str, pictures), "--api", server.url)
    assert done.returncode == 0, done.stderr
    assert len(images_on(server)) == 3


def test_uploading_the_same_folder_again_exits_0_and_adds_nothing(start_server, tmp_path):
    server = start_server()
    make_pictures(tmp_path / "pictures")
    first = heartbeat("upload", str(tmp_path / "pictures"), "--api", server.url)
    again = heartbeat("upload", str(tmp_path / "pictures"), "--api", server.url)
    assert (first.returncode, again.returncode) == (0, 0), again.stderr
    assert len(images_on(server)) == 3
    assert "3 uploaded (0 of them stored before), 0 failed" in first.stdout
    assert "3 uploaded (3 of them stored before), 0 failed" in again.stdout


def test_upload_of_a_folder_without_pictures_says_so_and_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    done = heartbeat("upload", str(tmp_path / "empty"), "--api", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert f"skipped {tmp_path / 'empty' / 'notes.txt'}: not an image file name" in done.stderr
    assert f"error: no image files in {tmp_path / 'empty'}" in done.stderr


def test_a_command_on_an_unreachable_database_prints_one_error_line(tmp_path):
    auth = tmp_path / "db_auth.json"
    auth.write_text(json.dumps({"host": "127.0.0.1", "port": free_port(), "user": "root", "database": "x"}))
    for command in (["software", "list"], ["token", "list"]):
        done = heartbeat(*command, "--db-auth", str(auth))
        assert done.returncode == 1
        assert done.stderr.startswith("error: the database is unreachable"), done.stderr
        assert "Traceback" not in done.stderr


def test_upload_to_a_server_that_is_not_there_fails_and_uploads_nothing(tmp_path):
    make_pictures(tmp_path / "pictures")
    url = f"http://127.0.0.1:{free_port()}"
    done = heartbeat("upload", str(tmp_path / "pictures"), "--api", url)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: no Heartbeat API answers at {url} (the URL of --api)"
    assert "uploaded" not in done.stdout


def test_software_set_changes_the_version_and_reopens_or_keeps_the_done_jobs(client, db_flags):
    assert heartbeat("software", "add", "ocr", "--version", "a", *db_flags).returncode == 0
    upload(client)
    [job] = client.simulate_post("/v1/software/ocr/claim", json={}).json["jobs"]
    body = {"token": job["token"], "info": {}}
    assert client.simulate_put(f"/v1/software/ocr/jobs/{job['image_id']}/result", json=body).status_code == 200

    kept = heartbeat("software", "set", "ocr", "--version", "b", "--no-recompute", *db_flags)
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip() == "ocr: version b, 0 pending, 1 outdated"
    reopened = heartbeat("software", "set", "ocr", "--version", "c", *db_flags)
    assert reopened.stdout.strip() == "ocr: version c, 1 pending, 0 outdated"
    assert listed_software(db_flags)["ocr"]["pending"] == 1
    refused = heartbeat("software", "set", "ocr", "--lease-seconds", "0", *db_flags)
    assert refused.returncode == 1 and refused.stderr.startswith("error: lease_seconds"), refused.stderr


def test_export_writes_the_selected_images_to_a_file_with_a_progress_bar(client, db_flags, tmp_path):
    assert heartbeat("software", "add", "ocr", *db_flags).returncode == 0
    for number in range(3):
        upload(client, image_bytes((number * 60, 5, 5)), origin="north" if number else "south")
    out = tmp_path / "export.jsonl"
    done = heartbeat("export", "--format", "jsonl", "--where", "origin = 'north'", "-o", str(out), *db_flags)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["origin"] for line in lines] == ["north", "north"]
    assert lines[0]["software"]["ocr"]["status"] == "pending"
    assert "2/2" in done.stderr  # tqdm's count of images
    refused = heartbeat("export", "--where", "origin =", *db_flags)
    assert refused.returncode == 1 and refused.stderr.startswith("error: where:"), refused.stderr
    unknown = heartbeat("export", "--software", "ocr,nobody", *db_flags)  # as the API's 404: no silent skip
    assert unknown.returncode == 1 and "no software named 'nobody'" in unknown.stderr, unknown.stderr


def test_export_takes_a_software_named_twice_once(client, db_flags, tmp_path):
    assert heartbeat("software", "add", "ocr", *db_flags).returncode == 0
    upload(client, image_bytes(), origin="=1+1")
    out = tmp_path / "export.csv"
    done = heartbeat("export", "--format", "csv", "--software", "ocr,ocr,ocr", "-o", str(out), *db_flags)
    assert done.returncode == 0, done.stderr
    header, row = out.read_text().splitlines()
    assert header.endswith(",priority,ocr.status")  # one column, not three
    assert row.endswith(",pending") and ",'=1+1," in row  # the CLI's CSV is guarded as the API's


@pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's one write lock; MySQL locks rows")
def test_export_runs_while_a_server_holds_the_sqlite_write_lock(client, db_flags, session_data_dir, tmp_path):
    """A read-only command beside a busy server: it must not wait for (or fail on) the write lock."""
    assert heartbeat("software", "add", "ocr", *db_flags).returncode == 0
    upload(client, image_bytes(), origin="north")
    writer = sqlite3.connect(sqlite_path(session_data_dir), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # as a server's transaction holds it
        out = tmp_path / "export.jsonl"
        # Waiting for the lock would take busy_timeout (30 s): the 20 s limit turns that into a failure.
        done = heartbeat("export", "--format", "jsonl", "-o", str(out), *db_flags, timeout=20)
    finally:
        writer.rollback()
        writer.close()
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["origin"] for line in out.read_text().splitlines()] == ["north"]
