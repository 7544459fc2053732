"""Heartbeat on a three-node MariaDB Galera cluster (the contract's *Engines*; ``docs/galera.md``).

One ``heartbeat serve`` per node, one database, one store; uploads (the same bytes on every node at
once too), claims, single and batch submits and deletions spread over the three servers by threads of
this process, results submitted to any node, some workers vanishing with their jobs and coming back
after their lease ran out. Afterwards: every image done exactly once, none
lost, no 5xx from a server whose node is in the cluster, and the counts each server shows equal to a
recount on its own node. The second test stops one node under load and starts it again: its server
answers 503 with ``Retry-After`` meanwhile and recovers on its own.

Run in the MariaDB pass (``make test-mysql``), on the cluster ``.ci/galera-up`` starts (root only).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pytest
import requests

import galera_cluster
from conftest import BACKEND, STORAGE
from helpers import distinct_images

pytestmark = pytest.mark.skipif(
    BACKEND != "mysql" or STORAGE == "s3", reason="the MariaDB pass runs it (one Galera cluster for the machine)"
)

DATABASE = "hb_galera"
IMAGES = 300
WORKERS = 24
LEASE_SECONDS = 3
VANISH_EVERY = 25  # one claim in this many is abandoned, its result sent after its lease ran out
SAME_BYTES = 10  # pictures uploaded to all three servers at once
DELETED = 10  # images deleted under load


@pytest.fixture(scope="module")
def cluster() -> None:
    galera_cluster.ensure_up()


@pytest.fixture
def servers(cluster, start_server, tmp_path) -> list[Any]:
    """A server on each node of a new database, sharing one folder of images and one URL-signing key."""
    with pymysql.connect(host="127.0.0.1", port=galera_cluster.NODES[0][1], user="root") as connection:
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {DATABASE}")
    store = tmp_path / "store"
    started = []
    for number, (host, port) in enumerate(galera_cluster.NODES, start=1):
        auth = tmp_path / f"node{number}.json"
        auth.write_text(json.dumps({"host": host, "port": port, "user": "root", "password": "", "database": DATABASE}))
        started.append(
            start_server(
                "--db-auth", str(auth), "--storage", f"local:{store}", "--secret-key", "k" * 32,
                data_dir=tmp_path / f"server{number}",
            )
        )  # fmt: skip
    return started


class Ledger:
    """Every answer the load saw, by server, and the results each image was stored with."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[int, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.stored: dict[str, list[str]] = collections.defaultdict(list)  # image -> tokens whose submit was 200
        self.retry_after_missing = 0
        self.deleted: set[str] = set()

    def call(self, server: int, session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        answer = session.request(method, url, timeout=30, **kwargs)
        with self.lock:
            self.statuses[server][answer.status_code] += 1
            if answer.status_code == 503 and "Retry-After" not in answer.headers:
                self.retry_after_missing += 1
        return answer


def run_load(urls: list[str], ledger: Ledger, *, during: Callable[[], None] = lambda: None) -> None:
    """Upload ``IMAGES`` pictures over the servers (the last ``SAME_BYTES`` each to all three at once),
    register a software, then ``WORKERS`` threads claim from a random server and submit, one by one or
    in a batch, to another, while ``DELETED`` images are deleted through a random server, until every
    job left is done (or two minutes pass); then the abandoned jobs' results come back late."""
    pictures = distinct_images(IMAGES)
    spread, same = pictures[:-SAME_BYTES], pictures[-SAME_BYTES:]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        uploads = list(pool.map(lambda item: upload(urls, ledger, item[0] % 3, item[1]), enumerate(spread)))
        assert [answer.status_code for answer in uploads] == [201] * len(spread)
    for data in same:  # the same bytes on every node at once: one image, the others its duplicates
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(upload, [urls] * 3, [ledger] * 3, range(3), [data] * 3))
        assert sorted(answer.status_code for answer in answers) == [200, 200, 201], [a.text for a in answers]
        assert len({answer.json()["id"] for answer in answers}) == 1
    session = requests.Session()
    made = ledger.call(
        0, session, "POST", f"{urls[0]}/v1/software", json={"name": "vision", "lease_seconds": LEASE_SECONDS}
    )
    assert made.status_code == 201, made.text
    listed = ledger.call(0, session, "GET", f"{urls[0]}/v1/images?limit=1000").json()["images"]
    doomed = random.sample([image["id"] for image in listed], DELETED)
    done = threading.Event()
    late: list[tuple[str, str]] = []

    def work(seed: int) -> None:
        chance = random.Random(seed)
        session = requests.Session()
        while not done.is_set():
            node = chance.randrange(3)
            answer = ledger.call(node, session, "POST", f"{urls[node]}/v1/software/vision/claim", json={"max": 2})
            if answer.status_code != 200:
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            jobs = answer.json()["jobs"]
            if not jobs:
                time.sleep(0.05)  # nothing ready: the other workers' leases are out
                continue
            kept = []
            for job in jobs:
                if chance.randrange(VANISH_EVERY) == 0:
                    late.append((job["image_id"], job["token"]))  # this worker vanished with it
                else:
                    kept.append(job)
            if seed % 2:
                for job in kept:
                    submit(job["image_id"], job["token"], chance.randrange(3), session)
            elif kept:
                submit_batch(kept, chance.randrange(3), session)

    def submit(image_id: str, token: str, node: int, session: requests.Session) -> None:
        while True:
            answer = ledger.call(
                node, session, "PUT", f"{urls[node]}/v1/software/vision/jobs/{image_id}/result",
                json={"token": token, "info": {"by": token}},
            )  # fmt: skip
            if answer.status_code == 503:  # this node is out of the cluster: another one
                node = (node + 1) % 3
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            if answer.status_code == 200:
                with ledger.lock:
                    ledger.stored[image_id].append(token)
            return

    def submit_batch(jobs: list[dict[str, Any]], node: int, session: requests.Session) -> None:
        results = [{"image_id": job["image_id"], "token": job["token"], "info": {"by": job["token"]}} for job in jobs]
        while True:
            answer = ledger.call(
                node, session, "POST", f"{urls[node]}/v1/software/vision/results", json={"results": results}
            )
            if answer.status_code == 503:
                node = (node + 1) % 3
                time.sleep(float(answer.headers.get("Retry-After", "1")))
                continue
            assert answer.status_code == 200, answer.text
            for result, verdict in zip(results, answer.json()["results"], strict=True):
                if verdict["status"] == "done":
                    with ledger.lock:
                        ledger.stored[result["image_id"]].append(result["token"])
            return

    def delete(image_id: str) -> None:
        node = random.randrange(3)
        while (answer := ledger.call(node, session, "DELETE", f"{urls[node]}/v1/images/{image_id}")).status_code == 503:
            node = (node + 1) % 3
            time.sleep(float(answer.headers.get("Retry-After", "1")))
        assert answer.status_code == 204, answer.text

    def all_done() -> bool:
        counts = ledger.call(0, session, "GET", f"{urls[0]}/v1/software/vision").json()["counts"]
        return counts["done"] == IMAGES - DELETED

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        running = [pool.submit(work, seed) for seed in range(WORKERS)]
        for image_id in doomed:
            delete(image_id)
        during()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all_done():
            time.sleep(0.5)  # the workers' progress has no event to wait on from here
        done.set()
        for future in running:
            future.result()
    for image_id, token in late:  # back after the lease ran out: refused, or taken if nobody else had it
        submit(image_id, token, random.randrange(3), session)
    ledger.deleted = set(doomed)


