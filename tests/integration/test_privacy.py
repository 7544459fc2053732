"""Privacy: erasures with a receipt, retention policies, and the audit of who was handed which picture.

Run on every pass (SQLite, MariaDB, MariaDB with S3): the bytes an erasure removes are this pass's
store's. The chores that run erasures and retention are driven here a pass at a time
(``PrivacyChores.run_once``); the server's thread runs the same passes (``tests/e2e/test_privacy_cli.py``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import falcon.testing
import pytest

from conftest import FakeClock
from heartbeat.app import ServedApp, build_app
from heartbeat.auth import tokens
from heartbeat.config import Settings
from heartbeat.db.database import Database
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.privacy import erasure as erasure_module
from heartbeat.privacy.chores import PRIVACY, ChoreLeases
from heartbeat.service import Service
from heartbeat.storage import Storage
from helpers import claim, distinct_images, multipart, register, stored_keys, upload

FACES = {"faces": {"x": "int", "label": "text"}}
DAY = 86400.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())  # signed URLs are checked against the real clock


@pytest.fixture
def served(settings: Settings, database: Database, storage: Storage, clock: FakeClock) -> ServedApp:
    return build_app(Service(settings, database, storage=storage, clock=clock))


@pytest.fixture
def client(served: ServedApp) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(served.app)


def run_chores(served: ServedApp, database: Database) -> None:
    with database.connection():
        assert served.service.privacy_chores.run_once(), "this process holds the chores' lease"


def seed(client: falcon.testing.TestClient, count: int, origin: str, first: int = 0) -> list[str]:
    """``count`` images of ``origin``, each with a done face_detection job and an extra-table row."""
    ids = []
    for index, data in enumerate(distinct_images(first + count)[first:]):
        fields = {"origin": origin, "other_data": json.dumps({"who": f"{origin}-{index}"})}
        form = multipart(fields, data, filename=f"{origin}-{index}.png")
        answer = client.simulate_post("/v1/images", body=form["body"], headers=form["headers"])
        assert answer.status_code == 201, answer.text
        ids.append(answer.json["id"])
    for job in claim(client, max=count):
        rows = {"faces": [{"x": 1, "label": f"{origin}-face"}]}
        body = {"token": job["token"], "info": {"found": origin}, "rows": rows}
        answer = client.simulate_put(f"/v1/software/face_detection/jobs/{job['image_id']}/result", json=body)
        assert answer.status_code == 200, answer.text
    return ids


def every_row(database: Database) -> dict[str, str]:
    """Each table's rows, as text."""
    with database.connection():
        return {
            table: repr(database.execute(f"SELECT * FROM {database.quote(table)}").fetchall())
            for table in database.tables()
        }


def assert_no_trace(database: Database, storage: Storage, image: dict[str, Any], *texts: str) -> None:
    """Nothing of ``image`` anywhere (its fields, ``texts`` of its results, its bytes and thumbnail) but its
    ID, which only the audit and the events' IDs keep."""
    for table, rows in every_row(database).items():
        for text in (image["filename"], image["sha256"], *texts):
            assert text not in rows, f"{text!r} is left in {table}"
        if image["id"] in rows:
            assert table in {"audit_entries", "audit_images", "events"}, f"its ID is left in {table}"
    keys = stored_keys(storage)
    assert thumbnail_key(image["id"]) not in keys
    assert not [key for key in keys if image["id"] in key]


