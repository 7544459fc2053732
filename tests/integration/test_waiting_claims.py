"""Long-polling claims take a bounded share of a process: beyond ``max_waiting_claims`` a claim that finds
no job is answered at once with ``{"jobs": []}`` and ``Retry-After``, and the threads left serve the rest."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import falcon.testing
import pytest

from heartbeat.app import ServedApp, build_app
from heartbeat.config import Settings
from heartbeat.queue.waiting import RETURNS_PER_SECOND
from heartbeat.service import Service
from helpers import claim, distinct_images, register, upload

CLAIM = "/v1/software/face_detection/claim"


@pytest.fixture
def service(settings: Settings, database, storage, clock) -> Iterator[ServedApp]:
    """The app with room for one waiting claim."""
    limited = dataclasses.replace(settings, threads=4, max_waiting_claims=1)
    service = build_app(Service(limited, database, storage=storage, clock=clock))
    yield service
    service.close()  # no claim of a failed test keeps waiting


@pytest.fixture
def client(service: ServedApp) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(service.app)


def waiting_now(service: ServedApp, count: int) -> None:
    """Until ``count`` claims wait (they have entered the wait: nothing else to await but the count)."""
    deadline = time.monotonic() + 10
    while service.waiting.waiting != count:
        assert time.monotonic() < deadline, f"{service.waiting.waiting} claims wait, not {count}"
        time.sleep(0.01)


def in_background(call: Callable[[], list]) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


def test_a_claim_beyond_the_waiting_limit_is_answered_at_once_with_retry_after(client, service):
    register(client)
    first, first_answer = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    began = time.monotonic()
    turned_away = client.simulate_post(CLAIM, json={"wait_seconds": 10})
    assert time.monotonic() - began < 2
    assert turned_away.status_code == 200
    assert turned_away.json == {"jobs": []}
    assert 1 <= int(turned_away.headers["Retry-After"]) <= 10
    image = upload(client).json["id"]
    first.join(timeout=10)
    assert [job["image_id"] for job in first_answer[0]] == [image]


def test_a_retry_after_is_never_longer_than_the_wait_asked_for(client, service):
    register(client)
    first, _ = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    turned_away = client.simulate_post(CLAIM, json={"wait_seconds": 0.5})
    assert turned_away.json == {"jobs": []}
    assert turned_away.headers["Retry-After"] == "1"
    service.close()
    first.join(timeout=10)


def test_a_claim_that_does_not_wait_is_never_turned_away(client, service):
    register(client)
    first, _ = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    answer = client.simulate_post(CLAIM, json={"max": 1})
    assert answer.json == {"jobs": []}
    assert "Retry-After" not in answer.headers
    service.close()
    first.join(timeout=10)


def test_work_that_is_there_is_handed_out_even_when_no_claim_may_wait(client, service):
    register(client)
    first, first_answer = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    images = [upload(client, data).json["id"] for data in distinct_images(2)]
    first.join(timeout=10)
    second = client.simulate_post(CLAIM, json={"wait_seconds": 10}).json["jobs"]
    handed_out = [job["image_id"] for job in first_answer[0] + second]
    assert sorted(handed_out) == sorted(images)


def test_uploads_and_reads_are_answered_while_the_waiting_claims_wait(client, service):
    register(client)
    first, _ = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    began = time.monotonic()
    assert upload(client).status_code == 201
    assert client.simulate_get("/v1/software/face_detection").status_code == 200
    assert time.monotonic() - began < 2
    first.join(timeout=10)


def test_closing_the_service_answers_the_waiting_claims_at_once(client, service):
    register(client)
    first, first_answer = in_background(lambda: claim(client, wait_seconds=15))
    waiting_now(service, 1)
    began = time.monotonic()
    service.close()
    first.join(timeout=10)
    assert first_answer == [[]]
    assert time.monotonic() - began < 2
    after = client.simulate_post(CLAIM, json={"wait_seconds": 5})
    assert after.json == {"jobs": []} and "Retry-After" in after.headers


def test_with_no_room_to_wait_every_waiting_claim_is_turned_away(settings, database, storage, clock):
    service = build_app(
        Service(dataclasses.replace(settings, max_waiting_claims=0), database, storage=storage, clock=clock)
    )
    client = falcon.testing.TestClient(service.app)
    register(client)
    answer = client.simulate_post(CLAIM, json={"wait_seconds": 20})
    assert answer.json == {"jobs": []}
    assert answer.headers["Retry-After"] == "5"


def test_the_metrics_count_waiting_and_turned_away_claims(client, service):
    register(client)
    first, _ = in_background(lambda: claim(client, wait_seconds=10))
    waiting_now(service, 1)
    client.simulate_post(CLAIM, json={"wait_seconds": 10})
    page = client.simulate_get("/metrics").text
    assert "heartbeat_claims_waiting 1.0" in page
    assert 'heartbeat_claims_turned_away_total{software="face_detection"} 1.0' in page
    service.close()
    first.join(timeout=10)


def test_however_many_claims_are_turned_away_they_come_back_at_a_bounded_rate(settings, database, storage, clock):
    service = build_app(
        Service(dataclasses.replace(settings, max_waiting_claims=0), database, storage=storage, clock=clock)
    )
    client = falcon.testing.TestClient(service.app)
    register(client)
    due_back = []
    for _ in range(400):  # a fleet of 400 idle workers, each turned away once
        answer = client.simulate_post(CLAIM, json={"wait_seconds": 20})
        due_back.append(time.monotonic() + int(answer.headers["Retry-After"]))
    assert int(answer.headers["Retry-After"]) <= 60
    busiest_second = max(sum(1 for due in due_back if start <= due < start + 1) for start in due_back)
    assert busiest_second <= 2 * RETURNS_PER_SECOND  # 400 at once without the bound
