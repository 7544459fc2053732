"""Flow control: ``max_in_flight`` and ``rate`` on a software, as one API process sees them (the
proofs under concurrency, with two server processes, are in tests/e2e/test_flow_concurrency.py)."""

from __future__ import annotations

import pytest

from helpers import claim, distinct_images, register, upload

FD = "/v1/software/face_detection"


@pytest.fixture
def images(client, clock):
    def make(count: int) -> list[str]:
        ids = []
        for data in distinct_images(count):
            ids.append(upload(client, data).json["id"])
            clock.advance(1)
        return ids

    return make


def submit(client, job):
    answer = client.simulate_put(f"{FD}/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}})
    assert answer.status_code == 200, answer.text


def test_a_claim_is_cut_to_the_room_left_and_a_lease_that_ends_frees_its_room(client, clock, images):
    software = register(client, "face_detection", max_in_flight=2, lease_seconds=30)
    assert (software["max_in_flight"], software["rate"], software["in_flight"]) == (2, None, 0)
    images(6)
    first = claim(client, max=5)
    assert len(first) == 2
    answer = client.simulate_post(f"{FD}/claim", json={"max": 5})
    assert answer.json["jobs"] == [] and int(answer.headers["retry-after"]) == 30  # the first lease's end
    assert client.simulate_get(FD).json["in_flight"] == 2
    submit(client, first[0])  # a submit frees its room at once
    [third] = claim(client, max=5)
    release = client.simulate_post(f"{FD}/jobs/{third['image_id']}/release", json={"token": third["token"]})
    assert release.status_code == 200
    assert len(claim(client, max=5)) == 1  # a release too
    clock.advance(31)  # and a lease that runs out
    assert len(claim(client, max=5)) == 2
    assert client.simulate_get(FD).json["in_flight"] == 2


def test_a_rate_holds_in_every_window_wherever_it_starts(client, clock, images):
    register(client, "face_detection", rate={"per_minute": 3}, lease_seconds=3600)
    images(10)
    assert len(claim(client, max=2)) == 2
    clock.advance(40)
    assert len(claim(client, max=2)) == 1  # 3 in the minute that began 40 s ago
    answer = client.simulate_post(f"{FD}/claim", json={"max": 2})
    assert answer.json["jobs"] == [] and int(answer.headers["retry-after"]) == 20  # the first two leave then
    clock.advance(20)  # a fixed window starting at the first claim would give 3 more here; sliding: 2
    assert len(claim(client, max=5)) == 2
    clock.advance(39)
    assert claim(client, max=5) == []  # the one 40 s in is still within a minute
    clock.advance(2)
    assert len(claim(client, max=5)) == 1


def test_limits_are_changed_and_removed_by_patch_and_shown(client, images):
    register(client, "face_detection")
    images(4)
    changed = client.simulate_patch(FD, json={"max_in_flight": 1, "rate": {"per_second": 10}})
    assert changed.status_code == 200, changed.text
    assert (changed.json["max_in_flight"], changed.json["rate"]) == (1, {"per_second": 10})
    assert len(claim(client, max=3)) == 1
    removed = client.simulate_patch(FD, json={"max_in_flight": None, "rate": None}).json
    assert (removed["max_in_flight"], removed["rate"]) == (None, None)
    assert len(claim(client, max=3)) == 3
    listed = client.simulate_get("/v1/software").json["software"][0]
    assert (listed["max_in_flight"], listed["rate"], listed["in_flight"]) == (None, None, 4)


@pytest.mark.parametrize(
    "body",
    [
        {"max_in_flight": 0},
        {"max_in_flight": 1.5},
        {"max_in_flight": "3"},
        {"rate": {"per_day": 1}},
        {"rate": {"per_second": 0}},
        {"rate": {"per_second": 1, "per_minute": 2}},
        {"rate": 5},
    ],
)
def test_a_limit_that_cannot_be_used_is_400_and_changes_nothing(client, body):
    assert client.simulate_post("/v1/software", json={"name": "face_detection", **body}).status_code == 400
    register(client, "face_detection")
    assert client.simulate_patch(FD, json=body).status_code == 400
    shown = client.simulate_get(FD).json
    assert (shown["max_in_flight"], shown["rate"]) == (None, None)


def test_claims_read_the_room_one_at_a_time_where_a_naive_count_then_claim_takes_it_twice(
    client, images, database, clock
):
    """While one claim's transaction holds the last room, uncommitted: a naive claim (count the live
    leases, then claim) sees room left and would take it too; a claim through the queue waits for the
    lock, then finds none."""
    if not database.features.mysql:
        pytest.skip("SQLite: write transactions exclude each other, so no claim reads beside another")
    import threading

    from heartbeat.db.models import Software
    from heartbeat.queue import JobQueue

    register(client, "face_detection", max_in_flight=3, lease_seconds=600)
    images(6)
    assert len(claim(client, max=2)) == 2
    queue = JobQueue(database, clock)
    holding, release = threading.Event(), threading.Event()
    outcomes = {}

    def first() -> None:
        with database.connection():
            software = Software.get(Software.name == "face_detection")

            def claim_and_hold() -> None:
                outcomes["first"] = queue.claims._claim_round(software, 1, None)[1]
                holding.set()
                assert release.wait(30)

            database.transaction(claim_and_hold)

    def second() -> None:
        with database.connection():
            software = Software.get(Software.name == "face_detection")
            outcomes["second"] = queue.claims.claim(software, max_jobs=1)

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert holding.wait(30) and len(outcomes["first"].jobs) == 1
    with database.connection():
        naive = queue.flow.in_flight(Software.get(Software.name == "face_detection"), clock())
    assert naive == 2, "a plain read sees room left: a naive claim would take a fourth lease"
    threads.append(threading.Thread(target=second))
    threads[1].start()
    with database.connection():  # the second claim waits for the lock (awaited, not slept on)
        waits = "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
        for _ in range(3000):  # looks at the server's lock waits, each a round trip
            if database.execute(waits).fetchone()[0]:
                break
        else:
            pytest.fail("the second claim never waited for the first")
    release.set()
    for thread in threads:
        thread.join(30)
    assert outcomes["second"].jobs == [] and outcomes["second"].retry_after is not None
    assert client.simulate_get(FD).json["in_flight"] == 3


def test_a_waiting_claim_at_the_limit_takes_the_room_a_submit_frees(client, images):
    import threading

    register(client, "face_detection", max_in_flight=1, lease_seconds=600)
    images(2)
    [held] = claim(client)
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(client.simulate_post(f"{FD}/claim", json={"wait_seconds": 20}))
    )
    waiter.start()
    submit(client, held)  # wakes the waiting claim of this process: room, not a faster poll
    waiter.join(10)
    assert not waiter.is_alive() and len(answers[0].json["jobs"]) == 1


def test_a_change_of_rate_is_one_software_changed_event(client):
    register(client, "face_detection")
    client.simulate_patch(FD, json={"rate": {"per_hour": 100}, "max_in_flight": 2})
    events = client.simulate_get("/v1/events", params={"types": "software.changed"}).json["events"]
    assert [event["data"]["changes"] for event in events] == [{"max_in_flight": 2, "rate": {"per_hour": 100}}]


def test_a_claim_that_waited_out_its_time_at_the_limit_says_when_room_is_expected(client, images):
    register(client, "face_detection", max_in_flight=1, lease_seconds=90)
    images(2)
    claim(client)
    answer = client.simulate_post(f"{FD}/claim", json={"wait_seconds": 0.2})
    assert answer.json["jobs"] == [] and int(answer.headers["retry-after"]) == 90
