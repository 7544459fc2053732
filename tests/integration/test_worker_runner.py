"""The Worker against a real ``heartbeat serve``: leases kept alive past their length, a lost lease
never submitted, crashing handlers retried then failed, bytes checked, batches, concurrency, stop()."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from heartbeat.worker import Claim, Client, Image, LeaseLost, Result, Worker
from heartbeat.worker.exceptions import ServerUnavailable
from helpers import distinct_images, free_port, image_bytes, stored_keys

TIMEOUT = 30  # seconds for any one event a test awaits


@pytest.fixture
def server(start_server, session_data_dir):
    return start_server(data_dir=session_data_dir)


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def requests_logged(server: Any, method: str, route: str) -> int:
    """How many ``method route`` lines the server's access log holds."""
    return sum(1 for line in server.log().splitlines() if f"{method} {route} " in line)


def test_a_handler_slower_than_its_lease_keeps_the_lease_and_its_result_is_stored(client, server):
    client.register("slow", lease_seconds=2, max_attempts=3)
    image_id = client.upload(image_bytes()).id
    rival = Client(server.url)

    def handler(data: bytes, image: Image) -> dict[str, Any]:
        first_expiry = client.job("slow", image.id).lease_expires_at
        # A rival's claim waits twice the lease; it finds the job only if the lease was let lapse.
        taken = [job.image_id for job in rival.claim("slow", wait_seconds=4)]
        now = time.time()
        return {"taken": taken, "past_first_expiry": now > first_expiry}

    Worker(client, "slow", handler, wait_seconds=0).run(exit_when_idle=True)

    job = client.job("slow", image_id)
    assert (job.status, job.attempts) == ("done", 1)
    assert job.info == {"taken": [], "past_first_expiry": True}
    assert requests_logged(server, "POST", "/v1/software/{name}/jobs/{image_id}/extend") >= 2


class PartitionedClient(Client):
    """A client whose lease renewals are held back, as by a network partition, until ``healed``."""

    def __init__(self, url: str):
        super().__init__(url)
        self.extend_started = threading.Event()
        self.healed = threading.Event()
        self.extend_refused = threading.Event()

    def extend(self, *args: Any, **kwargs: Any) -> float:
        self.extend_started.set()
        assert self.healed.wait(TIMEOUT)
        try:
            return super().extend(*args, **kwargs)
        except LeaseLost:
            self.extend_refused.set()
            raise


def test_a_lost_lease_is_never_submitted_and_the_new_holders_result_stands(client, server):
    client.register("lossy", lease_seconds=1, max_attempts=3)
    image_id = client.upload(image_bytes()).id
    partitioned = PartitionedClient(server.url)
    thief = Client(server.url)

    def handler(data: bytes, image: Image) -> dict[str, str]:
        assert partitioned.extend_started.wait(TIMEOUT)  # the renewal is held back...
        [job] = thief.claim("lossy", wait_seconds=10)  # ...so the lease runs out and the thief takes the job
        [outcome] = thief.submit_many("lossy", [Result(job.image_id, job.token, {"by": "thief"})])
        assert outcome.status == "done"
        partitioned.healed.set()
        return {"by": "worker"}

    Worker(partitioned, "lossy", handler, wait_seconds=0).run(exit_when_idle=True)

    assert partitioned.extend_refused.is_set()
    job = client.job("lossy", image_id)
    assert (job.status, job.info, job.attempts) == ("done", {"by": "thief"}, 2)
    for route in ("result", "fail", "release"):  # the worker sent nothing about the job it lost
        method = "PUT" if route == "result" else "POST"
        assert requests_logged(server, method, f"/v1/software/{{name}}/jobs/{{image_id}}/{route}") == 0


