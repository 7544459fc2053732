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
    # The second claim waits for the first's lock: it has not answered while the first holds it. (Its
    # lock wait is not always listed in information_schema.innodb_trx on a loaded server: the S3 pass
    # of a clean-clone run saw none in 30 s while the claim waited, so its thread is what is watched.)
    threads[1].join(2)
    assert threads[1].is_alive(), f"the second claim did not wait for the first: {outcomes.get('second')}"
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


# --- a submit hands the room it frees to the claim waiting longest (queue/handoff.py) ------------


@pytest.fixture
def served(settings, database, storage, clock):
    from heartbeat.app import build_app
    from heartbeat.service import Service

    return build_app(Service(settings, database, storage=storage, clock=clock))


@pytest.fixture
def served_client(served):
    import falcon.testing

    return falcon.testing.TestClient(served.app)


def limited(served_client, clock, images: int, **limits):
    register(served_client, "face_detection", lease_seconds=600, **limits)
    for data in distinct_images(images):
        assert upload(served_client, data).status_code == 201
        clock.advance(1)


def test_a_submit_leases_a_job_to_the_claim_waiting_in_line_in_its_own_transaction(served, served_client, clock):
    from heartbeat.queue import WaitingClaim

    limited(served_client, clock, 3, max_in_flight=1)
    [held] = claim(served_client)
    line = WaitingClaim("face_detection", 2, None)
    served.service.queue.signal.join(line)
    submit(served_client, held)
    [handed] = line.jobs  # when the submit committed: no thread has claimed anything since
    assert handed.image_id != held["image_id"]
    shown = served_client.simulate_get(f"{FD}/jobs/{handed.image_id}").json
    assert shown["status"] == "claimed" and served_client.simulate_get(FD).json["in_flight"] == 1
    answer = served_client.simulate_put(f"{FD}/jobs/{handed.image_id}/result", json={"token": handed.token, "info": {}})
    assert answer.status_code == 200, "the handed job's token holds it"


def test_no_job_is_handed_over_past_a_lowered_limit_nor_for_a_software_with_a_rate(served, served_client, clock):
    from heartbeat.queue import WaitingClaim
    from heartbeat.queue.signal import Place

    limited(served_client, clock, 4, max_in_flight=2)
    first, second = claim(served_client, max=2)
    assert served_client.simulate_patch(FD, json={"max_in_flight": 1}).status_code == 200
    line = WaitingClaim("face_detection", 1, None)
    served.service.queue.signal.join(line)
    submit(served_client, first)  # one lease left: the new limit, no room
    assert line.jobs == [] and line.place is Place.IN_LINE
    assert served_client.simulate_patch(FD, json={"max_in_flight": None, "rate": {"per_hour": 10}}).status_code == 200
    submit(served_client, second)
    assert line.jobs == [] and line.place is Place.IN_LINE, "a rate is counted under the flow lock: claims take it"
    assert served_client.simulate_get(FD).json["in_flight"] == 0


def test_a_submit_that_rolls_back_hands_nothing_and_puts_the_claim_back_in_line(served, served_client, clock, database):
    from heartbeat.db.models import Software
    from heartbeat.queue import WaitingClaim
    from heartbeat.queue.signal import Place

    limited(served_client, clock, 3, max_in_flight=1)
    [held] = claim(served_client)
    queue = served.service.queue
    line = WaitingClaim("face_detection", 1, None)
    queue.signal.join(line)

    def submit_then_fail() -> None:
        software = Software.get(Software.name == "face_detection")
        queue.results.submit(software, held["image_id"], held["token"], {})
        assert line.place is Place.TAKEN  # leased for it, uncommitted
        raise RuntimeError("the transaction fails after the hand-over")

    with database.connection(), pytest.raises(RuntimeError):
        database.transaction(submit_then_fail)
    assert line.jobs == [] and line.place is Place.IN_LINE
    jobs = served_client.simulate_get(f"{FD}/jobs", params={"status": "claimed"}).json["jobs"]
    assert [job["image_id"] for job in jobs] == [held["image_id"]], "nothing else leased, the held job still held"
    submit(served_client, held)
    assert len(line.jobs) == 1


def test_a_claim_waiting_over_http_answers_with_the_job_a_submit_hands_it(served, served_client, clock):
    import threading

    limited(served_client, clock, 2, max_in_flight=1)
    [held] = claim(served_client)
    signal = served.service.queue.signal
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(served_client.simulate_post(f"{FD}/claim", json={"wait_seconds": 20}))
    )
    waiter.start()
    while not signal.in_line("face_detection"):
        threading.Event().wait(0.001)  # until the claim waits in line
    submit(served_client, held)
    waiter.join(20)
    [job] = answers[0].json["jobs"]
    assert job["image_id"] != held["image_id"] and job["url"]
    # Leased in the submit's transaction, handed out by the claim: the audit names it once, as a claim's.
    entries = served_client.simulate_get(f"/v1/audit?image_id={job['image_id']}").json["entries"]
    assert [(entry["action"], entry["image_ids"]) for entry in entries] == [("claim", [job["image_id"]])]
    [own] = served_client.simulate_get(f"/v1/audit?image_id={held['image_id']}").json["entries"]
    assert own["action"] == "claim"
