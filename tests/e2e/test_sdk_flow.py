"""Flow control from the worker SDK against a real server: ``register``/``update`` take
``max_in_flight`` and ``rate``; a Worker held back by its software's limit waits as the server's
``Retry-After`` says (one claim per Retry-After, not one after another), and with ``exit_when_idle``
does not take "held back" for "no work"."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.worker import Client, Image, InvalidRequest, Worker
from heartbeat.worker.client import rate_body
from helpers import distinct_images

TIMEOUT = 60


@pytest.fixture
def server(start_server, session_data_dir) -> Any:
    return start_server(data_dir=session_data_dir)


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def claims_logged(server: Any) -> int:
    return sum(1 for line in server.log().splitlines() if "POST /v1/software/{name}/claim " in line)


def test_register_and_update_set_change_keep_and_lift_the_limits(client):
    registered = client.register("ocr", max_in_flight=4, rate="30/min")
    assert (registered.max_in_flight, registered.rate, registered.in_flight) == (4, {"per_minute": 30}, 0)
    assert not registered.held_back
    plain = client.register("plain")
    assert (plain.max_in_flight, plain.rate) == (None, None)

    kept = client.update("ocr", lease_seconds=60)  # limits not given: kept
    assert (kept.max_in_flight, kept.rate, kept.lease_seconds) == (4, {"per_minute": 30}, 60)
    changed = client.update("ocr", max_in_flight=1, rate={"per_hour": 100})
    assert (changed.max_in_flight, changed.rate) == (1, {"per_hour": 100})
    lifted = client.update("ocr", rate=None)
    assert (lifted.max_in_flight, lifted.rate) == (1, None)
    assert client.update("ocr", max_in_flight=None).max_in_flight is None
    assert [(item.name, item.max_in_flight, item.rate) for item in client.software_list()] == [
        ("ocr", None, None),
        ("plain", None, None),
    ]

    with pytest.raises(InvalidRequest):  # the server's 400, as for any bad field
        client.update("ocr", max_in_flight=0)
    with pytest.raises(ValueError, match="N/s, N/min or N/h"):
        client.register("other", rate="30/day")
    assert rate_body("7/s") == {"per_second": 7} and rate_body("2/h") == {"per_hour": 2}


def test_held_back_shows_on_the_software_and_a_claim_at_the_limit_has_a_retry_after(client):
    client.register("ocr", max_in_flight=1, lease_seconds=30)
    for data in distinct_images(2):
        client.upload(data)
    [job] = client.claim("ocr", 5)
    software = client.software("ocr")
    assert (software.in_flight, software.held_back) == (1, True)
    held = client.claim_jobs("ocr")
    assert held.jobs == [] and held.retry_after_seconds is not None and 1 <= held.retry_after_seconds <= 30
    client.submit("ocr", job.image_id, job.token, {})
    assert not client.software("ocr").held_back  # room freed at once
    assert len(client.claim("ocr")) == 1


@pytest.mark.parametrize("wait_seconds", [0, 1], ids=["no-wait", "long-poll"])
def test_a_worker_held_back_waits_as_told_and_does_not_take_it_for_no_work(client, server, wait_seconds):
    """Another holder has the one room for 2 s: an idle worker with ``exit_when_idle`` waits for it
    rather than leaving the jobs undone, and claims about once per Retry-After meanwhile."""
    client.register("ocr", max_in_flight=1)
    ids = [client.upload(data).id for data in distinct_images(3)]
    [held] = client.claim("ocr", lease_seconds=2)  # its lease runs out in 2 s: room then, by expiry
    before = claims_logged(server)
    handled: list[str] = []

    def handler(data: bytes, image: Image) -> dict[str, int]:
        handled.append(image.id)
        return {"size": len(data)}

    worker = Worker(client, "ocr", handler, wait_seconds=wait_seconds, lease_seconds=30)
    began = time.monotonic()
    runner = threading.Thread(target=worker.run, kwargs={"exit_when_idle": True})
    runner.start()
    runner.join(TIMEOUT)
    assert not runner.is_alive()
    took = time.monotonic() - began

    assert sorted(handled) == sorted(ids), "every job done, the held one once its lease ran out"
    assert all(client.job("ocr", image_id).status == "done" for image_id in ids)
    assert took >= 1.5, "it waited for the room"
    # Held back, it came back after each Retry-After (at least a second), not one claim after another:
    # 3 claims that took a job, the empty last one (and its probe), and about one per second held back.
    assert claims_logged(server) - before <= 3 + 2 + 2 * (took + 1), server.log()
    assert held.image_id in handled
