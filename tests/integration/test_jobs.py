"""The worker protocol: claim, extend, submit, fail, release, requeue, and reading jobs."""

from __future__ import annotations

import threading
import time

import pytest

from helpers import claim, distinct_images, register, upload

FD = "/v1/software/face_detection"


def job_path(image_id: str, action: str = "") -> str:
    return f"{FD}/jobs/{image_id}" + (f"/{action}" if action else "")


def submit(client, job, info=None, rows=None):
    body = {"token": job["token"], "info": info if info is not None else {"faces": []}}
    if rows is not None:
        body["rows"] = rows
    return client.simulate_put(job_path(job["image_id"], "result"), json=body)


def status_of(client, image_id):
    return client.simulate_get(job_path(image_id)).json


@pytest.fixture
def three_images(client, clock):
    register(
        client, "face_detection", lease_seconds=60, max_attempts=3, tables={"faces": {"x": "int", "score": "float"}}
    )
    ids = []
    for data in distinct_images(3):
        ids.append(upload(client, data).json["id"])
        clock.advance(1)
    return ids


def test_a_claim_hands_out_the_earliest_upload_with_a_lease_a_url_and_the_image(client, clock, three_images):
    [job] = claim(client)
    assert job["image_id"] == three_images[0]
    assert job["attempt"] == 1
    assert job["lease_expires_at"] == clock.now + 60
    assert job["url"].startswith("http") and job["url_expires_at"] > clock.now
    assert job["image"]["id"] == three_images[0]
    assert job["token"]
    assert status_of(client, three_images[0])["status"] == "claimed"


def test_a_claim_takes_up_to_max_jobs_in_upload_order(client, three_images):
    jobs = claim(client, max=2)
    assert [job["image_id"] for job in jobs] == three_images[:2]
    assert len({job["token"] for job in jobs}) == 2
    assert [job["image_id"] for job in claim(client, max=5)] == three_images[2:]
    assert claim(client, max=5) == []


def test_a_whole_number_written_as_a_float_is_a_valid_max(client, three_images):
    # JSON Schema counts 2.0 as an integer; MySQL refused "LIMIT 2.0" with a 500 (found by schemathesis).
    assert [job["image_id"] for job in claim(client, max=2.0)] == three_images[:2]


def test_the_claim_lease_can_be_chosen_per_claim(client, clock, three_images):
    [job] = claim(client, lease_seconds=5)
    assert job["lease_expires_at"] == clock.now + 5


def test_an_empty_claim_body_means_one_job(client, three_images):
    result = client.simulate_post(f"{FD}/claim")
    assert result.status_code == 200
    assert len(result.json["jobs"]) == 1


@pytest.mark.parametrize(
    "body", [{"max": 0}, {"max": 101}, {"wait_seconds": 21}, {"lease_seconds": 0}, {"max": "2"}, {"bogus": 1}]
)
def test_bad_claims_answer_400_and_claim_nothing(client, three_images, body):
    assert client.simulate_post(f"{FD}/claim", json=body).status_code == 400
    assert client.simulate_get(FD).json["counts"]["claimed"] == 0


def test_an_expired_lease_is_claimable_again_and_the_old_token_is_then_stale(client, clock, three_images):
    [first] = claim(client, max=1)
    clock.advance(61)
    jobs = claim(client, max=3)
    assert jobs[0]["image_id"] == first["image_id"]  # still the earliest upload
    assert jobs[0]["attempt"] == 2
    assert jobs[0]["token"] != first["token"]
    result = submit(client, first)
    assert result.status_code == 409
    assert status_of(client, first["image_id"])["status"] == "claimed"
    assert submit(client, jobs[0]).status_code == 200


def test_a_live_lease_is_never_handed_out_twice(client, clock, three_images):
    first = claim(client, max=3)
    clock.advance(59)
    assert claim(client, max=3) == []
    assert len(first) == 3


def test_an_expired_token_still_works_until_the_job_is_claimed_again(client, clock, three_images):
    [job] = claim(client)
    clock.advance(120)
    assert submit(client, job).status_code == 200


def test_a_lease_expiring_on_the_last_attempt_fails_the_job(client, clock):
    register(client, "face_detection", lease_seconds=10, max_attempts=2)
    image_id = upload(client).json["id"]
    claim(client)
    clock.advance(11)
    [second] = claim(client)
    assert second["attempt"] == 2
    clock.advance(11)
    assert claim(client) == []
    job = status_of(client, image_id)
    assert job["status"] == "failed"
    assert job["error"] == "lease expired"
    # A result that arrives late from the last holder is still taken.
    assert submit(client, second).status_code == 200


