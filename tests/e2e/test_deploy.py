"""``docker-compose.yml`` and ``deploy/Dockerfile.*`` read against the code: no Docker engine runs here,
so the files are parsed and checked (services, ports, healthchecks, volumes, and every HEARTBEAT_*
variable against what the code reads). Where docker-compose or ``docker compose`` is installed,
its own ``config`` must accept the file too."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from heartbeat.config import OPTIONS, Settings
from heartbeat.storage.s3 import parse_endpoint
from heartbeat.tokens import MIN_SECRET_LENGTH

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_SAMPLE = ROOT / ".env.sample"
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def env_sample() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_SAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, from the sample .env."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        assert kind == "-", f"${{{name}}} has no value in .env.sample and no default"
        return rest

    return VARIABLE.sub(replace, value)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text())["services"], env_sample())


def variables_the_code_reads() -> set[str]:
    """Every HEARTBEAT_* name the package spells out: the settings, and what the CLI reads itself."""
    names = {option.env for option in OPTIONS}
    for path in (ROOT / "src" / "heartbeat").rglob("*.py"):
        names.update(re.findall(r"[\"'](HEARTBEAT_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of ``deploy/<name>``, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deploy" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_compose_file_runs_mariadb_minio_the_api_and_a_worker_each_with_a_healthcheck(services):
    assert set(services) == {"mariadb", "minio", "api", "worker"}
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "unless-stopped", name
    assert services["api"]["depends_on"] == {
        "mariadb": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }
    assert services["worker"]["depends_on"]["api"] == {"condition": "service_healthy"}
    assert services["api"]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile.api"}
    assert services["worker"]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile.worker"}


def test_data_lives_in_named_volumes(services):
    declared = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    mounts = {
        name: dict(volume.split(":", 1) for volume in service.get("volumes", [])) for name, service in services.items()
    }
    assert mounts["mariadb"] == {"mariadb-data": "/var/lib/mysql"}
    assert mounts["minio"] == {"minio-data": "/data"}
    assert mounts["api"] == {"api-data": "/data"}  # the image's HEARTBEAT_DATA_DIR: upload spool files
    assert {volume for mounted in mounts.values() for volume in mounted} == declared


def test_presigned_urls_name_the_host_port_minio_is_published_on(services):
    published = {
        name: [port.rsplit(":", 2)[-2:] for port in service.get("ports", [])] for name, service in services.items()
    }
    assert ["8080", "8080"] in published["api"]
    assert ["9000", "9000"] in published["minio"]
    settings = Settings.from_env(services["api"]["environment"])
    assert parse_endpoint(settings.s3_public_endpoint or "", settings.s3_secure) == ("localhost:9000", False)
    assert parse_endpoint(settings.s3_endpoint or "", settings.s3_secure) == ("minio:9000", False)
    # The worker fetches those URLs from inside compose: it shares MinIO's network, where localhost:9000 is MinIO.
    assert services["worker"]["network_mode"] == "service:minio"


def test_every_heartbeat_variable_in_the_compose_file_is_one_the_code_reads(services):
    read = variables_the_code_reads()
    for name, service in services.items():
        environment = service.get("environment", {})
        imported = set(re.findall(r"--from-env (\w+)", command_text(service)))
        assert imported <= set(environment), f"{name}: --from-env of a variable it is not given"
        for variable in environment:
            if variable.startswith("HEARTBEAT_"):
                assert variable in read or variable in imported, f"{name}: nothing reads {variable}"
    assert {"HEARTBEAT_API", "HEARTBEAT_TOKEN"} <= set(services["worker"]["environment"])


def test_the_api_is_configured_for_the_compose_files_own_mariadb_and_minio(services):
    api = Settings.from_env(services["api"]["environment"])
    mariadb, minio = services["mariadb"]["environment"], services["minio"]["environment"]
    assert api.db_auth is not None
    assert (api.db_auth.host, api.db_auth.port) == ("mariadb", 3306)
    assert (api.db_auth.user, api.db_auth.password, api.db_auth.database) == (
        mariadb["MARIADB_USER"],
        mariadb["MARIADB_PASSWORD"],
        mariadb["MARIADB_DATABASE"],
    )
    assert api.storage.startswith("s3://")
    assert (api.s3_access_key, api.s3_secret_key) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    environment = services["api"]["environment"]
    for variable in re.findall(r"--from-env (\w+)", command_text(services["api"])):
        assert len(environment[variable]) >= MIN_SECRET_LENGTH, f"{variable} is too short to be imported"
    assert services["worker"]["environment"]["HEARTBEAT_TOKEN"] == environment["HEARTBEAT_WORKER_TOKEN"]
    assert command_text(services["api"]).endswith("exec heartbeat serve")


def test_secrets_come_from_an_env_file_that_git_ignores():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    used = {match[0] for match in VARIABLE.findall(COMPOSE.read_text())}
    required = {match[0] for match in VARIABLE.findall(COMPOSE.read_text()) if match[1] != "-"}
    assert required <= set(env_sample()), "every required variable has a sample value"
    assert set(env_sample()) <= used, "the sample sets nothing the compose file does not use"
    for secret in ("MARIADB_PASSWORD", "MINIO_ROOT_PASSWORD", "HEARTBEAT_ADMIN_TOKEN"):
        assert re.search(rf"\$\{{{secret}(:\?[^}}]*)?\}}", COMPOSE.read_text()), f"{secret} is written into the file"


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_the_images_are_small_run_as_a_user_and_check_their_health(name):
    instructions = dockerfile(name)
    kinds = [kind for kind, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [argument for kind, argument in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as root"
    assert kinds.index("USER") < kinds.index("CMD")
    assert "HEALTHCHECK" in kinds
    assert "--no-cache-dir" in " ".join(argument for _kind, argument in instructions) or any(
        "PIP_NO_CACHE_DIR=1" in argument for kind, argument in instructions if kind == "ENV"
    )
    read = variables_the_code_reads()
    for kind, argument in instructions:
        if kind == "ENV":
            for variable in re.findall(r"(HEARTBEAT_\w+)=", argument):
                assert variable in read, f"{name} sets {variable}, which nothing reads"


def test_the_api_image_serves_on_the_port_the_compose_file_publishes():
    instructions = dockerfile("Dockerfile.api")
    environment = " ".join(argument for kind, argument in instructions if kind == "ENV").split()
    assert {"HEARTBEAT_HOST=0.0.0.0", "HEARTBEAT_PORT=8080", "HEARTBEAT_DATA_DIR=/data"} <= set(environment)
    assert ("EXPOSE", "8080") in instructions
    assert ("CMD", '["heartbeat", "serve"]') in instructions


def test_the_worker_image_installs_the_faces_extra_and_runs_face_detection():
    instructions = dockerfile("Dockerfile.worker")
    assert ("RUN", 'pip install ".[faces]" && rm -rf /src') in instructions
    [command] = [argument for kind, argument in instructions if kind == "CMD"]
    assert shlex.split(command.strip("[]").replace(",", " ")) == [
        "heartbeat",
        "worker",
        "run",
        "heartbeat.examples.face_detection:detect",
        "--software",
        "face_detection",
    ]


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_docker_compose_config_accepts_the_file():
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed here; the file is checked above")
    done = subprocess.run(
        [*command, "--env-file", str(ENV_SAMPLE), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
