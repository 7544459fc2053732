"""Privacy with real processes: ``heartbeat retention``, ``heartbeat erase`` and ``heartbeat audit`` on the
test database; a server's chores thread erasing what it was asked to, and an erasure a killed server
left running finished by the server started after it, once the dead process's lease ran out."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import requests

from heartbeat.db.models import ChoreLease
from heartbeat.privacy.chores import PRIVACY
from helpers import distinct_images, heartbeat, stored_keys


def run(*args: str) -> str:
    done = heartbeat(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def upload(url: str, data: bytes, origin: str) -> str:
    answer = requests.post(f"{url}/v1/images", files={"file": ("p.png", data)}, data={"origin": origin}, timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def receipt_when_done(url: str, erasure_id: str, timeout: float = 60) -> dict[str, Any]:
    """The receipt once the server says done (its chores thread looks for work every second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        receipt = requests.get(f"{url}/v1/erasures/{erasure_id}", timeout=10).json()
        if receipt["status"] == "done":
            return dict(receipt)
        time.sleep(0.2)  # the server's thread gives no sign to wait on from outside
    raise AssertionError(f"erasure {erasure_id} not done within {timeout} s")


def test_retention_erase_and_audit_from_the_command_line(start_server, session_data_dir, db_flags, storage_flags):
    server = start_server(data_dir=session_data_dir)
    kept, gone = (
        upload(server.url, data, origin) for data, origin in zip(distinct_images(2), ["lobby", "street"], strict=True)
    )
    requests.post(f"{server.url}/v1/software", json={"name": "ocr"}, timeout=10).raise_for_status()
    requests.get(f"{server.url}/v1/images/{gone}/url", timeout=10).raise_for_status()

    assert run("retention", "add", "street", "--where", "origin = 'street'", "--max-age", "30d", *db_flags) == (
        "added retention policy street: images older than 2592000 s\n"
    )
    name, age, last, where = run("retention", "list", *db_flags).strip().split("\t")
    assert (name, age, where) == ("street", "2592000", "origin = 'street'")
    assert last in ("never", *(str(second) for second in range(int(time.time()) - 60, int(time.time()) + 1)))
    refused = heartbeat("retention", "add", "bad", "--where", "origin ==", "--max-age", "1d", *db_flags)
    assert refused.returncode == 1 and refused.stderr.startswith("error: where:"), refused.stderr

    erased = heartbeat("erase", "--where", "origin = 'street'", *db_flags, *storage_flags)
    assert erased.returncode == 0, erased.stderr
    receipt = json.loads(erased.stdout)
    assert (receipt["status"], receipt["matched"], receipt["erased"]) == ("done", 1, 1)
    assert requests.get(f"{server.url}/v1/images/{gone}", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/v1/images/{kept}", timeout=10).status_code == 200
    assert requests.get(f"{server.url}/v1/erasures/{receipt['id']}", timeout=10).json() == receipt

    lines = [json.loads(line) for line in run("audit", "--image", gone, *db_flags).splitlines()]
    assert [entry["action"] for entry in lines] == ["image.url", "images.erased"]  # by where: IDs as erased
    assert all(entry["image_ids"] == [gone] for entry in lines)
    assert run("audit", "--image", kept, *db_flags) == ""
    assert run("retention", "remove", "street", *db_flags) == "removed retention policy street\n"
    assert run("retention", "list", *db_flags) == ""


def test_an_erasure_a_killed_server_left_running_is_finished_by_the_next_one(
    start_server, session_data_dir, database, server_storage, tmp_path
):
    # A process that died holding the chores' lease: nobody erases until its lease runs out.
    with database.connection():
        ChoreLease.insert(name=PRIVACY, holder="dead-process", expires_at=time.time() + 3600).execute()
    first = start_server(data_dir=session_data_dir)
    ids = [upload(first.url, data, "cam") for data in distinct_images(3)]
    started = requests.post(f"{first.url}/v1/erasures", json={"where": "origin = 'cam'"}, timeout=10)
    assert started.status_code == 202, started.text
    erasure_id = started.json()["id"]
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    with database.connection():
        ChoreLease.update(expires_at=time.time()).where(ChoreLease.name == PRIVACY).execute()

    second = start_server(data_dir=session_data_dir)
    receipt = receipt_when_done(second.url, erasure_id)
    assert (receipt["matched"], receipt["erased"]) == (3, 3)
    for image_id in ids:
        assert requests.get(f"{second.url}/v1/images/{image_id}", timeout=10).status_code == 404
    assert [key for key in stored_keys(server_storage(session_data_dir)) if any(i in key for i in ids)] == []
