"""The concurrency claims, proven with real processes against real servers on the test database.

Two ``heartbeat serve`` processes share one database and one store (one data dir, so one storage
folder; on the S3 pass, one bucket);
the workers, uploaders and claimers are separate Python processes (``spawn``) that talk HTTP to
them, half to each server. Nothing here reaches into the server's code: only the public contract.

- exactly-once claiming: 6 worker processes drain 120 jobs; each job is claimed once and done once.
- dedupe race: 8 processes upload the same bytes at once (4 times over); one row, one file, one 201 each.
- lease takeover: an expired lease passes to the next claimer; the old token then answers 409.
- long poll: a waiting claim returns an image another process uploads while it waits.
- 32 worker threads, half on each of two servers, claim in batches and submit in batches: 300
  images, each claimed exactly once and done.
- a new version mid-drain: no result of a lease of the old version stays done under it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import multiprocessing
import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import PurePosixPath
from typing import Any

import pytest
import requests

from helpers import distinct_images, image_bytes, stored_keys

pytestmark = pytest.mark.concurrency

SPAWN = multiprocessing.get_context("spawn")
HTTP_TIMEOUT = 30  # seconds for one HTTP call
PROCESS_TIMEOUT = 60  # seconds for a child process to report back


# ---------------------------------------------------------------------------------------------
# Children. They run in spawned processes, so they live at module level and share nothing with
# the test process but what they are handed. Each answers with an Outcome: a value, or the
# traceback of what went wrong, so that a failure in a child fails the test with its reason.


@dataclasses.dataclass
class Outcome:
    index: int
    value: Any = None
    error: str | None = None


def _warm_session(url: str) -> requests.Session:
    """A session whose connection to the server is already open, so a start line is a fair start."""
    session = requests.Session()
    session.get(f"{url}/v1/health", timeout=HTTP_TIMEOUT).raise_for_status()
    return session


def _claim_and_submit_worker(
    index: int, url: str, software: str, seed: int, start: Any, results: multiprocessing.Queue
) -> None:
    """Claim 1..5 jobs at a time and submit each with its token, until two claims in a row find nothing."""
    try:
        rng = random.Random(seed)
        session = _warm_session(url)
        claims: list[tuple[str, str]] = []
        submits: list[tuple[str, int, str]] = []
        start.wait(timeout=PROCESS_TIMEOUT)
        empty_claims = 0
        while empty_claims < 2:
            response = session.post(
                f"{url}/v1/software/{software}/claim", json={"max": rng.randint(1, 5)}, timeout=HTTP_TIMEOUT
            )
            if response.status_code != 200:
                raise AssertionError(f"claim answered {response.status_code}: {response.text}")
            jobs = response.json()["jobs"]
            if not jobs:
                empty_claims += 1
                continue
            empty_claims = 0
            for job in jobs:
                claims.append((job["image_id"], job["token"]))
                put = session.put(
                    f"{url}/v1/software/{software}/jobs/{job['image_id']}/result",
                    json={"token": job["token"], "info": {"worker": index}},
                    timeout=HTTP_TIMEOUT,
                )
                submits.append((job["image_id"], put.status_code, put.text if put.status_code != 200 else ""))
        results.put(Outcome(index, {"claims": claims, "submits": submits}))
    except BaseException:
        results.put(Outcome(index, error=f"worker {index}:\n{traceback.format_exc()}"))


def _upload_worker(index: int, url: str, pictures: list[bytes], start: Any, results: multiprocessing.Queue) -> None:
    """Upload each picture the moment every uploader is ready for it: one race per picture."""
    try:
        session = _warm_session(url)
        answers = []
        for data in pictures:
            prepared = session.prepare_request(
                requests.Request("POST", f"{url}/v1/images", files={"file": ("same.png", data, "image/png")})
            )
            start.wait(timeout=PROCESS_TIMEOUT)
            response = session.send(prepared, timeout=HTTP_TIMEOUT)
            answers.append((response.status_code, response.json()))
        results.put(Outcome(index, answers))
    except BaseException:
        results.put(Outcome(index, error=f"uploader {index}:\n{traceback.format_exc()}"))


def _agent_loop(commands: Connection, sending: Any) -> None:
    """Make the HTTP calls the test process sends, one at a time, and answer each.

    A call marked ``announce`` sets ``sending`` just before its request goes out.
    """
    session = requests.Session()
    for call in iter(commands.recv, None):
        try:
            announce = call.pop("announce", False)
            if announce:
                session.get(call["url"].split("/v1/")[0] + "/v1/health", timeout=HTTP_TIMEOUT)  # connect first
            sent_at, started = time.time(), time.monotonic()
            if announce:
                sending.set()
            response = session.request(timeout=HTTP_TIMEOUT, **call)
            elapsed = time.monotonic() - started
            try:
                body = response.json()
            except ValueError:
                body = response.text
            commands.send(
                Outcome(0, {"status": response.status_code, "body": body, "sent_at": sent_at, "elapsed": elapsed})
            )
        except BaseException:
            commands.send(Outcome(0, error=traceback.format_exc()))


# ---------------------------------------------------------------------------------------------
# The test process's side.


def run_children(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(i, *args[i], start_barrier, results)`` in one spawned process each; their values."""
    results = SPAWN.Queue()
    start = SPAWN.Barrier(len(args))
    processes = [
        SPAWN.Process(target=target, args=(index, *arguments, start, results), daemon=True)
        for index, arguments in enumerate(args)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=PROCESS_TIMEOUT) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
    errors = [outcome.error for outcome in outcomes if outcome.error]
    assert not errors, "\n".join(errors)
    return [outcome.value for outcome in sorted(outcomes, key=lambda outcome: outcome.index)]