def test_extend_pushes_the_lease_and_keeps_the_job(client, clock, three_images):
    [job] = claim(client)
    clock.advance(50)
    result = client.simulate_post(
        job_path(job["image_id"], "extend"), json={"token": job["token"], "lease_seconds": 100}
    )
    assert result.status_code == 200
    assert result.json == {"lease_expires_at": clock.now + 100}
    clock.advance(99)
    assert [j["image_id"] for j in claim(client, max=3)] == three_images[1:]
    assert submit(client, job).status_code == 200


def test_extend_with_a_stale_token_answers_409(client, clock, three_images):
    [job] = claim(client)
    clock.advance(61)
    claim(client)
    result = client.simulate_post(job_path(job["image_id"], "extend"), json={"token": job["token"]})
    assert result.status_code == 409


def test_submit_stores_the_result_and_its_rows_together(client, clock, three_images):
    [job] = claim(client)
    clock.advance(3)
    rows = {"faces": [{"x": 10, "score": 0.9}, {"x": 20, "score": 0.5}]}
    result = submit(client, job, info=[{"x": 10, "y": 1, "w": 5, "h": 5}], rows=rows)
    assert result.status_code == 200
    assert result.json["status"] == "done"
    assert result.json["info"] == [{"x": 10, "y": 1, "w": 5, "h": 5}]
    assert result.json["finished_at"] == clock.now
    stored = client.simulate_get(f"{FD}/tables/faces", params={"image_id": job["image_id"]}).json["rows"]
    assert [(row["x"], row["score"]) for row in stored] == [(10, 0.9), (20, 0.5)]


def test_the_same_submit_twice_answers_200_and_stores_one_copy(client, three_images):
    [job] = claim(client)
    rows = {"faces": [{"x": 1}]}
    assert submit(client, job, rows=rows).status_code == 200
    again = submit(client, job, rows=rows)
    assert again.status_code == 200
    assert again.json["status"] == "done"
    assert len(client.simulate_get(f"{FD}/tables/faces").json["rows"]) == 1


@pytest.mark.parametrize(
    "rows",
    [
        {"nope": [{"x": 1}]},
        {"faces": [{"y": 1}]},
        {"faces": [{"x": "one"}]},
        {"faces": [{"x": 1.5}]},
        {"faces": [{"x": True}]},
        {"faces": [{"x": 1}, {"score": "high"}]},
    ],
)
def test_a_bad_extra_row_answers_422_and_changes_nothing(client, three_images, rows):
    [job] = claim(client)
    result = submit(client, job, rows=rows)
    assert result.status_code == 422, result.text
    assert status_of(client, job["image_id"])["status"] == "claimed"
    assert client.simulate_get(f"{FD}/tables/faces").json["rows"] == []
    assert submit(client, job).status_code == 200


@pytest.mark.parametrize(
    "body", [{"info": 1}, {"token": "t"}, {"token": 5, "info": 1}, {"token": "t", "info": 1, "rows": []}]
)
def test_a_malformed_submit_answers_400(client, three_images, body):
    [job] = claim(client)
    assert client.simulate_put(job_path(job["image_id"], "result"), json=body).status_code == 400
    assert status_of(client, job["image_id"])["status"] == "claimed"


def test_submitting_for_an_unknown_image_answers_404(client, three_images):
    assert client.simulate_put(job_path("nope", "result"), json={"token": "x", "info": 1}).status_code == 404


def test_a_failure_with_retry_comes_back_after_its_backoff(client, clock, three_images):
    [job] = claim(client)
    result = client.simulate_post(job_path(job["image_id"], "fail"), json={"token": job["token"], "error": "boom"})
    assert result.status_code == 200
    assert result.json["status"] == "pending"
    assert result.json["error"] == "boom"
    assert three_images[0] not in [j["image_id"] for j in claim(client, max=3)]  # backoff is 2^1 s
    clock.advance(2)
    [retry] = claim(client)
    assert retry["image_id"] == three_images[0]
    assert retry["attempt"] == 2


def test_the_default_backoff_doubles_and_stops_at_an_hour(client, clock):
    register(client, "backoff", max_attempts=20)
    image_id = upload(client).json["id"]
    path = f"/v1/software/backoff/jobs/{image_id}/fail"
    for attempt in range(1, 14):
        [job] = claim(client, "backoff")
        assert job["attempt"] == attempt
        client.simulate_post(path, json={"token": job["token"], "error": "again"})
        backoff = min(2**attempt, 3600)
        clock.advance(backoff - 1)
        assert claim(client, "backoff") == [], f"claimable before its backoff of {backoff} s"
        clock.advance(1)