def test_a_crashing_handler_is_retried_then_failed_with_the_last_line_of_its_traceback(client):
    client.register("crashy", max_attempts=2)
    image_id = client.upload(image_bytes()).id
    calls = []

    def handler(data: bytes, image: Image) -> None:
        calls.append(image.id)
        raise ValueError(f"bad pixels in {image.id}")

    Worker(client, "crashy", handler, wait_seconds=0, retry_after_seconds=0).run(exit_when_idle=True)

    assert calls == [image_id, image_id]
    job = client.job("crashy", image_id)
    assert (job.status, job.attempts, job.error) == ("failed", 2, f"ValueError: bad pixels in {image_id}")


def test_bytes_that_differ_from_the_image_record_fail_the_job_before_the_handler_runs(
    client, server, server_storage, tmp_path
):
    client.register("checked", max_attempts=1)
    image = client.upload(image_bytes())
    store = server_storage(server.data_dir)
    [key] = [key for key in stored_keys(store, "images/") if image.id in key]
    with store.open(key) as stream:
        original = stream.read()
    changed = tmp_path / "changed.jpg"
    changed.write_bytes(bytes([original[0] ^ 1]) + original[1:])  # same size, other bytes
    store.put_file(key, changed, image.content_type or "image/jpeg")
    calls = []

    Worker(client, "checked", lambda data, image: calls.append(image), wait_seconds=0).run(exit_when_idle=True)

    assert calls == []
    job = client.job("checked", image.id)
    assert job.status == "failed"
    assert "sha256" in (job.error or "") and image.sha256 in (job.error or "")


def test_a_result_the_server_refuses_fails_the_job_without_retries(client):
    client.register("tables", max_attempts=5, tables={"faces": {"x": "int"}})
    image_id = client.upload(image_bytes()).id

    Worker(client, "tables", lambda data, image: ({"n": 1}, {"faces": [{"x": "left"}]}), wait_seconds=0).run(
        exit_when_idle=True
    )

    job = client.job("tables", image_id)
    assert (job.status, job.attempts) == ("failed", 1)
    assert "refused" in (job.error or "") and "faces[0].x" in (job.error or "")
    assert list(client.rows("tables", "faces")) == []


def test_handlers_run_side_by_side_and_results_go_in_batches(client, server):
    client.register("many")
    uploaded = {client.upload(data).id: len(data) for data in distinct_images(10)}
    side_by_side = threading.Barrier(3, timeout=TIMEOUT)  # broken unless three handlers run at once
    calls: list[str] = []
    lock = threading.Lock()

    def handler(data: bytes, image: Image) -> dict[str, int]:
        with lock:
            calls.append(image.id)
            first_three = len(calls) <= 3
        if first_three:
            side_by_side.wait()
        return {"size": len(data)}

    Worker(client, "many", handler, concurrency=3, batch=5, wait_seconds=0).run(exit_when_idle=True)

    assert sorted(calls) == sorted(uploaded)
    jobs = {job.image_id: job for job in client.iterate(client.jobs, "many")}
    assert {image_id: (job.status, job.info) for image_id, job in jobs.items()} == {
        image_id: ("done", {"size": size}) for image_id, size in uploaded.items()
    }
    # Two claims of five; each batch's results went in one call, none alone.
    assert requests_logged(server, "POST", "/v1/software/{name}/results") == 2
    assert requests_logged(server, "PUT", "/v1/software/{name}/jobs/{image_id}/result") == 0


class CountingClient(Client):
    """A client that tells when its second claim has brought jobs back."""

    def __init__(self, url: str):
        super().__init__(url)
        self.claims_with_jobs = 0
        self.second_batch_claimed = threading.Event()

    def claim_jobs(self, *args: Any, **kwargs: Any) -> Claim:
        claim = super().claim_jobs(*args, **kwargs)
        if claim.jobs:
            self.claims_with_jobs += 1
            if self.claims_with_jobs == 2:
                self.second_batch_claimed.set()
        return claim


