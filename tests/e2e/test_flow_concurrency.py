"""Flow control under concurrency: 32 worker threads, half on each of two ``heartbeat serve``
processes sharing one database, hammer a software with ``max_in_flight: 3`` while a sampler reads
the live leases from the database continuously: never more than 3, and every image done."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import peewee
import pytest
import requests

from heartbeat.db.connect import connect
from heartbeat.db.models import bind_models, job_model
from helpers import distinct_images

pytestmark = pytest.mark.concurrency

IMAGES = 120
WORKERS = 32
LIMIT = 3
HTTP_TIMEOUT = 30


@pytest.fixture
def servers(start_server, tmp_path) -> list[Any]:
    shared = tmp_path / "shared-data"
    return [start_server(data_dir=shared), start_server(data_dir=shared)]


@pytest.fixture
def servers_database(servers, database, tmp_path) -> Iterator[Any]:
    """The servers' database: the test's on MySQL; on SQLite, the file in their data dir (the models
    are bound to it meanwhile, and to the test's again after)."""
    if database.features.mysql:
        yield database
        return
    yield connect(data_dir=tmp_path / "shared-data", db_auth=None)
    bind_models(database)


class Sampler(threading.Thread):
    """Counts, again and again until stopped, the jobs claimed under a live lease, in the database."""

    def __init__(self, database: Any, software: str):
        super().__init__(daemon=True)
        self.database = database
        self.job = job_model(software)
        self.samples: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.database.connection():
            while not self.stopping.is_set():
                live = self.job.select().where((self.job.status == "claimed") & (self.job.available_at > time.time()))
                try:
                    self.samples.append(live.count())
                except peewee.OperationalError:  # a busy SQLite: the next sample
                    continue


def test_max_in_flight_holds_at_every_moment_across_two_servers(servers, servers_database):
    urls = [server.url for server in servers]
    answer = requests.post(
        f"{urls[0]}/v1/software", json={"name": "gpu", "max_in_flight": LIMIT, "lease_seconds": 600}, timeout=30
    )
    assert answer.status_code == 201, answer.text
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pictures = distinct_images(IMAGES)
        files = [{"file": ("p.png", data, "image/png")} for data in pictures]
        uploaded = set(
            pool.map(
                lambda i: requests.post(f"{urls[i % 2]}/v1/images", files=files[i], timeout=30).json()["id"],
                range(IMAGES),
            )
        )
    sampler = Sampler(servers_database, "gpu")
    sampler.start()
    held = 0  # leases held by the workers, from a claim's answer to the submit: within the server's own
    most_held = 0
    lock = threading.Lock()
    done: list[str] = []
    turned_away = []

    def work(index: int) -> None:
        nonlocal held, most_held
        session, url = requests.Session(), urls[index % 2]
        while len(done) < IMAGES:
            answer = session.post(f"{url}/v1/software/gpu/claim", json={"max": 2, "wait_seconds": 1}, timeout=30)
            assert answer.status_code == 200, answer.text
            jobs = answer.json()["jobs"]
            if not jobs:
                turned_away.append(answer.headers.get("Retry-After"))
                continue
            with lock:
                held += len(jobs)
                most_held = max(most_held, held)
            for job in jobs:
                with lock:
                    held -= 1
                result = {"token": job["token"], "info": {"by": index}}
                put = session.put(f"{url}/v1/software/gpu/jobs/{job['image_id']}/result", json=result, timeout=30)
                assert put.status_code == 200, put.text
                done.append(job["image_id"])

    try:
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            for future in [pool.submit(work, index) for index in range(WORKERS)]:
                future.result()
    finally:
        sampler.stopping.set()
        sampler.join()
    assert sorted(done) == sorted(uploaded)
    assert len(sampler.samples) > 100, "the sampler hardly ran"
    assert max(sampler.samples) <= LIMIT, f"{max(sampler.samples)} leases live at once"
    assert max(sampler.samples) == LIMIT, "the limit was never reached: the test proves nothing"
    assert most_held <= LIMIT
