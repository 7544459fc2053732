"""A fleet larger than the thread pool: waiting workers never delay working ones.

Two ``heartbeat serve`` processes (``--processes 2``, 4 threads each) share the test database. Four
times their thread count of workers, in separate processes, long-poll a software that has no work,
honouring ``Retry-After``; meanwhile the test process uploads, claims and submits another software's
jobs (15-second leases) and asks for health. None of those may take more than 2 seconds, no waiting
worker may get an answer outside the contract, and no lease may run out.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import distinct_images

pytestmark = [pytest.mark.concurrency, pytest.mark.mariadb_pass]

SPAWN = multiprocessing.get_context("spawn")
THREADS_PER_PROCESS = 4
PROCESSES = 2
WAITING_WORKERS = 4 * THREADS_PER_PROCESS * PROCESSES
WORKER_PROCESSES = 4
LOAD_SECONDS = 24  # longer than one full long poll (20 s)
SLOWEST_SECONDS = 2.0
LEASE_SECONDS = 15


def _waiting_workers(url: str, threads: int, stop: Any, started: Any, answers: multiprocessing.Queue) -> None:
    """``threads`` workers long-polling the idle software, as a worker fleet does: claim with a 20-second
    wait; on ``Retry-After`` come back after that many seconds with jitter. Reports what they saw."""
    seen: list[tuple[int, bool, bool, float]] = []  # (status, jobs is [], had Retry-After, seconds)
    lock = threading.Lock()

    def work() -> None:
        session = requests.Session()
        rng = random.Random()
        while not stop.is_set():
            began = time.monotonic()
            try:
                answer = session.post(f"{url}/v1/software/idle/claim", json={"wait_seconds": 20}, timeout=40)
                status, body = answer.status_code, answer.json()
            except (requests.RequestException, ValueError) as error:
                status, body = 0, repr(error)
            retry_after = answer.headers.get("Retry-After") if status else None
            with lock:
                seen.append((status, body == {"jobs": []}, retry_after is not None, time.monotonic() - began))
            if status != 200:
                return
            if retry_after is not None:
                stop.wait(int(retry_after) * rng.uniform(1.0, 1.5))

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    started.release()
    for thread in pool:
        thread.join()
    answers.put(seen)


def _timed(latencies: dict[str, list[float]], what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    began = time.monotonic()
    answer = call(*args, timeout=30, **kwargs)
    latencies.setdefault(what, []).append(time.monotonic() - began)
    return answer


def test_workers_waiting_beyond_the_thread_pool_never_delay_uploads_claims_submits_or_health(start_server):
    server = start_server("--processes", str(PROCESSES), "--threads", str(THREADS_PER_PROCESS))
    url = server.url
    for software in ({"name": "idle", "origins": ["nowhere"]}, {"name": "busy", "lease_seconds": LEASE_SECONDS}):
        requests.post(f"{url}/v1/software", json=software, timeout=10).raise_for_status()

    stop, started, answers = SPAWN.Event(), SPAWN.Semaphore(0), SPAWN.Queue()
    fleet = [
        SPAWN.Process(target=_waiting_workers, args=(url, WAITING_WORKERS // WORKER_PROCESSES, stop, started, answers))
        for _ in range(WORKER_PROCESSES)
    ]
    for process in fleet:
        process.start()
    for _ in fleet:
        assert started.acquire(timeout=60)

    latencies: dict[str, list[float]] = {}
    session = requests.Session()
    deadline = time.monotonic() + LOAD_SECONDS
    submitted = 0
    for picture in distinct_images(3000):
        if time.monotonic() >= deadline:
            break
        files = {"file": ("p.png", picture)}
        uploaded = _timed(latencies, "upload", session.post, f"{url}/v1/images", files=files)
        assert uploaded.status_code == 201, uploaded.text
        claimed = _timed(latencies, "claim", session.post, f"{url}/v1/software/busy/claim", json={"max": 1})
        assert claimed.status_code == 200, claimed.text
        for job in claimed.json()["jobs"]:
            path = f"{url}/v1/software/busy/jobs/{job['image_id']}/result"
            done = _timed(latencies, "submit", session.put, path, json={"token": job["token"], "info": 1})
            assert done.status_code == 200, done.text
            submitted += 1
        health = _timed(latencies, "health", session.get, f"{url}/v1/health")
        assert health.status_code == 200

    stop.set()
    seen = [answer for _ in fleet for answer in answers.get(timeout=60)]
    for process in fleet:
        process.join(timeout=60)

    slowest = {what: max(values) for what, values in latencies.items()}
    assert all(seconds <= SLOWEST_SECONDS for seconds in slowest.values()), slowest
    assert submitted >= 10
    outside = [answer for answer in seen if answer[0] != 200 or not answer[1]]
    assert not outside, f"waiting workers got answers outside the contract: {outside[:5]}"
    assert any(had_retry_after for _status, _empty, had_retry_after, _seconds in seen), "no claim was turned away"
    assert any(seconds >= 10 for *_, seconds in seen), "no claim waited"
    busy = requests.get(f"{url}/v1/software/busy", timeout=10).json()
    assert busy["counts"]["done"] == submitted and busy["counts"]["failed"] == 0
    metrics = text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text)
    expiries = [sample.value for family in metrics for sample in family.samples if family.name.endswith("expiries")]
    assert not any(expiries), "a lease ran out"
