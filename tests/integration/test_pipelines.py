"""Pipelines: software that builds on other software (``after``), priorities, and origin filters."""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import pytest
import requests

from conftest import BACKEND
from heartbeat.catalog.images import Catalog
from helpers import claim, distinct_images, register, upload


def submit(client, software: str, job: dict[str, Any], info: Any) -> None:
    path = f"/v1/software/{software}/jobs/{job['image_id']}/result"
    result = client.simulate_put(path, json={"token": job["token"], "info": info})
    assert result.status_code == 200, result.text


def fail(client, software: str, job: dict[str, Any], error: str = "broken") -> None:
    path = f"/v1/software/{software}/jobs/{job['image_id']}/fail"
    result = client.simulate_post(path, json={"token": job["token"], "error": error, "retry": False})
    assert result.status_code == 200, result.text


def job_of(client, software: str, image_id: str) -> dict[str, Any]:
    return client.simulate_get(f"/v1/software/{software}/jobs/{image_id}").json


def uploaded(client, count: int, clock, **fields: str) -> list[str]:
    ids = []
    for data in distinct_images(count):
        result = upload(client, data, **fields)
        assert result.status_code == 201, result.text
        ids.append(result.json["id"])
        clock.advance(1)
    return ids


# --- dependencies ----------------------------------------------------------------------------


def test_a_downstream_job_waits_for_its_upstream_and_the_claim_carries_the_upstream_result(client, clock):
    register(client, "face_detection")
    register(client, "face_encoding", after=["face_detection"])
    ids = uploaded(client, 3, clock)
    assert claim(client, "face_encoding", max=10) == []  # nothing is done upstream yet
    assert job_of(client, "face_encoding", ids[0])["status"] == "pending"

    detections = {job["image_id"]: job for job in claim(client, "face_detection", max=3)}
    assert "upstream" not in next(iter(detections.values()))  # a software without `after` gets no such key
    submit(client, "face_detection", detections[ids[1]], [{"x": 1, "y": 2, "w": 3, "h": 4}])

    [encoding] = claim(client, "face_encoding", max=10)
    assert encoding["image_id"] == ids[1]
    assert encoding["upstream"] == {"face_detection": [{"x": 1, "y": 2, "w": 3, "h": 4}]}
    assert claim(client, "face_encoding", max=10) == []

    for image_id in (ids[0], ids[2]):
        submit(client, "face_detection", detections[image_id], [])
    assert [job["image_id"] for job in claim(client, "face_encoding", max=10)] == [ids[0], ids[2]]


def test_a_job_with_two_upstreams_waits_for_both(client, clock):
    register(client, "faces")
    register(client, "plates")
    register(client, "report", after=["faces", "plates"])
    [image_id] = uploaded(client, 1, clock)
    [face_job] = claim(client, "faces")
    [plate_job] = claim(client, "plates")
    submit(client, "faces", face_job, {"faces": 2})
    assert claim(client, "report") == []
    submit(client, "plates", plate_job, {"plates": ["B-HB 2019"]})
    [report] = claim(client, "report")
    assert report["upstream"] == {"faces": {"faces": 2}, "plates": {"plates": ["B-HB 2019"]}}
    assert report["image_id"] == image_id


def test_a_failed_upstream_skips_the_downstream_jobs_with_the_reason(client, clock):
    register(client, "face_detection", max_attempts=1)
    register(client, "face_encoding", after=["face_detection"])
    register(client, "face_search", after=["face_encoding"])
    [image_id] = uploaded(client, 1, clock)
    [job] = claim(client, "face_detection")
    fail(client, "face_detection", job)

    encoding = job_of(client, "face_encoding", image_id)
    assert (encoding["status"], encoding["error"]) == ("skipped", "upstream face_detection failed")
    search = job_of(client, "face_search", image_id)
    assert (search["status"], search["error"]) == ("skipped", "upstream face_encoding skipped")
    assert client.simulate_get("/v1/software/face_encoding").json["counts"]["skipped"] == 1
    assert client.simulate_get("/v1/images/" + image_id).json["jobs"] == {
        "face_detection": "failed",
        "face_encoding": "skipped",
        "face_search": "skipped",
    }
    assert claim(client, "face_encoding") == [] and claim(client, "face_search") == []
    listed = client.simulate_get("/v1/software/face_encoding/jobs", params={"status": "skipped"}).json["jobs"]
    assert [job["image_id"] for job in listed] == [image_id]


def test_requeueing_a_failed_upstream_brings_its_skipped_downstream_jobs_back(client, clock):
    register(client, "face_detection", max_attempts=1)
    register(client, "face_encoding", after=["face_detection"])
    [image_id] = uploaded(client, 1, clock)
    fail(client, "face_detection", claim(client, "face_detection")[0])
    assert job_of(client, "face_encoding", image_id)["status"] == "skipped"

    result = client.simulate_post("/v1/software/face_detection/requeue", json={"status": "failed"})
    assert result.json == {"requeued": 1}
    encoding = job_of(client, "face_encoding", image_id)
    assert (encoding["status"], encoding["error"]) == ("pending", None)
    assert claim(client, "face_encoding") == []  # waiting again, for the new upstream attempt
    submit(client, "face_detection", claim(client, "face_detection")[0], [])
    assert [job["image_id"] for job in claim(client, "face_encoding")] == [image_id]


