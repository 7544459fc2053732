"""``heartbeat worker run`` as a real process against a real server: it works, and on SIGTERM it
stops claiming, finishes the job it is running, releases the rest and exits 0."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.worker import Client
from helpers import distinct_images

TESTS = Path(__file__).parents[1]
TIMEOUT = 60


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture
def client(server) -> Iterator[Client]:
    with Client(server.url) as client:
        yield client


def worker_env(**extra: str) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    return clean | {"PYTHONPATH": str(TESTS)} | extra


def heartbeat_worker(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heartbeat", "worker", "run", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=worker_env(**env),
    )


def test_sigterm_finishes_the_job_running_releases_the_rest_and_exits_0(client, server):
    client.register("gated")
    first, second, third = (client.upload(data).id for data in distinct_images(3))
    with socket.create_server(("127.0.0.1", 0)) as gate:
        gate.settimeout(TIMEOUT)
        command = ["worker", "run", "worker_handlers:gated", "--software", "gated", "--api", server.url, "--batch", "2"]
        process = subprocess.Popen(
            [sys.executable, "-m", "heartbeat", *command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=worker_env(HEARTBEAT_TEST_GATE=f"127.0.0.1:{gate.getsockname()[1]}"),
        )
        try:
            connection, _ = gate.accept()
            with connection, connection.makefile("rw") as talk:
                assert talk.readline().strip() == first  # the handler is running on the first image
                assert client.software("gated").counts["claimed"] == 2  # a batch of two is in hand
                process.send_signal(signal.SIGTERM)
                said = []
                for line in process.stderr:  # type: ignore[union-attr]
                    said.append(line)
                    if "SIGTERM: stopping" in line:
                        break
                assert "SIGTERM: stopping" in said[-1], "".join(said)
                talk.write("go\n")
                talk.flush()
            assert process.wait(TIMEOUT) == 0, process.stderr.read()  # type: ignore[union-attr]
        finally:
            process.kill()
            process.wait()

    assert client.job("gated", first).status == "done"
    assert client.job("gated", first).info["size"] == client.image(first).size
    assert [client.job("gated", image_id).status for image_id in (second, third)] == ["pending", "pending"]
    assert client.job("gated", second).attempts == 0  # released: the attempt does not count
    assert client.software("gated").counts["claimed"] == 0


def test_the_api_comes_from_heartbeat_api_and_an_unknown_software_is_a_clear_error(server):
    done = heartbeat_worker("worker_handlers:gated", "--software", "nobody", HEARTBEAT_API=server.url)
    assert done.returncode == 1
    assert "no software named 'nobody'" in done.stderr
    assert "heartbeat software add nobody" in done.stderr


def test_a_handler_that_cannot_be_loaded_is_a_clear_error(server):
    done = heartbeat_worker("no_such_module:detect", "--software", "x", "--api", server.url)
    assert done.returncode == 2
    assert "cannot load no_such_module:detect" in done.stderr
    done = heartbeat_worker("worker_handlers", "--software", "x", "--api", server.url)
    assert done.returncode == 2
    assert "expected module:function" in done.stderr


def test_the_readme_worker_example_runs_as_written(client, server, tmp_path):
    readme = (TESTS.parent / "README.md").read_text().split("## Workers", 1)[1]
    example = re.search(r"```python\n(.*?)```", readme, re.S).group(1)  # type: ignore[union-attr]
    assert len(example.splitlines()) <= 10
    (tmp_path / "my_worker.py").write_text(example)
    client.register("checksums")
    data = distinct_images(1)[0]
    image = client.upload(data)

    # The installed console script (not `python -m`, which would put the folder on sys.path itself).
    script = Path(sys.executable).parent / "heartbeat"
    command = ["worker", "run", "my_worker:handle", "--software", "checksums", "--api", server.url]
    done = subprocess.run(
        [str(script), *command, "--exit-when-idle", "--wait-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,  # the handler's module is found in the current folder
        env={key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")},
    )

    assert done.returncode == 0, done.stderr
    job = client.job("checksums", image.id)
    assert (job.status, job.info) == ("done", {"md5": hashlib.md5(data).hexdigest(), "width": image.width})
