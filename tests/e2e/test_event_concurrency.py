"""Events under concurrent writers: two ``heartbeat serve`` processes on one database, 8 uploading
and 8 working threads (half on each server), and two consumers following ``next_cursor`` (one
long-polling each server) while they write. Each consumer sees every event exactly once, skips none,
and sees each image's events in commit order (created, then done)."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter
from typing import Any

import pytest
import requests

from helpers import distinct_images

pytestmark = pytest.mark.concurrency

IMAGES = 160
WRITERS = 8
HTTP_TIMEOUT = 30


@pytest.fixture
def servers(start_server, tmp_path) -> list[Any]:
    shared = tmp_path / "shared-data"
    return [start_server(data_dir=shared), start_server(data_dir=shared)]


class Consumer(threading.Thread):
    """Follows ``next_cursor`` with long polls until told to stop and the feed is quiet."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        session = requests.Session()
        cursor = None
        try:
            while True:
                params: dict[str, Any] = {"limit": 50, "wait_seconds": 1} | ({"after": cursor} if cursor else {})
                answer = session.get(f"{self.url}/v1/events", params=params, timeout=HTTP_TIMEOUT)
                assert answer.status_code == 200, answer.text
                page = answer.json()
                self.events += page["events"]
                cursor = page["next_cursor"]
                if not page["events"] and self.stopping.is_set():
                    return
        except BaseException as error:  # reported by the test
            self.error = error


def test_every_event_once_in_commit_order_under_concurrent_writers_on_two_servers(servers):
    urls = [server.url for server in servers]
    requests.post(f"{urls[0]}/v1/software", json={"name": "fd", "lease_seconds": 600}, timeout=HTTP_TIMEOUT)
    consumers = [Consumer(urls[0]), Consumer(urls[1])]
    for consumer in consumers:
        consumer.start()
    pictures = distinct_images(IMAGES)
    done: list[str] = []

    def upload(index: int) -> str:
        files = {"file": ("p.png", pictures[index], "image/png")}
        answer = requests.post(f"{urls[index % 2]}/v1/images", files=files, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def work(index: int) -> None:
        url, session, idle = urls[index % 2], requests.Session(), 0
        while idle < 3:
            jobs = session.post(f"{url}/v1/software/fd/claim", json={"max": 4}, timeout=HTTP_TIMEOUT).json()["jobs"]
            if not jobs:
                idle += 1
                continue
            results = [{"image_id": job["image_id"], "token": job["token"], "info": {"by": index}} for job in jobs]
            answer = session.post(f"{url}/v1/software/fd/results", json={"results": results}, timeout=HTTP_TIMEOUT)
            assert [item["status"] for item in answer.json()["results"]] == ["done"] * len(jobs)
            done.extend(job["image_id"] for job in jobs)

    with concurrent.futures.ThreadPoolExecutor(2 * WRITERS) as pool:
        uploads = [pool.submit(upload, index) for index in range(IMAGES)]
        workers = [pool.submit(work, index) for index in range(WRITERS)]
        uploaded = {future.result() for future in uploads}
        for future in workers:
            future.result()
    # What the workers left (their last claims may have come before the last uploads).
    work(0)
    assert sorted(done) == sorted(uploaded)
    for consumer in consumers:
        consumer.stopping.set()
    for consumer in consumers:
        consumer.join(timeout=60)
        assert consumer.error is None, consumer.error

    everything = requests.get(f"{urls[0]}/v1/events", params={"limit": 1000}, timeout=HTTP_TIMEOUT).json()
    while True:  # the whole feed, read once the writers are done
        page = requests.get(
            f"{urls[1]}/v1/events", params={"limit": 1000, "after": everything["next_cursor"]}, timeout=HTTP_TIMEOUT
        ).json()
        if not page["events"]:
            break
        everything["events"] += page["events"]
        everything["next_cursor"] = page["next_cursor"]
    expected = [event["id"] for event in everything["events"]]
    created = [event["image_id"] for event in everything["events"] if event["type"] == "image.created"]
    finished = [event["image_id"] for event in everything["events"] if event["type"] == "job.done"]
    assert sorted(created) == sorted(uploaded) and sorted(finished) == sorted(uploaded)
    for consumer in consumers:
        seen = [event["id"] for event in consumer.events]
        assert [id_ for id_, times in Counter(seen).items() if times > 1] == [], "an event seen twice"
        assert seen == expected, "a consumer skipped an event, or saw them in another order"
        order = {}
        for event in consumer.events:
            if event.get("image_id"):
                order.setdefault(event["image_id"], []).append(event["type"])
        assert {tuple(types) for types in order.values()} == {("image.created", "job.done")}