def test_an_erasure_by_where_removes_every_trace_of_what_it_matches_and_nothing_else(served, client, database, storage):
    register(client, "face_detection", tables=FACES)
    erased = seed(client, 3, "alice-cam")
    kept = seed(client, 2, "bob-cam", first=3)
    images = {image_id: client.simulate_get(f"/v1/images/{image_id}").json for image_id in erased}

    answer = client.simulate_post("/v1/erasures", json={"where": "origin = 'alice-cam'"})
    assert answer.status_code == 202, answer.text
    receipt = answer.json
    assert receipt["status"] == "running"
    assert answer.headers["Location"].endswith(f"/v1/erasures/{receipt['id']}")
    run_chores(served, database)

    done = client.simulate_get(f"/v1/erasures/{receipt['id']}").json
    assert done["status"] == "done"
    assert (done["matched"], done["erased"]) == (3, 3)
    assert done["finished_at"] >= done["started_at"]
    assert set(done) == {"id", "status", "matched", "erased", "started_at", "finished_at", "policy"}
    for image_id, image in images.items():
        assert client.simulate_get(f"/v1/images/{image_id}").status_code == 404
        assert client.simulate_get(f"/v1/software/face_detection/jobs/{image_id}").status_code == 404
        assert_no_trace(database, storage, image, "alice-cam", image["other_data"]["who"], "alice-face")
    counts = client.simulate_get("/v1/software/face_detection").json["counts"]
    assert counts["done"] == 2
    rows = client.simulate_get("/v1/software/face_detection/tables/faces").json["rows"]
    assert sorted(row["image_id"] for row in rows) == sorted(kept)
    for image_id in kept:
        assert client.simulate_get(f"/v1/images/{image_id}").json["jobs"] == {"face_detection": "done"}
        assert client.simulate_get(f"/v1/images/{image_id}/url").status_code == 200  # its bytes are there
    deleted = client.simulate_get("/v1/events?types=image.deleted").json["events"]
    assert sorted(event["image_id"] for event in deleted) == sorted(erased)