class Agent:
    """Another process that makes HTTP calls for the test: ``call`` waits for the answer, ``send`` does not."""

    def __init__(self) -> None:
        self._commands, child_end = SPAWN.Pipe()
        self.sending = SPAWN.Event()
        self.process = SPAWN.Process(target=_agent_loop, args=(child_end, self.sending), daemon=True)
        self.process.start()
        child_end.close()

    def send(self, method: str, url: str, *, announce: bool = False, **options: Any) -> None:
        self._commands.send({"method": method, "url": url, "announce": announce, **options})

    def answer(self) -> dict[str, Any]:
        assert self._commands.poll(PROCESS_TIMEOUT), "the agent process did not answer"
        outcome = self._commands.recv()
        assert outcome.error is None, outcome.error
        return outcome.value

    def call(self, method: str, url: str, **options: Any) -> dict[str, Any]:
        self.send(method, url, **options)
        return self.answer()

    def stop(self) -> None:
        if self.process.is_alive():
            self._commands.send(None)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


@pytest.fixture
def agents() -> Iterator[Callable[[int], list[Agent]]]:
    started: list[Agent] = []

    def make(count: int) -> list[Agent]:
        new = [Agent() for _ in range(count)]
        started.extend(new)
        return new

    yield make
    for agent in started:
        agent.stop()


@pytest.fixture
def servers(start_server, tmp_path) -> list[Any]:
    """Two ``heartbeat serve`` processes on the test database and one shared data dir.

    ``start_server`` (conftest) resets the tables first, passes ``--db-auth`` on MySQL and
    ``--data-dir``, waits for ``/v1/health`` and terminates the servers afterwards.
    """
    shared = tmp_path / "shared-data"
    return [start_server(data_dir=shared), start_server(data_dir=shared)]


def api(method: str, url: str, expected: int = 200, **options: Any) -> Any:
    response = requests.request(method, url, timeout=HTTP_TIMEOUT, **options)
    assert response.status_code == expected, f"{method} {url}: {response.status_code} {response.text}"
    return response.json() if response.content else None


def register(url: str, name: str, **options: Any) -> None:
    api("POST", f"{url}/v1/software", 201, json={"name": name, **options})


def upload(url: str, data: bytes, expected: int = 201) -> dict[str, Any]:
    return api("POST", f"{url}/v1/images", expected, files={"file": ("picture.png", data, "image/png")})


def counts(url: str, name: str) -> dict[str, int]:
    [software] = [item for item in api("GET", f"{url}/v1/software")["software"] if item["name"] == name]
    return software["counts"]