def test_the_next_batch_is_claimed_while_the_last_jobs_of_a_batch_still_run(client, server):
    client.register("ahead")
    uploaded = [client.upload(data).id for data in distinct_images(10)]  # claimed oldest first
    counting = CountingClient(server.url)
    waited: list[bool] = []

    def handler(data: bytes, image: Image) -> dict[str, str]:
        if image.id in uploaded[3:5]:  # the first batch's last two: both handlers busy, no job left waiting
            waited.append(counting.second_batch_claimed.wait(TIMEOUT))
        return {}

    Worker(counting, "ahead", handler, concurrency=2, batch=5, wait_seconds=0).run(exit_when_idle=True)

    assert waited == [True, True]  # the claim did not wait for a handler to be free
    assert counting.claims_with_jobs == 2
    assert {job.image_id: job.status for job in client.iterate(client.jobs, "ahead")} == dict.fromkeys(uploaded, "done")


def test_stop_ends_run_with_nothing_left_claimed(client):
    client.register("stoppable")
    image_id = client.upload(image_bytes()).id
    handled = threading.Event()

    def handler(data: bytes, image: Image) -> str:
        handled.set()
        return "ok"

    worker = Worker(client, "stoppable", handler, wait_seconds=1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    assert handled.wait(TIMEOUT)
    worker.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert client.job("stoppable", image_id).status == "done"
    assert client.software("stoppable").counts["claimed"] == 0


def test_a_worker_turned_away_from_waiting_comes_back_when_the_server_says(start_server, tmp_path):
    server = start_server("--threads", "2", "--max-waiting-claims", "0", data_dir=tmp_path / "no-room")
    client = Client(server.url)
    client.register("crowded")
    claim = client.claim_jobs("crowded", wait_seconds=2)
    assert (claim.jobs, claim.retry_after_seconds) == ([], 2.0)

    done = threading.Event()

    def handler(data: bytes, image: Image) -> str:
        done.set()
        return "seen"

    worker = Worker(client, "crowded", handler, wait_seconds=2)
    runner = threading.Thread(target=worker.run)
    runner.start()
    began = time.monotonic()
    image_id = client.upload(image_bytes()).id
    assert done.wait(TIMEOUT), "the worker never came back for the work"
    back_after = time.monotonic() - began
    worker.stop()
    runner.join(TIMEOUT)
    assert client.job("crowded", image_id).status == "done"
    assert back_after <= 2 * 1.5 + 1  # its Retry-After, spread by at most a half, and the handling
    # Each claim it made was turned away, and it made one per Retry-After, not one after another.
    turned_away = requests_logged(server, "POST", "/v1/software/{name}/claim")
    assert turned_away <= 2 + back_after / 2 + 1


class RecordingClient(Client):
    """A client that keeps the ``wait_seconds`` of each claim it sends."""

    def __init__(self, url: str):
        super().__init__(url)
        self.waits: list[float] = []

    def claim_jobs(self, *args: Any, **kwargs: Any) -> Claim:
        self.waits.append(kwargs.get("wait_seconds", 0))
        return super().claim_jobs(*args, **kwargs)


def test_a_worker_that_exits_when_idle_never_waits_on_a_long_poll(client, server):
    """Its last claim finds no work at once: it ends right after its last job, not a long poll (or two)
    later, however long --wait-seconds is."""
    client.register("drained")
    uploaded = [client.upload(data).id for data in distinct_images(3)]
    recording = RecordingClient(server.url)
    Worker(recording, "drained", lambda data, image: {}, wait_seconds=5).run(exit_when_idle=True)
    assert recording.waits and set(recording.waits) == {0}
    assert {job.image_id: job.status for job in client.iterate(client.jobs, "drained")} == dict.fromkeys(
        uploaded, "done"
    )


def test_a_worker_that_exits_when_idle_gives_up_on_an_api_that_does_not_answer():
    """In one line, after ``give_up_seconds``; a worker without exit_when_idle waits as long as it takes."""
    nobody = Client(f"http://127.0.0.1:{free_port()}", retries=0)
    with pytest.raises(ServerUnavailable) as gave_up:
        Worker(nobody, "any", lambda data, image: {}, give_up_seconds=0.5).run(exit_when_idle=True)
    assert "did not answer for 0.5 s" in str(gave_up.value) and "Connection refused" in str(gave_up.value)
    assert "HTTPConnectionPool" not in str(gave_up.value)
