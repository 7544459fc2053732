"""``heartbeat serve``: N processes on one port, and a stop on SIGTERM or SIGINT that cuts nothing in half.

Real servers (the ``start_server`` fixture) on the test database; the clients are threads of the test
process speaking HTTP. What is checked is what a client and an operator see: answers, exit status,
the rows and bytes left behind.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from heartbeat.server.supervisor import METRICS_DIR_LOCK
from helpers import distinct_images, free_port, heartbeat

pytestmark = pytest.mark.concurrency

HTTP_TIMEOUT = 30
GRACE_SECONDS = 20  # heartbeat.server.process.GRACE_SECONDS: in-flight requests get this long


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def stopped_within(server, seconds: float) -> int:
    """The server's exit status, once it has exited (within ``seconds``)."""
    return server.process.wait(timeout=seconds)


def test_several_processes_serve_one_port_and_stop_together_on_sigterm(start_server):
    server = start_server("--processes", "3")
    assert len(children(server.process.pid)) == 3
    for _ in range(6):
        assert requests.get(f"{server.url}/v1/health", timeout=HTTP_TIMEOUT).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert stopped_within(server, GRACE_SECONDS) == 0
    assert "3 processes" in server.log()


def test_ctrl_c_stops_every_process_cleanly(start_server):
    server = start_server("--processes", "2")
    workers = children(server.process.pid)
    server.process.send_signal(signal.SIGINT)
    assert stopped_within(server, GRACE_SECONDS) == 0
    assert not {pid for pid in workers if Path(f"/proc/{pid}").exists()}
    assert "Traceback" not in server.log()


def test_a_server_process_that_dies_is_started_again(start_server):
    server = start_server("--processes", "2")
    [victim, *_] = sorted(children(server.process.pid))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while not (len(children(server.process.pid)) == 2 and victim not in children(server.process.pid)):
        assert time.monotonic() < deadline, "no new process replaced the one that died"
        time.sleep(0.05)
    for _ in range(4):
        assert requests.get(f"{server.url}/v1/health", timeout=HTTP_TIMEOUT).status_code == 200


def test_the_metrics_count_the_requests_of_every_process(start_server):
    server = start_server("--processes", "2")
    for data in distinct_images(6):  # a new connection each: they land on either process
        response = requests.post(f"{server.url}/v1/images", files={"file": ("a.png", data)}, timeout=HTTP_TIMEOUT)
        assert response.status_code == 201
    page = requests.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT).text
    assert "heartbeat_uploads_total 6.0" in page


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_waiting_claim_is_answered_at_once_when_the_server_stops(start_server, processes):
    server = start_server("--processes", processes)
    requests.post(f"{server.url}/v1/software", json={"name": "idle"}, timeout=HTTP_TIMEOUT).raise_for_status()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            requests.post, f"{server.url}/v1/software/idle/claim", json={"wait_seconds": 20}, timeout=HTTP_TIMEOUT
        )
        deadline = time.monotonic() + 10
        while "heartbeat_claims_waiting 1.0" not in requests.get(f"{server.url}/metrics", timeout=HTTP_TIMEOUT).text:
            assert time.monotonic() < deadline, "the claim never started waiting"
            time.sleep(0.05)
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        answer = waiting.result(timeout=HTTP_TIMEOUT)
    assert answer.status_code == 200 and answer.json() == {"jobs": []}
    assert stopped_within(server, GRACE_SECONDS) == 0
    assert time.monotonic() - began < 5


@dataclasses.dataclass
class Traffic:
    """What the clients saw: uploads by sha256 and submits by image, each answered or not."""

    uploads: dict[str, int | None] = dataclasses.field(default_factory=dict)  # sha256 -> status, None: no answer
    submits: dict[str, tuple[str, int | None]] = dataclasses.field(default_factory=dict)  # image -> (token, status)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    answered: threading.Semaphore = dataclasses.field(default_factory=lambda: threading.Semaphore(0))


def _uploader(url: str, pictures: list[bytes], traffic: Traffic) -> None:
    session = requests.Session()
    for data in pictures:
        digest = hashlib.sha256(data).hexdigest()
        try:
            status: int | None = session.post(
                f"{url}/v1/images", files={"file": ("p.png", data)}, timeout=HTTP_TIMEOUT
            ).status_code
        except requests.ConnectionError:
            status = None
        with traffic.lock:
            traffic.uploads[digest] = status
        if status is None:
            return  # the server is gone: every later upload would be "never started" too
        traffic.answered.release()