def all_pages(url: str, key: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
        page = api("GET", url, params=params)
        items.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


# ---------------------------------------------------------------------------------------------
# The tests.

IMAGES = 120
WORKERS = 6


def test_six_worker_processes_claim_every_job_exactly_once_and_finish_them_all(servers):
    name = "exactly_once"
    register(servers[0].url, name, lease_seconds=600)
    uploaded: list[str] = []
    for index, data in enumerate(distinct_images(IMAGES)):
        uploaded.append(upload(servers[index % 2].url, data)["id"])
    assert len(set(uploaded)) == IMAGES

    reports = run_children(
        _claim_and_submit_worker, [(servers[index % 2].url, name, index) for index in range(WORKERS)]
    )

    claimed = [image_id for report in reports for image_id, _token in report["claims"]]
    twice = [image_id for image_id, times in Counter(claimed).items() if times > 1]
    assert twice == [], f"claimed more than once: {twice}"
    assert set(claimed) == set(uploaded)
    assert len(claimed) == IMAGES
    tokens = [token for report in reports for _image_id, token in report["claims"]]
    assert len(set(tokens)) == IMAGES
    bad_submits = [submit for report in reports for submit in report["submits"] if submit[1] != 200]
    assert bad_submits == []
    assert sum(len(report["submits"]) for report in reports) == IMAGES
    assert sum(1 for report in reports if report["claims"]) > 1, "one worker took everything: no race happened"

    assert counts(servers[1].url, name) == {
        "pending": 0,
        "claimed": 0,
        "done": IMAGES,
        "failed": 0,
        "skipped": 0,
        "outdated": 0,
    }
    claimer = {image_id: index for index, report in enumerate(reports) for image_id, _token in report["claims"]}
    jobs = all_pages(f"{servers[0].url}/v1/software/{name}/jobs", "jobs")
    assert {job["image_id"]: job["info"]["worker"] for job in jobs} == claimer
    assert {job["attempts"] for job in jobs} == {1}


UPLOADERS = 8
# The losers usually find the winner's row at their first look; a few of them get past that look
# and meet the unique index instead. Several races in a row make it near certain that this path
# is taken at least once (one race alone takes it in about three runs out of four).
RACES = 4


def test_eight_processes_uploading_the_same_bytes_at_once_store_one_image(servers, server_storage):
    register(servers[0].url, "dedupe")
    pictures = [image_bytes((12, 34, 56 + race), fmt="PNG") for race in range(RACES)]

    reports = run_children(_upload_worker, [(servers[index % 2].url, pictures) for index in range(UPLOADERS)])

    winners = []
    for race, data in enumerate(pictures):
        answers = [report[race] for report in reports]
        statuses = Counter(status for status, _body in answers)
        assert statuses == {201: 1, 200: UPLOADERS - 1}, f"race {race}: {answers}"
        [winner] = [body for status, body in answers if status == 201]
        assert winner["duplicate"] is False
        assert winner["sha256"] == hashlib.sha256(data).hexdigest()
        for status, body in answers:
            if status == 200:
                assert (body["id"], body["duplicate"]) == (winner["id"], True), f"race {race}: {answers}"
        winners.append(winner["id"])

    images = all_pages(f"{servers[1].url}/v1/images", "images")
    assert sorted(image["id"] for image in images) == sorted(winners)
    store = server_storage(servers[0].data_dir)
    stored = stored_keys(store, "images/")
    assert len(stored) == RACES, stored
    contents = []
    for key in stored:
        with store.open(key) as stream:
            contents.append(stream.read())
    assert sorted(contents) == sorted(pictures)
    thumbnails = sorted(PurePosixPath(key).stem for key in stored_keys(store, "thumbnails/"))
    assert thumbnails == sorted(winners), "a losing upload left its thumbnail behind"
    assert counts(servers[0].url, "dedupe") == {
        "pending": RACES,
        "claimed": 0,
        "done": 0,
        "failed": 0,
        "skipped": 0,
        "outdated": 0,
    }


def wait_for_lease_to_pass(url: str, name: str, image_id: str) -> None:
    """Poll the job until its lease's expiry is in the past (the clock is the only thing to wait on)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        expires_at = api("GET", f"{url}/v1/software/{name}/jobs/{image_id}")["lease_expires_at"]
        remaining = expires_at - time.time()
        if remaining < 0:
            return
        time.sleep(min(remaining + 0.01, 0.2))
    raise AssertionError("the lease did not pass within 10 s")


def test_an_expired_lease_goes_to_the_next_claimer_and_the_old_token_then_answers_409(servers, agents):
    name = "takeover"
    url_a, url_b = servers[0].url, servers[1].url
    register(url_a, name, lease_seconds=600)
    image_id = upload(url_a, image_bytes((1, 2, 3), fmt="PNG"))["id"]
    a, b = agents(2)

    first = a.call("POST", f"{url_a}/v1/software/{name}/claim", json={"lease_seconds": 1})
    assert first["status"] == 200, first
    [job_a] = first["body"]["jobs"]
    assert job_a["image_id"] == image_id

    wait_for_lease_to_pass(url_b, name, image_id)
    second = b.call("POST", f"{url_b}/v1/software/{name}/claim", json={})
    assert second["status"] == 200, second
    [job_b] = second["body"]["jobs"]
    assert job_b["image_id"] == image_id
    assert job_b["token"] != job_a["token"]
    assert job_b["attempt"] == job_a["attempt"] + 1

    late = a.call(
        "PUT", f"{url_a}/v1/software/{name}/jobs/{image_id}/result", json={"token": job_a["token"], "info": "A"}
    )
    assert late["status"] == 409, late
    job = api("GET", f"{url_a}/v1/software/{name}/jobs/{image_id}")
    assert (job["status"], job["info"]) == ("claimed", None)

    done = b.call(
        "PUT", f"{url_b}/v1/software/{name}/jobs/{image_id}/result", json={"token": job_b["token"], "info": "B"}
    )
    assert done["status"] == 200, done
    job = api("GET", f"{url_a}/v1/software/{name}/jobs/{image_id}")
    assert (job["status"], job["info"], job["attempts"]) == ("done", "B", 2)
    assert counts(url_b, name) == {"pending": 0, "claimed": 0, "done": 1, "failed": 0, "skipped": 0, "outdated": 0}


@pytest.mark.parametrize("upload_to", [0, 1], ids=["upload-to-same-server", "upload-to-other-server"])
def test_a_waiting_claim_returns_an_image_another_process_uploads_meanwhile(servers, agents, upload_to):
    name = "long_poll"
    register(servers[0].url, name)
    waiter, uploader = agents(2)
    uploader.call("GET", f"{servers[upload_to].url}/v1/health")  # spawned and connected before the clock runs

    waiter.send("POST", f"{servers[0].url}/v1/software/{name}/claim", json={"wait_seconds": 10}, announce=True)
    assert waiter.sending.wait(PROCESS_TIMEOUT)
    uploaded = uploader.call(
        "POST", f"{servers[upload_to].url}/v1/images", files={"file": ("late.png", image_bytes(fmt="PNG"), "image/png")}
    )
    assert uploaded["status"] == 201, uploaded
    claim = waiter.answer()

    assert claim["status"] == 200, claim
    assert len(claim["body"]["jobs"]) == 1, claim
    [job] = claim["body"]["jobs"]
    assert job["image_id"] == uploaded["body"]["id"]
    assert uploaded["body"]["uploaded_date"] > claim["sent_at"], "the image existed before the claim was sent"
    assert claim["elapsed"] < 5, f"the claim took {claim['elapsed']:.2f} s"


THREAD_WORKERS = 32
THREAD_IMAGES = 300
MAX_BATCH = 8


@dataclasses.dataclass
class ThreadReport:
    claims: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (image id, token)
    verdicts: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the batch submit's answers
    largest_batch: int = 0


def test_32_worker_threads_on_two_servers_claim_and_submit_in_batches_300_images_exactly_once(servers):
    """Half the threads on each server, each claiming up to 8 jobs at once and submitting them all
    in one batch: every image is claimed once, by one lease, and ends done."""
    name = "threads"
    register(servers[0].url, name, lease_seconds=600)
    pictures = distinct_images(THREAD_IMAGES)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        uploaded = set(pool.map(lambda i: upload(servers[i % 2].url, pictures[i])["id"], range(THREAD_IMAGES)))
    assert len(uploaded) == THREAD_IMAGES
    start = threading.Barrier(THREAD_WORKERS)

    def work(index: int) -> ThreadReport:
        url = servers[index % 2].url
        rng = random.Random(index)
        session = _warm_session(url)
        report = ThreadReport()
        start.wait(timeout=PROCESS_TIMEOUT)
        while True:
            response = session.post(
                f"{url}/v1/software/{name}/claim", json={"max": rng.randint(2, MAX_BATCH)}, timeout=HTTP_TIMEOUT
            )
            assert response.status_code == 200, response.text
            jobs = response.json()["jobs"]
            if not jobs:
                return report
            report.largest_batch = max(report.largest_batch, len(jobs))
            report.claims += [(job["image_id"], job["token"]) for job in jobs]
            results = [{"image_id": job["image_id"], "token": job["token"], "info": {"worker": index}} for job in jobs]
            batch = session.post(f"{url}/v1/software/{name}/results", json={"results": results}, timeout=HTTP_TIMEOUT)
            assert batch.status_code == 200, batch.text
            report.verdicts += batch.json()["results"]

    with concurrent.futures.ThreadPoolExecutor(THREAD_WORKERS) as pool:
        reports = list(pool.map(work, range(THREAD_WORKERS)))

    claimed = [image_id for report in reports for image_id, _token in report.claims]
    twice = [image_id for image_id, times in Counter(claimed).items() if times > 1]
    assert twice == [], f"claimed more than once: {twice}"
    assert set(claimed) == uploaded
    verdicts = [verdict for report in reports for verdict in report.verdicts]
    assert [verdict for verdict in verdicts if verdict["status"] != "done"] == []
    assert sorted(verdict["image_id"] for verdict in verdicts) == sorted(uploaded)
    assert sum(1 for report in reports if report.claims) > 1, "one thread took everything: no race happened"
    assert max(report.largest_batch for report in reports) > 1, "no batch claim took more than one job"
    for server in servers:
        assert counts(server.url, name) == {
            "pending": 0,
            "claimed": 0,
            "done": THREAD_IMAGES,
            "failed": 0,
            "skipped": 0,
            "outdated": 0,
        }
    claimer = {image_id: index for index, report in enumerate(reports) for image_id, _token in report.claims}
    jobs = all_pages(f"{servers[1].url}/v1/software/{name}/jobs", "jobs")
    assert {job["image_id"]: job["info"]["worker"] for job in jobs} == claimer
    assert {job["attempts"] for job in jobs} == {1}


def test_job_counts_equal_a_recount_after_a_mixed_load_on_two_servers(servers):
    """Uploads, claims, results, failures, releases, abandoned leases, requeues, deletions and two
    registrations (a pipeline, an origin filter) at once on two servers: every software's counts then
    equal its jobs counted one by one through the job listing."""
    urls = [server.url for server in servers]
    register(urls[0], "detect", max_attempts=3)
    pictures = distinct_images(60)
    uploaded: list[str] = []
    half_uploaded, uploads_done = threading.Event(), threading.Event()
    abandoned: list[tuple[str, str, str]] = []  # (software, image, token) of leases left to run out
    lock = threading.Lock()

    def uploader(index: int) -> None:
        for number, data in enumerate(pictures[index::3]):
            origin = {"origin": "cam1" if number % 2 else "cam2"}
            image = api("POST", f"{urls[index % 2]}/v1/images", 201, files={"file": ("p.png", data)}, data=origin)
            with lock:
                uploaded.append(image["id"])
                if len(uploaded) >= len(pictures) // 2:
                    half_uploaded.set()

    def registrar() -> None:
        half_uploaded.wait(timeout=PROCESS_TIMEOUT)
        register(urls[1], "describe", after=["detect"])
        register(urls[0], "cam_only", origins=["cam1"])

    def worker(index: int) -> None:
        rng = random.Random(index)
        url = urls[index % 2]
        rounds = 0
        while rounds < 30 or not uploads_done.is_set():
            rounds += 1
            software = rng.choice(["detect", "detect", "describe", "cam_only"])
            answer = requests.post(
                f"{url}/v1/software/{software}/claim", json={"max": rng.randint(1, 3)}, timeout=HTTP_TIMEOUT
            )
            if answer.status_code == 404:
                continue  # not registered yet
            assert answer.status_code == 200, answer.text
            for job in answer.json()["jobs"]:
                base = f"{url}/v1/software/{software}/jobs/{job['image_id']}"
                action = rng.random()
                if action < 0.5:
                    requests.put(f"{base}/result", json={"token": job["token"], "info": {}}, timeout=HTTP_TIMEOUT)
                elif action < 0.75:
                    failure = {"token": job["token"], "error": "no", "retry": action < 0.65, "retry_after": 0}
                    requests.post(f"{base}/fail", json=failure, timeout=HTTP_TIMEOUT)
                elif action < 0.9:
                    requests.post(f"{base}/release", json={"token": job["token"]}, timeout=HTTP_TIMEOUT)
                else:
                    with lock:
                        abandoned.append((software, job["image_id"], job["token"]))
            if rounds % 10 == 0:
                api("POST", f"{url}/v1/software/detect/requeue", json={"status": rng.choice(["failed", "done"])})

    def deleter() -> None:
        deleted = 0
        while deleted < 8:
            with lock:
                victim = uploaded[deleted * 5] if len(uploaded) > deleted * 5 else None
            if victim is None:
                if uploads_done.is_set():
                    return
                continue
            api("DELETE", f"{urls[deleted % 2]}/v1/images/{victim}", 204)
            deleted += 1

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        uploads = [pool.submit(uploader, index) for index in range(3)]
        others = [pool.submit(registrar), pool.submit(deleter), *(pool.submit(worker, index) for index in range(6))]
        for future in uploads:
            future.result(timeout=PROCESS_TIMEOUT * 2)
        uploads_done.set()
        for future in others:
            future.result(timeout=PROCESS_TIMEOUT * 2)

    for software, image_id, token in abandoned:  # leases still held end now (a run-out one is stale: 409)
        requests.post(
            f"{urls[0]}/v1/software/{software}/jobs/{image_id}/release", json={"token": token}, timeout=HTTP_TIMEOUT
        )
    for item in api("GET", f"{urls[0]}/v1/software")["software"]:
        recount = {
            status: len(all_pages(f"{urls[1]}/v1/software/{item['name']}/jobs?status={status}", "jobs"))
            for status in item["counts"]
            if status != "outdated"  # a share of done, not a status
        }
        assert counts(urls[1], item["name"]) == recount | {"outdated": 0}, item["name"]
        assert sum(recount.values()) == len(uploaded) - 8, item["name"]  # a job per image left


def test_a_new_version_under_load_leaves_no_job_done_under_the_old_one(servers):
    """Six worker processes drain a software; mid-way its version changes, while the test holds leases
    of the old version and submits them only after the change, when every process is busy. Each
    result of the old version is reopened, none stays done under it: at the end every job is done
    under the new version and the counts equal a recount."""
    name = "versioned"
    register(servers[0].url, name, lease_seconds=600, version="v1")
    uploaded = [upload(servers[index % 2].url, data)["id"] for index, data in enumerate(distinct_images(IMAGES))]
    held = api("POST", f"{servers[1].url}/v1/software/{name}/claim", json={"max": 10})["jobs"]
    assert {job["version"] for job in held} == {"v1"}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        workers = pool.submit(
            run_children, _claim_and_submit_worker, [(servers[i % 2].url, name, i) for i in range(WORKERS)]
        )
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while counts(servers[0].url, name)["done"] < IMAGES // 4:
            assert time.monotonic() < deadline and not workers.done(), "the workers finished nothing"
        api("PATCH", f"{servers[0].url}/v1/software/{name}", json={"version": "v2"})
        for job in held:
            body = {"token": job["token"], "info": {"worker": "held"}}
            api("PUT", f"{servers[1].url}/v1/software/{name}/jobs/{job['image_id']}/result", json=body)
        workers.result()

    # Whatever the workers left when they stopped (two empty claims in a row) is drained here.
    while jobs := api("POST", f"{servers[0].url}/v1/software/{name}/claim", json={"max": 100})["jobs"]:
        for job in jobs:
            body = {"token": job["token"], "info": {"worker": "test"}}
            api("PUT", f"{servers[0].url}/v1/software/{name}/jobs/{job['image_id']}/result", json=body)
    jobs = all_pages(f"{servers[1].url}/v1/software/{name}/jobs", "jobs")
    assert sorted(job["image_id"] for job in jobs) == sorted(uploaded)
    assert {(job["status"], job["version"]) for job in jobs} == {("done", "v2")}
    assert [job for job in jobs if job["info"]["worker"] == "held"] == [], "the old version's results were redone"
    expected = {"pending": 0, "claimed": 0, "done": IMAGES, "failed": 0, "skipped": 0, "outdated": 0}
    assert counts(servers[1].url, name) == expected