def test_an_erasure_by_ids_erases_those_that_exist(served, client, database, storage):
    register(client, "face_detection", tables=FACES)
    first, second = seed(client, 2, "cam")
    answer = client.simulate_post("/v1/erasures", json={"image_ids": [first, "no-such-image", first]})
    assert answer.status_code == 202, answer.text
    assert answer.json["matched"] == 1
    run_chores(served, database)
    receipt = client.simulate_get(f"/v1/erasures/{answer.json['id']}").json
    assert (receipt["status"], receipt["matched"], receipt["erased"]) == ("done", 1, 1)
    assert client.simulate_get(f"/v1/images/{first}").status_code == 404
    assert client.simulate_get(f"/v1/images/{second}").status_code == 200
    listed = client.simulate_get("/v1/erasures").json
    assert [item["id"] for item in listed["erasures"]] == [answer.json["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"where": "origin = 'a'", "image_ids": ["x"]},
        {"image_ids": []},
        {"where": "origin = "},
        {"where": "nosuch.status = 'done'"},
        {"where": "origin = 'a'", "extra": 1},
    ],
    ids=["nothing", "both", "no-ids", "syntax", "unknown-software", "unknown-field"],
)
def test_a_bad_erasure_is_refused_and_starts_nothing(client, body):
    upload(client)
    answer = client.simulate_post("/v1/erasures", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json["description"]
    assert client.simulate_get("/v1/erasures").json["erasures"] == []
    assert client.simulate_get("/v1/erasures/0123456789abcdef").status_code == 404


def test_a_retention_policy_erases_exactly_what_came_due_even_a_job_claimed_then(
    served, client, database, storage, clock
):
    register(client, "face_detection", tables=FACES)
    register(client, "ocr")
    old_done = seed(client, 2, "street")  # done, and old once the clock moves
    [old_claimed] = [upload(client, data, origin="street").json["id"] for data in distinct_images(3)[2:]]
    [held] = claim(client, "face_detection")
    assert held["image_id"] == old_claimed
    clock.advance(31 * DAY)
    [young] = [upload(client, data, origin="street").json["id"] for data in distinct_images(4)[3:]]
    other_origin = upload(client, distinct_images(5)[4], origin="lobby").json["id"]

    answer = client.simulate_post(
        "/v1/retention", json={"name": "street_month", "where": "origin = 'street'", "max_age_seconds": 30 * DAY}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json["last_run_at"] is None
    assert client.simulate_post("/v1/retention", json=answer.json | {"last_run_at": None}).status_code == 400
    duplicate = {"name": "street_month", "where": "origin = 'x'", "max_age_seconds": 1}
    assert client.simulate_post("/v1/retention", json=duplicate).status_code == 409

    run_chores(served, database)
    [run] = client.simulate_get("/v1/erasures").json["erasures"]
    assert (run["policy"], run["status"], run["matched"], run["erased"]) == ("street_month", "done", 3, 3)
    for image_id in [*old_done, old_claimed]:
        assert client.simulate_get(f"/v1/images/{image_id}").status_code == 404
    for image_id in [young, other_origin]:
        assert client.simulate_get(f"/v1/images/{image_id}").status_code == 200
    late = client.simulate_put(
        f"/v1/software/face_detection/jobs/{old_claimed}/result",
        json={"token": held["token"], "info": {}, "rows": {"faces": [{"x": 1, "label": "late"}]}},
    )
    assert late.status_code in (404, 409), late.text
    assert client.simulate_get("/v1/software/face_detection/tables/faces").json["rows"] == []
    counts = client.simulate_get("/v1/software/face_detection").json["counts"]
    assert (counts["claimed"], counts["done"], counts["pending"]) == (0, 0, 2)
    assert [key for key in stored_keys(storage) if old_claimed in key] == []

    policy = client.simulate_get("/v1/retention/street_month").json
    assert policy["last_run_at"] == clock.now
    run_chores(served, database)  # not due again before the interval
    assert len(client.simulate_get("/v1/erasures").json["erasures"]) == 1
    clock.advance(served.service.settings.retention_interval_seconds)
    run_chores(served, database)
    assert len(client.simulate_get("/v1/erasures").json["erasures"]) == 2
    assert client.simulate_get(f"/v1/images/{young}").status_code == 200  # 30 days old once 31 days pass

    assert client.simulate_delete("/v1/retention/street_month").status_code == 204
    assert client.simulate_delete("/v1/retention/street_month").status_code == 404
    assert client.simulate_get("/v1/retention").json == {"policies": [], "next_cursor": None}


def test_an_erasure_cut_short_finishes_when_run_again_with_a_correct_receipt(
    served, client, database, storage, settings, clock, monkeypatch
):
    """A crash between steps, and one after a step removed bytes and before its rows committed: a new
    process (a new object graph on the same database and store) finishes it, counting each image once."""
    monkeypatch.setattr(erasure_module, "MATCH_BATCH", 2)
    monkeypatch.setattr(erasure_module, "ERASE_BATCH", 2)
    register(client, "face_detection", tables=FACES)
    ids = seed(client, 5, "cam")
    receipt = client.simulate_post("/v1/erasures", json={"where": "origin = 'cam'"}).json
    erasures = served.service.erasures
    with database.connection():
        for _ in range(3):  # matching: 2, 2, 1
            assert erasures.step(receipt["id"])
        assert erasures.step(receipt["id"])  # 2 erased
        catalog = served.service.catalog

        def crash(*args: Any, **kwargs: Any) -> None:
            raise SystemExit("killed")

        monkeypatch.setattr(catalog, "delete_rows", crash)
        with pytest.raises(SystemExit):
            erasures.step(receipt["id"])  # the next 2 lose their bytes, and the process dies
    midway = client.simulate_get(f"/v1/erasures/{receipt['id']}").json
    assert (midway["status"], midway["matched"], midway["erased"]) == ("running", 5, 2)

    restarted = build_app(Service(settings, database, storage=storage, clock=clock))
    run_chores(restarted, database)
    done = client.simulate_get(f"/v1/erasures/{receipt['id']}").json
    assert (done["status"], done["matched"], done["erased"]) == ("done", 5, 5)
    for image_id in ids:
        assert client.simulate_get(f"/v1/images/{image_id}").status_code == 404
    assert stored_keys(storage) == []
    assert client.simulate_get("/v1/software/face_detection").json["counts"]["done"] == 0
    erased_entries = client.simulate_get("/v1/audit?action=images.erased").json["entries"]
    assert sorted(image_id for entry in erased_entries for image_id in entry["image_ids"]) == sorted(ids)


def test_one_process_holds_the_chores_at_a_time_and_another_takes_over_once_it_lapses(database, clock):
    first, second = ChoreLeases(database, clock), ChoreLeases(database, clock)
    with database.connection():
        assert first.take(PRIVACY, 15)
        assert not second.take(PRIVACY, 15)
        assert first.take(PRIVACY, 15)  # renewed
        clock.advance(14)
        assert not second.take(PRIVACY, 15)
        clock.advance(16)
        assert second.take(PRIVACY, 15)
        assert not first.holds(PRIVACY)
        second.give_up(PRIVACY)
        assert first.take(PRIVACY, 15)


# --- the audit -------------------------------------------------------------------------------------


@pytest.fixture
def token_ids(database, clock) -> dict[str, tuple[str, str]]:
    """(ID, secret) of an admin, a reader and a face_detection worker token."""
    with database.connection():
        made = {
            "admin": tokens.create_token("admin", clock=clock),
            "reader": tokens.create_token("reader", clock=clock),
            "worker": tokens.create_token("worker", software="face_detection", clock=clock),
        }
    return {role: (row.id, secret) for role, (row, secret) in made.items()}


def as_(token_ids: dict[str, tuple[str, str]], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_ids[role][1]}"}


def entries(client: falcon.testing.TestClient, admin: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    after = ""
    while True:
        query = "&".join(f"{key}={value}" for key, value in filters.items()) + after
        answer = client.simulate_get(f"/v1/audit?limit=2&{query}", headers=admin)
        assert answer.status_code == 200, answer.text
        found += answer.json["entries"]
        if answer.json["next_cursor"] is None:
            return found
        after = f"&after={answer.json['next_cursor']}"


def test_every_access_to_pictures_leaves_an_entry_with_its_token(
    served, client, database, token_ids, settings, storage
):
    admin, reader, worker = (as_(token_ids, role) for role in ("admin", "reader", "worker"))
    register(client, "face_detection", headers=admin)
    first, second = (upload(client, data, headers=admin).json["id"] for data in distinct_images(2))
    start = len(entries(client, admin))

    jobs = claim(client, "face_detection", headers=worker, max=2)
    assert client.simulate_get(f"/v1/images/{first}/url", headers=reader).status_code == 200
    assert client.simulate_get(f"/v1/images/{first}/content", headers=reader).status_code == 307
    assert client.simulate_get(f"/v1/images/{second}/thumbnail", headers=reader).status_code == 307
    listed = client.simulate_get("/v1/images?include=thumbnail", headers=reader)
    assert listed.status_code == 200
    exported = client.simulate_get("/v1/export?format=csv", headers=reader)
    assert exported.status_code == 200
    for path in (f"/v1/images/{first}/url", "/v1/images?include=thumbnail", "/v1/export"):  # no body, no access
        assert client.simulate_head(path, headers=reader).status_code == 200
    blob_reads = 0
    if not settings.storage.startswith("s3://"):  # the local store's URLs are served by this app
        path = jobs[0]["url"].split("://", 1)[1].partition("/")[2]
        assert client.simulate_get("/" + path).status_code == 200
        blob_reads = 1
    assert client.simulate_delete(f"/v1/images/{second}", headers=admin).status_code == 204
    erasure = client.simulate_post("/v1/erasures", json={"image_ids": [first]}, headers=admin).json
    run_chores(served, database)

    made = entries(client, admin)[start:]
    seen = [(entry["action"], entry["token_id"], sorted(entry["image_ids"])) for entry in made]
    admin_id, reader_id, worker_id = (token_ids[role][0] for role in ("admin", "reader", "worker"))
    expected = [
        ("claim", worker_id, sorted([first, second])),
        ("image.url", reader_id, [first]),
        ("image.content", reader_id, [first]),
        ("image.thumbnail", reader_id, [second]),
        ("images.thumbnails", reader_id, sorted([first, second])),
        ("export", reader_id, []),
        *[("blob.read", None, [jobs[0]["image_id"]])] * blob_reads,
        ("image.deleted", admin_id, [second]),
        ("erasure", admin_id, [first]),
        ("images.erased", admin_id, [first]),
    ]
    assert seen == expected
    assert made[0]["detail"] == {"software": "face_detection"}
    assert made[-1]["detail"] == {"erasure_id": erasure["id"]}
    by_image = entries(client, admin, image_id=first)
    assert {entry["action"] for entry in by_image} >= {"claim", "image.url", "image.content", "erasure"}
    assert all(first in entry["image_ids"] for entry in by_image)
    assert [entry["action"] for entry in entries(client, admin, token_id=worker_id)] == ["claim"]
    assert [entry["token_id"] for entry in entries(client, admin, action="image.url")] == [reader_id]
    # An erased image's entries keep its ID alone: no filename, origin or result anywhere in the audit.
    assert "photo.jpg" not in json.dumps(entries(client, admin))


def test_token_changes_and_retention_runs_are_recorded(served, client, database, clock, token_ids):
    admin = as_(token_ids, "admin")
    made = [entry for entry in entries(client, admin) if entry["action"] == "token.created"]
    assert sorted(entry["detail"]["token"] for entry in made) == sorted(row_id for row_id, _ in token_ids.values())
    with database.connection():
        tokens.revoke_token(token_ids["reader"][0], clock=clock)
        tokens.revoke_token(token_ids["reader"][0], clock=clock)  # once revoked, nothing changes
    [revoked] = entries(client, admin, action="token.revoked")
    assert revoked["detail"] == {"token": token_ids["reader"][0]}
    policy = {"name": "week", "where": "origin = 'x'", "max_age_seconds": 7 * DAY}
    assert client.simulate_post("/v1/retention", json=policy, headers=admin).status_code == 201
    run_chores(served, database)
    [run] = entries(client, admin, action="retention.run")
    assert run["token_id"] is None
    assert run["detail"]["policy"] == "week"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_route_changes_or_deletes_an_entry(client, method):
    register(client, "face_detection")
    upload(client)
    claim(client)
    before = client.simulate_get("/v1/audit").json
    assert [entry["action"] for entry in before["entries"]] == ["claim"]
    answer = client.simulate_request(method, "/v1/audit", json={"entries": []})
    assert answer.status_code == 405
    for entry in before["entries"]:
        assert client.simulate_request(method, f"/v1/audit/{entry['id']}").status_code == 404
    assert client.simulate_get("/v1/audit").json == before


@pytest.mark.parametrize(
    "query", ["after=abc", "after=-1", "limit=0", "limit=1001", "action=nothing", "image_id=" + "x" * 33]
)
def test_a_bad_audit_query_is_refused(client, query):
    answer = client.simulate_get(f"/v1/audit?{query}")
    assert answer.status_code == 400, answer.text


def test_entries_past_their_retention_are_removed(served, client, database, clock):
    register(client, "face_detection")
    image_id = upload(client).json["id"]
    claim(client)
    assert len(client.simulate_get("/v1/audit").json["entries"]) == 1
    clock.advance(served.service.settings.audit_retain_seconds + 1)
    assert client.simulate_get(f"/v1/images/{image_id}/url").status_code == 200
    run_chores(served, database)
    [kept] = client.simulate_get("/v1/audit").json["entries"]
    assert kept["action"] == "image.url"
    assert client.simulate_get(f"/v1/audit?image_id={image_id}").json["entries"] == [kept]
