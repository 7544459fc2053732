"""Events: every path that changes state writes its event in the same transaction, and a reader
following ``next_cursor`` sees each once, in commit order, skipping none."""

from __future__ import annotations

import dataclasses

import falcon.testing
import pytest

from heartbeat.app import create_app
from heartbeat.config import UrlAllowList
from helpers import (
    claim,
    direct_upload,
    distinct_images,
    image_bytes,
    multipart,
    put_url,
    register,
    serving,
    upload,
)

FD = "/v1/software/face_detection"


def read_all(client, after=None, **params):
    """Every event after ``after`` (following ``next_cursor`` to the end), and the last cursor."""
    events = []
    while True:
        query = {**params, **({"after": after} if after is not None else {})}
        answer = client.simulate_get("/v1/events", params=query)
        assert answer.status_code == 200, answer.text
        events += answer.json["events"]
        if answer.json["next_cursor"] == after or not answer.json["events"]:
            return events, answer.json["next_cursor"]
        after = answer.json["next_cursor"]


def kinds(events):
    return [(event["type"], event.get("software"), event.get("image_id")) for event in events]


def submit(client, job, info=None):
    return client.simulate_put(
        f"{FD}/jobs/{job['image_id']}/result", json={"token": job["token"], "info": info or {"faces": []}}
    )


def test_a_software_an_upload_a_result_and_a_deletion_each_make_their_event(client):
    register(client, "face_detection")
    [image_id] = [upload(client, data).json["id"] for data in distinct_images(1)]
    [job] = claim(client)
    assert submit(client, job, {"faces": [1]}).status_code == 200
    read_all(client)  # a read sequences what committed: drained is placed after the result
    assert client.simulate_delete(f"/v1/images/{image_id}").status_code == 204
    events, cursor = read_all(client)
    assert kinds(events) == [
        ("software.created", "face_detection", None),
        ("image.created", None, image_id),
        ("job.done", "face_detection", image_id),
        ("software.drained", "face_detection", None),
        ("image.deleted", None, image_id),
    ]
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert events[-1]["data"] == {"id": image_id}
    # Every trace: the image's earlier events keep its ID, not its fields or results.
    assert events[1]["data"] == events[2]["data"] == {"erased": True}
    # Nothing more after the last cursor.
    assert read_all(client, after=cursor) == ([], cursor)


def test_job_done_carries_the_result_and_image_created_the_image(client):
    register(client, "face_detection", version="v2")
    image = upload(client).json
    [job] = claim(client)
    submit(client, job, {"faces": [{"x": 1}]})
    events, _ = read_all(client, types="job.done,image.created")
    assert events[0]["type"] == "image.created" and events[0]["data"]["sha256"] == image["sha256"]
    assert events[1]["data"] == {"status": "done", "version": "v2", "attempt": 1, "info": {"faces": [{"x": 1}]}}


def test_a_refused_change_makes_no_event(client):
    register(client, "face_detection")
    upload(client)
    [job] = claim(client)
    _, cursor = read_all(client)
    assert submit(client, {**job, "token": "stale"}).status_code == 409
    assert client.simulate_post("/v1/software", json={"name": "face_detection"}).status_code == 409
    assert client.simulate_patch(f"{FD}", json={"paused": False}).status_code == 200  # no change made
    assert upload(client, b"not an image").status_code == 415
    assert read_all(client, after=cursor) == ([], cursor)


def test_batch_submit_fail_requeue_version_and_pause_each_make_events(client, clock):
    register(client, "face_detection", max_attempts=1)
    for data in distinct_images(3):
        upload(client, data)
        clock.advance(1)
    _, cursor = read_all(client)
    jobs = claim(client, max=3)
    ids = [job["image_id"] for job in jobs]
    results = [{"image_id": job["image_id"], "token": job["token"], "info": {"n": 1}} for job in jobs[:2]]
    answer = client.simulate_post(f"{FD}/results", json={"results": results})
    assert [item["status"] for item in answer.json["results"]] == ["done", "done"]
    fail = {"token": jobs[2]["token"], "error": "broken", "retry": False}
    assert client.simulate_post(f"{FD}/jobs/{ids[2]}/fail", json=fail).status_code == 200
    events, cursor = read_all(client, after=cursor)
    assert kinds(events) == [
        ("job.done", "face_detection", ids[0]),
        ("job.done", "face_detection", ids[1]),
        ("job.failed", "face_detection", ids[2]),
        ("software.drained", "face_detection", None),
    ]
    assert events[2]["data"]["status"] == "failed" and events[2]["data"]["error"] == "broken"
    assert events[3]["data"] == {"done": 2, "failed": 1, "skipped": 0}

    assert client.simulate_post(f"{FD}/requeue", json={"status": "failed"}).status_code == 200
    assert client.simulate_patch(FD, json={"version": "2"}).status_code == 200
    assert client.simulate_patch(FD, json={"paused": True}).status_code == 200
    events, cursor = read_all(client, after=cursor)
    reopened = [(event["image_id"], event["data"]["reason"]) for event in events if event["type"] == "job.reopened"]
    assert sorted(reopened) == sorted([(ids[2], "requeue"), (ids[0], "version"), (ids[1], "version")])
    changed = [event["data"]["changes"] for event in events if event["type"] == "software.changed"]
    assert changed == [{"version": "2"}, {"paused": True}]