def test_retry_after_sets_the_backoff(client, clock, three_images):
    [job] = claim(client)
    body = {"token": job["token"], "error": "rate limited", "retry_after": 30}
    client.simulate_post(job_path(job["image_id"], "fail"), json=body)
    clock.advance(29)
    assert three_images[0] not in [j["image_id"] for j in claim(client, max=3)]
    clock.advance(1)
    assert [j["image_id"] for j in claim(client)] == [three_images[0]]


def test_failing_without_retry_or_on_the_last_attempt_leaves_the_job_failed(client, clock, three_images):
    [job] = claim(client)
    body = {"token": job["token"], "error": "corrupt", "retry": False}
    assert client.simulate_post(job_path(job["image_id"], "fail"), json=body).json["status"] == "failed"
    for attempt in (1, 2, 3):
        [job] = [j for j in claim(client, max=3) if j["image_id"] == three_images[1]] or [None]
        assert job is not None and job["attempt"] == attempt
        client.simulate_post(job_path(job["image_id"], "fail"), json={"token": job["token"], "error": f"try {attempt}"})
        clock.advance(3600)
    final = status_of(client, three_images[1])
    assert (final["status"], final["error"], final["attempts"]) == ("failed", "try 3", 3)
    counts = client.simulate_get(FD).json["counts"]
    assert counts["failed"] == 2


def test_release_puts_the_job_back_at_once_without_using_an_attempt(client, three_images):
    [job] = claim(client)
    result = client.simulate_post(job_path(job["image_id"], "release"), json={"token": job["token"]})
    assert result.status_code == 200
    assert result.json["status"] == "pending"
    [again] = claim(client)
    assert again["image_id"] == job["image_id"]
    assert again["attempt"] == 1
    assert client.simulate_post(job_path(job["image_id"], "release"), json={"token": job["token"]}).status_code == 409


def test_a_done_job_cannot_be_failed_or_released(client, three_images):
    [job] = claim(client)
    submit(client, job)
    for action, body in (("fail", {"token": job["token"], "error": "late"}), ("release", {"token": job["token"]})):
        assert client.simulate_post(job_path(job["image_id"], action), json=body).status_code == 409
    assert status_of(client, job["image_id"])["status"] == "done"


def test_requeue_sends_failed_jobs_back_with_attempts_from_zero(client, three_images):
    [job] = claim(client)
    client.simulate_post(job_path(job["image_id"], "fail"), json={"token": job["token"], "error": "x", "retry": False})
    result = client.simulate_post(f"{FD}/requeue", json={"status": "failed"})
    assert result.status_code == 200
    assert result.json == {"requeued": 1}
    requeued = status_of(client, job["image_id"])
    assert (requeued["status"], requeued["attempts"], requeued["error"]) == ("pending", 0, None)
    assert claim(client)[0]["attempt"] == 1


def test_requeue_of_done_jobs_drops_their_rows_and_stales_their_tokens(client, three_images):
    jobs = claim(client, max=2)
    for job in jobs:
        submit(client, job, rows={"faces": [{"x": 1}]})
    result = client.simulate_post(f"{FD}/requeue", json={"status": "done", "image_ids": [jobs[0]["image_id"]]})
    assert result.json == {"requeued": 1}
    rows = client.simulate_get(f"{FD}/tables/faces").json["rows"]
    assert [row["image_id"] for row in rows] == [jobs[1]["image_id"]]
    assert status_of(client, jobs[0]["image_id"])["status"] == "pending"
    assert submit(client, jobs[0]).status_code == 409


def test_requeue_refuses_other_statuses(client, three_images):
    assert client.simulate_post(f"{FD}/requeue", json={"status": "claimed"}).status_code == 400


def test_jobs_are_listed_in_upload_order_filtered_by_status_in_pages(client, three_images):
    [job] = claim(client)
    submit(client, job)
    listing = client.simulate_get(f"{FD}/jobs").json
    assert [j["image_id"] for j in listing["jobs"]] == three_images
    assert set(listing["jobs"][0]) >= {"image_id", "status", "info", "attempts", "claimed_at", "finished_at", "error"}
    assert "token" not in listing["jobs"][0]
    pending = client.simulate_get(f"{FD}/jobs", params={"status": "pending"}).json["jobs"]
    assert [j["image_id"] for j in pending] == three_images[1:]
    page = client.simulate_get(f"{FD}/jobs", params={"limit": 2}).json
    rest = client.simulate_get(f"{FD}/jobs", params={"limit": 2, "cursor": page["next_cursor"]}).json
    assert [j["image_id"] for j in page["jobs"] + rest["jobs"]] == three_images
    assert rest["next_cursor"] is None
    assert client.simulate_get(f"{FD}/jobs", params={"status": "weird"}).status_code == 400