def test_a_late_upstream_result_after_its_last_lease_ran_out_unskips_the_downstream_job(client, clock):
    register(client, "face_detection", max_attempts=1, lease_seconds=10)
    register(client, "face_encoding", after=["face_detection"])
    [image_id] = uploaded(client, 1, clock)
    [slow] = claim(client, "face_detection")
    clock.advance(11)
    assert claim(client, "face_detection") == []  # the lease ran out on the last attempt: failed
    assert job_of(client, "face_encoding", image_id)["status"] == "skipped"
    submit(client, "face_detection", slow, [])  # the slow worker's result is still taken
    assert [job["image_id"] for job in claim(client, "face_encoding")] == [image_id]


def test_a_software_registered_later_settles_each_image_by_its_upstream_state(client, clock):
    register(client, "face_detection", max_attempts=1)
    done, failed, waiting = uploaded(client, 3, clock)
    jobs = {job["image_id"]: job for job in claim(client, "face_detection", max=2)}
    submit(client, "face_detection", jobs[done], [])
    fail(client, "face_detection", jobs[failed])

    described = register(client, "face_encoding", after=["face_detection"])
    assert described["after"] == ["face_detection"]
    assert described["counts"] == {"pending": 2, "claimed": 0, "done": 0, "failed": 0, "skipped": 1, "outdated": 0}
    assert [job["image_id"] for job in claim(client, "face_encoding", max=10)] == [done]
    assert job_of(client, "face_encoding", failed)["status"] == "skipped"
    assert job_of(client, "face_encoding", waiting)["status"] == "pending"


@pytest.mark.parametrize(
    ("name", "after", "description"),
    [
        ("face_encoding", ["face_encoding"], "cycle: face_encoding -> face_encoding"),
        ("face_encoding", ["face_detection", "nothing_here"], "not registered: nothing_here"),
    ],
)
def test_a_cycle_or_an_unknown_upstream_is_refused_and_registers_nothing(client, name, after, description):
    register(client, "face_detection")
    result = client.simulate_post("/v1/software", json={"name": name, "after": after})
    assert result.status_code == 422
    assert description in result.json["description"]
    assert client.simulate_get(f"/v1/software/{name}").status_code == 404
    assert client.simulate_get("/v1/software/face_detection").json["after"] == []
    register(client, name, after=["face_detection"])  # the name is still free


def test_a_longer_cycle_is_refused_by_the_dependency_check():
    from heartbeat.catalog.pipeline import dependency_order
    from heartbeat.errors import Refused

    assert dependency_order({"c": ["b"], "b": ["a"], "a": []}) == ["a", "b", "c"]
    with pytest.raises(Refused, match="a -> c -> b -> a"):
        dependency_order({"a": ["c"], "b": ["a"], "c": ["b"]})


# --- priorities ------------------------------------------------------------------------------


def test_a_priority_image_uploaded_last_is_claimed_first(client, clock):
    register(client, "ocr")
    ordinary = uploaded(client, 3, clock)
    urgent = upload(client, distinct_images(4)[3], priority="5")
    assert urgent.status_code == 201 and urgent.json["priority"] == 5
    order = [job["image_id"] for job in claim(client, "ocr", max=10)]
    assert order == [urgent.json["id"], *ordinary]


def test_changing_an_image_priority_reorders_its_pending_jobs(client, clock):
    register(client, "ocr")
    first, second, third = uploaded(client, 3, clock)
    changed = client.simulate_patch(f"/v1/images/{third}", json={"priority": 10})
    assert changed.status_code == 200
    assert (changed.json["priority"], changed.json["jobs"]) == (10, {"ocr": "pending"})
    client.simulate_patch(f"/v1/images/{first}", json={"priority": -1})
    assert [job["image_id"] for job in claim(client, "ocr", max=10)] == [third, second, first]


@pytest.mark.skipif(BACKEND != "mysql", reason="SQLite: one write transaction at a time")
def test_a_software_registered_during_a_priority_change_claims_in_the_new_order(client, clock, monkeypatch):
    """A registration whose backfill makes the image's job from its old priority after the change's
    first read: the change reaches that job too."""
    first, second = uploaded(client, 2, clock)
    change_read, registered = threading.Event(), threading.Event()
    get = Catalog.get

    def after_a_registration(catalog: Catalog, image_id: str) -> Any:
        image = get(catalog, image_id)
        change_read.set()
        assert registered.wait(timeout=60)
        return image

    monkeypatch.setattr(Catalog, "get", after_a_registration)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        change = pool.submit(client.simulate_patch, f"/v1/images/{second}", json={"priority": 10})
        assert change_read.wait(timeout=60)
        register(client, "late")
        registered.set()
        assert change.result(timeout=60).status_code == 200
    assert [job["image_id"] for job in claim(client, "late", max=10)] == [second, first]