def test_a_lease_that_runs_out_on_its_last_attempt_is_job_failed(client, clock, app):
    register(client, "face_detection", max_attempts=1, lease_seconds=10)
    image_id = upload(client).json["id"]
    claim(client)
    _, cursor = read_all(client)
    clock.advance(11)
    claim(client)  # takes the expired lease over: the job fails
    events, _ = read_all(client, after=cursor, types="job.failed")
    assert [(event["image_id"], event["data"]["error"]) for event in events] == [(image_id, "lease expired")]


def test_filters_and_cursors(client):
    register(client, "face_detection")
    register(client, "ocr")
    upload(client)
    events, cursor = read_all(client, software="ocr")
    assert {event.get("software") for event in events} == {"ocr"}
    assert client.simulate_get("/v1/events", params={"types": "job.nope"}).status_code == 400
    assert client.simulate_get("/v1/events", params={"after": str(int(cursor) + 1000)}).status_code == 400
    assert client.simulate_get("/v1/events", params={"after": "abc"}).status_code == 400
    assert client.simulate_get("/v1/events", params={"after": "now"}).json["events"] == []
    page = client.simulate_get("/v1/events", params={"limit": 1}).json
    assert len(page["events"]) == 1 and page["next_cursor"] == page["events"][0]["id"]


def test_a_cursor_older_than_the_events_kept_is_gone(client, clock, app, settings, database):
    from heartbeat.events.outbox import Outbox
    from heartbeat.events.sequencer import Sequencer

    register(client, "face_detection")
    upload(client)
    events, _ = read_all(client)
    clock.advance(8 * 86400)
    sequencer = Sequencer(database, Outbox(database, clock), clock, retain_seconds=7 * 86400)
    with database.connection():
        assert sequencer.remove_expired() == len(events)
    assert client.simulate_get("/v1/events", params={"after": events[0]["id"]}).status_code == 410
    assert client.simulate_get("/v1/events", params={"after": events[-1]["id"]}).json["events"] == []
    assert client.simulate_get("/v1/events").json["events"] == []


@pytest.mark.parametrize("wait", [0.2])
def test_a_waiting_read_answers_when_the_time_is_up(client, wait):
    answer = client.simulate_get("/v1/events", params={"after": "now", "wait_seconds": wait})
    assert answer.status_code == 200 and answer.json["events"] == []


def test_a_direct_upload_is_image_created_and_a_claim_or_release_is_no_event(client, storage):
    register(client, "face_detection")
    started = client.simulate_post("/v1/uploads", json={"filename": "a.png"}).json
    assert put_url(client, started["url"], image_bytes(size=(20, 10), fmt="PNG")) in (200, 204)
    image = client.simulate_post(f"/v1/uploads/{started['upload_id']}/complete", json={}).json
    events, cursor = read_all(client, types="image.created")
    assert [(event["image_id"], event["data"]["width"]) for event in events] == [(image["id"], 20)]
    _, cursor = read_all(client)
    [job] = claim(client)
    release = client.simulate_post(f"{FD}/jobs/{image['id']}/release", json={"token": job["token"]})
    assert release.status_code == 200
    assert read_all(client, after=cursor) == ([], cursor)  # nothing a consumer acts on changed