def _worker(url: str, traffic: Traffic) -> None:
    session = requests.Session()
    while True:
        try:
            jobs = session.post(f"{url}/v1/software/stop_test/claim", json={"max": 1}, timeout=HTTP_TIMEOUT)
        except requests.ConnectionError:
            return
        if jobs.status_code != 200 or not jobs.json()["jobs"]:
            return
        [job] = jobs.json()["jobs"]
        body = {"token": job["token"], "info": {"by": "worker"}}
        try:
            status: int | None = session.put(
                f"{url}/v1/software/stop_test/jobs/{job['image_id']}/result", json=body, timeout=HTTP_TIMEOUT
            ).status_code
        except requests.ConnectionError:
            status = None
        with traffic.lock:
            traffic.submits[job["image_id"]] = (job["token"], status)
        if status is None:
            return
        traffic.answered.release()


# As a container's exec-form CMD runs it: PID 1 of its own PID namespace, where the kernel drops every
# signal the process has no handler for (SIGTERM included), and the stop comes from outside the namespace.
# unshare waits for it, ignoring SIGTERM itself; --kill-child stops it should unshare be killed.
AS_PID_1 = ("unshare", "--pid", "--fork", "--kill-child=SIGTERM")


def pid_1_available() -> bool:
    return (
        shutil.which("unshare") is not None and subprocess.run([*AS_PID_1, "true"], capture_output=True).returncode == 0
    )


@pytest.mark.parametrize(
    ("processes", "as_pid_1"),
    [
        ("1", False),
        ("2", False),
        pytest.param("1", True, id="1-as-pid-1"),
        pytest.param("2", True, id="2-as-pid-1"),
    ],
)
def test_sigterm_under_load_answers_every_request_or_never_starts_it(
    start_server, check_flags, tmp_path, processes, as_pid_1
):
    if as_pid_1 and not pid_1_available():
        pytest.skip("no PID namespace can be made here (unshare --pid needs root or user namespaces)")
    data_dir = tmp_path / "load"
    server = start_server("--processes", processes, data_dir=data_dir, wrapper=AS_PID_1 if as_pid_1 else ())
    target = server.process.pid
    if as_pid_1:
        [target] = children(server.process.pid)
        assert Path(f"/proc/{target}/status").read_text().split("NSpid:")[1].split()[1] == "1"
    requests.post(
        f"{server.url}/v1/software", json={"name": "stop_test", "lease_seconds": 300}, timeout=HTTP_TIMEOUT
    ).raise_for_status()
    pictures = distinct_images(400)
    for data in pictures[:60]:  # work for the workers
        requests.post(f"{server.url}/v1/images", files={"file": ("p.png", data)}, timeout=HTTP_TIMEOUT)
    traffic = Traffic()
    clients = [threading.Thread(target=_uploader, args=(server.url, pictures[60 + i :: 4], traffic)) for i in range(4)]
    clients += [threading.Thread(target=_worker, args=(server.url, traffic)) for _ in range(4)]
    for client in clients:
        client.start()
    for _ in range(30):  # the load is on: stop the server in the middle of it
        assert traffic.answered.acquire(timeout=HTTP_TIMEOUT)
    began = time.monotonic()
    os.kill(target, signal.SIGTERM)
    assert stopped_within(server, GRACE_SECONDS + 5) == 0  # unshare exits with the server's status
    assert time.monotonic() - began < GRACE_SECONDS
    for client in clients:
        client.join(timeout=HTTP_TIMEOUT)

    reader = start_server(data_dir=data_dir)
    stored = {}
    cursor = None
    while True:
        page = requests.get(
            f"{reader.url}/v1/images", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}, timeout=30
        ).json()
        stored.update({image["sha256"]: image for image in page["images"]})
        cursor = page["next_cursor"]
        if cursor is None:
            break
    for digest, status in traffic.uploads.items():
        if status is None:
            assert digest not in stored, "an upload that got no answer was stored"
        else:
            assert status == 201 and digest in stored
    for image_id, (_token, status) in traffic.submits.items():
        job = requests.get(f"{reader.url}/v1/software/stop_test/jobs/{image_id}", timeout=HTTP_TIMEOUT).json()
        expected = "done" if status == 200 else "claimed"
        assert job["status"] == expected, (status, job)
    checked = heartbeat("check", "--grace-seconds", "0", *check_flags_for(check_flags, data_dir))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def check_flags_for(check_flags: list[str], data_dir: Path) -> list[str]:
    """``heartbeat check``'s flags for the server that ran on ``data_dir`` (its images, its SQLite)."""
    flags = list(check_flags)
    if "--data-dir" in flags:
        flags[flags.index("--data-dir") + 1] = str(data_dir)
    if "--storage" in flags and flags[flags.index("--storage") + 1].startswith("local:"):
        flags[flags.index("--storage") + 1] = f"local:{data_dir / 'images'}"
    return flags