def upload(urls: list[str], ledger: Ledger, node: int, data: bytes) -> requests.Response:
    return ledger.call(node, requests.Session(), "POST", f"{urls[node]}/v1/images", files={"file": ("p.png", data)})


def recount(port: int) -> dict[str, int]:
    with pymysql.connect(host="127.0.0.1", port=port, user="root", database=DATABASE) as connection:
        cursor = connection.cursor()
        cursor.execute("SET SESSION wsrep_sync_wait = 1")
        cursor.execute("SELECT status, COUNT(*) FROM job_vision GROUP BY status")
        return {str(status): int(count) for status, count in cursor.fetchall()}


def check_outcome(urls: list[str], ledger: Ledger, healthy: set[int]) -> None:
    kept = {image_id: tokens for image_id, tokens in ledger.stored.items() if image_id not in ledger.deleted}
    assert sorted(len(tokens) for tokens in kept.values()) == [1] * (IMAGES - DELETED), "each image stored once"
    assert all(len(ledger.stored.get(image_id, [])) <= 1 for image_id in ledger.deleted)
    for node in healthy:
        assert not [status for status in ledger.statuses[node] if status >= 500], ledger.statuses
    assert ledger.retry_after_missing == 0
    for node, url in enumerate(urls):
        shown = requests.get(f"{url}/v1/software/vision", timeout=10).json()["counts"]
        counted = recount(galera_cluster.NODES[node][1])
        assert counted == {"done": IMAGES - DELETED}
        assert (shown["done"], shown["pending"], shown["claimed"], shown["failed"]) == (IMAGES - DELETED, 0, 0, 0)
        images = requests.get(f"{url}/v1/images?limit=1000", timeout=10).json()["images"]
        assert len(images) == IMAGES - DELETED


@pytest.mark.timeout(600)
def test_three_servers_on_three_nodes_do_every_image_once_with_no_5xx(servers):
    urls = [server.url for server in servers]
    ledger = Ledger()
    run_load(urls, ledger)
    check_outcome(urls, ledger, healthy={0, 1, 2})


@pytest.mark.timeout(900)
def test_a_node_that_leaves_under_load_and_comes_back_loses_nothing(servers):
    urls = [server.url for server in servers]
    ledger = Ledger()
    out: list[float] = []

    def lose_node_two() -> None:
        time.sleep(2)  # under load
        galera_cluster.stop_node(2)
        out.append(time.monotonic())
        answer = requests.post(f"{urls[1]}/v1/software/vision/claim", json={}, timeout=30)
        assert answer.status_code == 503 and answer.headers.get("Retry-After"), answer.text
        galera_cluster.start_node(2)
        out.append(time.monotonic())

    try:
        run_load(urls, ledger, during=lose_node_two)
    finally:
        galera_cluster.ensure_up()
    assert len(out) == 2, "the node was stopped and started"
    health = requests.get(f"{urls[1]}/v1/health", timeout=10)
    assert health.status_code == 200, health.text  # recovered on its own
    check_outcome(urls, ledger, healthy={0, 2})