def test_the_reaper_a_pipeline_skip_and_its_reopening(client, clock, database):
    from heartbeat.db.models import Software
    from heartbeat.queue import JobQueue

    register(client, "face_detection", max_attempts=1, lease_seconds=10)
    register(client, "ocr", after=["face_detection"])
    image_id = upload(client).json["id"]
    [job] = claim(client)
    _, cursor = read_all(client)
    clock.advance(11)
    with database.connection():
        assert JobQueue(database, clock).claims.expire_leases(Software.get(Software.name == "face_detection")) == 1
    events, cursor = read_all(client, after=cursor)
    assert kinds(events)[:2] == [
        ("job.failed", "face_detection", image_id),
        ("job.skipped", "ocr", image_id),
    ]
    assert events[0]["data"] == {"status": "failed", "attempt": 1, "error": "lease expired"}
    assert events[1]["data"]["status"] == "skipped"
    # The late result of that lease is taken: done, and the skipped job downstream reopens.
    assert submit(client, job, {"late": True}).status_code == 200
    events, _ = read_all(client, after=cursor)
    assert kinds(events)[:2] == [("job.done", "face_detection", image_id), ("job.reopened", "ocr", image_id)]
    assert events[0]["data"]["late"] is True and events[1]["data"]["reason"] == "upstream"


def test_an_import_makes_image_created_and_its_prune_image_deleted(tmp_path, settings, database, storage, client):
    from heartbeat.service import open_importer
    from heartbeat.storage.sources import open_source

    if settings.storage.startswith("s3"):
        pytest.skip("a folder is imported into local storage (buckets: test_imports)")
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index, data in enumerate(distinct_images(2)):
        (folder / f"p{index}.png").write_bytes(data)
    _, cursor = read_all(client)

    def run(prune: bool = False):
        source = open_source(str(folder), storage)
        return open_importer(settings, database, storage, source, origin="cam", workers=1).run(prune=prune)

    assert run().new == 2
    events, cursor = read_all(client, after=cursor)
    assert [event["type"] for event in events] == ["image.created", "image.created"]
    assert {event["data"]["origin"] for event in events} == {"cam"}
    gone = events[0]["image_id"] if events[0]["data"]["filename"] == "p0.png" else events[1]["image_id"]
    (folder / "p0.png").unlink()
    assert run(prune=True).pruned == 1
    events, _ = read_all(client, after=cursor)
    assert kinds(events) == [("image.deleted", None, gone)]


def test_streams_take_at_most_half_the_waiting_room_and_give_it_back_when_closed_unread(database, clock):
    from heartbeat.api.events import HeldStream
    from heartbeat.queue import JobQueue
    from heartbeat.queue.waiting import WaitingClaims

    waiting = WaitingClaims(database, JobQueue(database, clock), max_waiting=4)
    assert waiting.enter_reader(stream=True) and waiting.enter_reader(stream=True)
    assert not waiting.enter_reader(stream=True)  # half the room: claims keep the rest
    assert waiting.enter_reader() and waiting.enter_reader()  # a long poll takes what is left
    assert not waiting.enter_reader()

    def lines():
        yield b"never read"

    body = HeldStream(lines(), lambda: waiting.leave_reader(stream=True))
    body.close()  # a HEAD, or a client gone before the first chunk: the room comes back all the same
    body.close()
    assert waiting.waiting == 3 and waiting.enter_reader(stream=True)


def _by_url_json(client, data):
    with serving({"/picture": data}) as base:
        return client.simulate_post("/v1/images", json={"url": f"{base}/picture"})


def _by_url_form(client, data):
    with serving({"/picture": data}) as base:
        form = multipart({"url": f"{base}/picture"}, None)
        return client.simulate_post("/v1/images", body=form["body"], headers=form["headers"])


UPLOADS = {"multipart": upload, "url": _by_url_json, "url_in_a_form": _by_url_form, "direct": direct_upload}


@pytest.mark.parametrize("path", UPLOADS)
def test_every_kind_of_upload_makes_one_image_created_and_a_duplicate_none(settings, database, storage, clock, path):
    allowing = dataclasses.replace(settings, url_allow=UrlAllowList.parse("127.0.0.0/8"))
    client = falcon.testing.TestClient(create_app(allowing, database=database, storage=storage, clock=clock))
    [data] = distinct_images(1)
    first = UPLOADS[path](client, data)
    assert first.status_code == 201, first.text
    assert UPLOADS[path](client, data).json["duplicate"] is True
    events, _ = read_all(client)
    assert kinds(events) == [("image.created", None, first.json["id"])]
    assert events[0]["data"]["sha256"] == first.json["sha256"]