@pytest.mark.parametrize("body", [{"priority": "high"}, {"priority": 1.5}, {"priority": 10**7}, {}, {"origin": "x"}])
def test_a_bad_priority_change_answers_400_and_changes_nothing(client, clock, body):
    [image_id] = uploaded(client, 1, clock)
    assert client.simulate_patch(f"/v1/images/{image_id}", json=body).status_code == 400
    assert client.simulate_get(f"/v1/images/{image_id}").json["priority"] == 0
    assert client.simulate_patch("/v1/images/nope", json={"priority": 1}).status_code == 404


@pytest.mark.parametrize("priority", ["high", "1.5", " 5", "1_0", "99999999999"])
def test_an_upload_with_a_bad_priority_answers_400_and_stores_nothing(client, priority):
    assert upload(client, priority=priority).status_code == 400
    assert client.simulate_get("/v1/images").json["images"] == []


# --- origin filters --------------------------------------------------------------------------


def test_a_filtered_software_never_sees_other_origins(client, clock):
    register(client, "plate_reader", origins=["road_cam_1", "road_cam_2"])
    road = uploaded(client, 2, clock, origin="road_cam_1")
    data = distinct_images(5)
    webcam = upload(client, data[2], origin="public_webcam").json["id"]
    unknown = upload(client, data[3]).json["id"]
    road.append(upload(client, data[4], origin="road_cam_2").json["id"])

    assert [job["image_id"] for job in claim(client, "plate_reader", max=10)] == road
    for image_id in (webcam, unknown):
        job = job_of(client, "plate_reader", image_id)
        assert job["status"] == "skipped"
        assert "origin" in job["error"]


def test_the_backfill_of_a_filtered_software_skips_other_origins(client, clock):
    road = uploaded(client, 2, clock, origin="road_cam")
    register(client, "ocr")
    upload(client, distinct_images(3)[2], origin="instagram")
    described = register(client, "plate_reader", origins=["road_cam"])
    assert described["origins"] == ["road_cam"]
    assert described["counts"]["skipped"] == 1
    assert [job["image_id"] for job in claim(client, "plate_reader", max=10)] == road
    assert len(claim(client, "ocr", max=10)) == 3  # other software keep every origin


def test_a_downstream_of_a_filtered_software_skips_what_its_upstream_skipped(client, clock):
    register(client, "plate_reader", origins=["road_cam"])
    register(client, "plate_lookup", after=["plate_reader"])
    [image_id] = uploaded(client, 1, clock, origin="webcam")
    job = job_of(client, "plate_lookup", image_id)
    assert (job["status"], job["error"]) == ("skipped", "upstream plate_reader skipped")


@pytest.mark.parametrize("origins", [[], [""], ["a", "a"], "road_cam", [1]])
def test_bad_origin_filters_are_refused(client, origins):
    assert client.simulate_post("/v1/software", json={"name": "ocr", "origins": origins}).status_code == 400
    assert client.simulate_get("/v1/software/ocr").status_code == 404


# --- two upstream jobs of one image finishing at the same moment -----------------------------


@pytest.mark.concurrency
def test_two_upstreams_finishing_at_once_on_two_api_processes_never_strand_a_downstream_job(start_server, tmp_path):
    shared = tmp_path / "shared"
    servers = [start_server(data_dir=shared), start_server(data_dir=shared)]
    api = servers[0].url
    for body in ({"name": "faces"}, {"name": "plates"}, {"name": "report", "after": ["faces", "plates"]}):
        requests.post(f"{api}/v1/software", json=body, timeout=10).raise_for_status()
    for data in distinct_images(40):
        requests.post(f"{api}/v1/images", files={"file": ("a.png", data)}, timeout=10).raise_for_status()

    def finish_all(software: str, server_url: str) -> int:
        # SKIP LOCKED passes over rows the other thread's settling holds for a moment: claim until done.
        finished = 0
        while finished < 40:
            claim = {"max": 40, "wait_seconds": 2}
            jobs = requests.post(f"{server_url}/v1/software/{software}/claim", json=claim, timeout=30).json()["jobs"]
            if not jobs:
                break
            for job in jobs:
                path = f"{server_url}/v1/software/{software}/jobs/{job['image_id']}/result"
                requests.put(path, json={"token": job["token"], "info": software}, timeout=30).raise_for_status()
            finished += len(jobs)
        return finished

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        finished = pool.map(finish_all, ["faces", "plates"], [server.url for server in servers])
        assert list(finished) == [40, 40]
    reports = requests.post(f"{api}/v1/software/report/claim", json={"max": 100}, timeout=10).json()["jobs"]
    assert len(reports) == 40
    assert all(job["upstream"] == {"faces": "faces", "plates": "plates"} for job in reports)