def test_more_waiting_claims_than_threads_is_refused_at_start(tmp_path):
    done = heartbeat(
        "serve", "--port", str(free_port()), "--data-dir", str(tmp_path), "--threads", "4", "--max-waiting-claims", "4"
    )
    assert done.returncode == 2
    assert "HEARTBEAT_MAX_WAITING_CLAIMS (--max-waiting-claims)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_port_in_use_stops_serve_with_one_line_before_it_says_it_serves(start_server, tmp_path, processes):
    busy = start_server()
    port = busy.url.rsplit(":", 1)[1]
    done = heartbeat("serve", "--port", port, "--data-dir", str(tmp_path), "--processes", processes)
    assert done.returncode == 2
    assert port in done.stderr and "serving on" not in done.stdout
    assert "Traceback" not in done.stderr
    assert requests.get(f"{busy.url}/v1/health", timeout=HTTP_TIMEOUT).status_code == 200


def answers(url: str) -> bool:
    """Whether anything accepts a connection and answers at ``url``."""
    try:
        requests.get(f"{url}/v1/health", timeout=5)
    except requests.ConnectionError:
        return False
    return True


def test_the_server_processes_stop_when_their_supervisor_is_killed(start_server, tmp_path):
    # A temporary folder of its own: a supervisor that another test (or another pass of the suite, run
    # at the same time) starts meanwhile would rightly remove the dead one's metrics folder from /tmp.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    server = start_server("--processes", "2", wrapper=["env", f"TMPDIR={private_tmp}"])
    workers = children(server.process.pid)
    assert len(workers) == 2
    left = metrics_dir_of(server.process.pid)
    server.process.send_signal(signal.SIGKILL)  # no stop is passed on: the children must see it alone
    server.process.wait(timeout=10)
    deadline = time.monotonic() + GRACE_SECONDS + 10
    try:
        while answers(server.url):
            assert time.monotonic() < deadline, "the server processes went on serving after their supervisor died"
            time.sleep(0.05)  # the port is polled: nothing else tells when the last process closed it
        while running(workers):
            assert time.monotonic() < deadline, "a server process is still running"
            time.sleep(0.05)
    finally:
        for pid in running(workers):  # left behind by a failure: no test leaves a server running
            os.kill(pid, signal.SIGKILL)
    # Its metrics folder stays behind; the next supervisor to start removes it (and no live one's).
    assert left.is_dir()
    other = start_server("--processes", "2", wrapper=["env", f"TMPDIR={private_tmp}"])
    assert not left.exists()
    assert metrics_dir_of(other.process.pid).is_dir()


def metrics_dir_of(supervisor: int) -> Path:
    """The metrics folder of a running supervisor: the folder of the lock it holds open."""
    for fd in Path(f"/proc/{supervisor}/fd").iterdir():
        target = Path(os.readlink(fd))
        if target.name == METRICS_DIR_LOCK:
            return target.parent
    raise AssertionError(f"process {supervisor} holds no metrics folder's lock")


def test_a_supervisor_in_another_pid_namespace_leaves_the_running_ones_metrics_alone(start_server):
    """Two servers sharing /tmp, one in a PID namespace of its own (a container's): the one starting
    later must not take the other's live metrics folder for a dead supervisor's."""
    if not pid_1_available():
        pytest.skip("no PID namespace can be made here (unshare --pid needs root or user namespaces)")
    first = start_server("--processes", "2")
    folder = metrics_dir_of(first.process.pid)
    start_server("--processes", "2", wrapper=AS_PID_1)
    assert folder.is_dir()
    scraped = requests.get(f"{first.url}/metrics", timeout=HTTP_TIMEOUT)
    assert scraped.status_code == 200 and "heartbeat_" in scraped.text


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (an exited one not yet reaped by its new parent is not)."""
    return {pid for pid in pids if process_state(pid) != "Z"}


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (Z: exited, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