def test_batch_submit_judges_each_result_on_its_own(client, clock, three_images):
    jobs = claim(client, max=3)
    stale = dict(jobs[2], token="not-the-token")
    body = {
        "results": [
            {"image_id": jobs[0]["image_id"], "token": jobs[0]["token"], "info": 1, "rows": {"faces": [{"x": 1}]}},
            {"image_id": jobs[1]["image_id"], "token": jobs[1]["token"], "info": 2, "rows": {"faces": [{"x": "bad"}]}},
            {"image_id": stale["image_id"], "token": stale["token"], "info": 3},
            {"image_id": "unknown", "token": "t", "info": 4},
        ]
    }
    result = client.simulate_post(f"{FD}/results", json=body)
    assert result.status_code == 200
    statuses = [(r["image_id"], r["status"]) for r in result.json["results"]]
    assert statuses == [
        (jobs[0]["image_id"], "done"),
        (jobs[1]["image_id"], "invalid"),
        (jobs[2]["image_id"], "stale"),
        ("unknown", "invalid"),
    ]
    assert all(r.get("description") for r in result.json["results"][1:])
    assert [status_of(client, j["image_id"])["status"] for j in jobs] == ["done", "claimed", "claimed"]
    assert len(client.simulate_get(f"{FD}/tables/faces").json["rows"]) == 1


def test_a_batch_stores_each_result_once_even_when_sent_twice(client, three_images):
    first, second, third = claim(client, max=3)
    done_before = {
        "image_id": third["image_id"],
        "token": third["token"],
        "info": "early",
        "rows": {"faces": [{"x": 3}]},
    }
    assert client.simulate_post(f"{FD}/results", json={"results": [done_before]}).status_code == 200
    items = [
        {"image_id": first["image_id"], "token": first["token"], "info": "a", "rows": {"faces": [{"x": 1}]}},
        {"image_id": first["image_id"], "token": first["token"], "info": "a", "rows": {"faces": [{"x": 1}]}},
        {"image_id": second["image_id"], "token": second["token"], "info": "b"},
        {"image_id": first["image_id"], "token": "someone-else", "info": "c"},
        done_before,
    ]
    verdicts = client.simulate_post(f"{FD}/results", json={"results": items}).json["results"]
    assert [verdict["status"] for verdict in verdicts] == ["done", "done", "done", "stale", "done"]
    assert [status_of(client, job["image_id"])["info"] for job in (first, second, third)] == ["a", "b", "early"]
    rows = client.simulate_get(f"{FD}/tables/faces").json["rows"]
    assert sorted((row["image_id"], row["x"]) for row in rows) == sorted(
        [(first["image_id"], 1), (third["image_id"], 3)]
    )


def test_batch_submit_refuses_more_than_100_results(client, three_images):
    body = {"results": [{"image_id": "x", "token": "t", "info": 1}] * 101}
    assert client.simulate_post(f"{FD}/results", json=body).status_code == 400


def test_a_long_poll_returns_as_soon_as_an_image_arrives(client, three_images):
    claim(client, max=3)
    claimed: list = []
    started = threading.Event()

    def long_poll():
        started.set()
        claimed.extend(claim(client, wait_seconds=10))

    poller = threading.Thread(target=long_poll)
    began = time.monotonic()
    poller.start()
    started.wait()
    new_image = upload(client, distinct_images(4)[3]).json["id"]
    poller.join(timeout=15)
    assert [job["image_id"] for job in claimed] == [new_image]
    assert time.monotonic() - began < 5


def test_a_long_poll_with_nothing_to_do_answers_an_empty_list_after_the_wait(client, three_images):
    claim(client, max=3)
    began = time.monotonic()
    assert claim(client, wait_seconds=0.3) == []
    assert time.monotonic() - began >= 0.3


def test_the_software_counts_follow_the_jobs(client, three_images):
    jobs = claim(client, max=2)
    submit(client, jobs[0])
    client.simulate_post(
        job_path(jobs[1]["image_id"], "fail"), json={"token": jobs[1]["token"], "error": "e", "retry": False}
    )
    claim(client)
    assert client.simulate_get(FD).json["counts"] == {
        "pending": 0,
        "claimed": 1,
        "done": 1,
        "failed": 1,
        "skipped": 0,
        "outdated": 0,
    }


def test_a_body_that_is_not_json_is_refused_with_a_clear_error(client, three_images):
    result = client.simulate_post(
        f"{FD}/claim", body="max=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert result.status_code == 415
    assert "application/json" in result.json["description"]
    result = client.simulate_put(job_path(three_images[0], "result"))
    assert result.status_code == 400
    assert client.simulate_get(FD).json["counts"]["claimed"] == 0
