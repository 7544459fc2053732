"""``docker-compose.yml``, ``.env.sample``, ``deploy/make_env.py`` and ``deploy/Dockerfile.*`` read
against the code: no Docker engine runs here, so the files are parsed and checked (services, ports,
networks, healthchecks, volumes, pins, users, secrets, and every HEARTBEAT_* variable against what the
code reads). Where docker-compose or ``docker compose`` is installed, its own ``config`` must accept
the file with a made ``.env`` and refuse it with the sample. ``test_compose_wiring.py`` runs it."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from heartbeat.auth.tokens import MIN_SECRET_LENGTH
from heartbeat.config import OPTIONS, Settings
from heartbeat.server.supervisor import KILL_AFTER_SECONDS
from heartbeat.storage.s3 import parse_endpoint
from helpers import load_make_env

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_SAMPLE = ROOT / ".env.sample"
VARIABLE = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
LONG_RUNNING = ("mariadb", "minio", "api", "worker")
ONE_SHOT = ("minio-setup", "api-setup")


def env_values(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def env_sample() -> dict[str, str]:
    return env_values(ENV_SAMPLE.read_text())


def made_env() -> dict[str, str]:
    """A .env as ``deploy/make_env.py`` makes it."""
    return env_values(load_make_env().fill(ENV_SAMPLE.read_text()))


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``, from ``env``."""
    if isinstance(value, dict):
        return {interpolate(key, env): interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        assert kind == "-", f"${{{name}}} has no value and no default"
        return rest

    return VARIABLE.sub(replace, value)


def compose_file() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return interpolate(compose_file()["services"], made_env())


def variables_the_code_reads() -> set[str]:
    """Every HEARTBEAT_* name the package spells out: the settings, and what the CLI reads itself."""
    names = {option.env for option in OPTIONS}
    for path in (ROOT / "src" / "heartbeat").rglob("*.py"):
        names.update(re.findall(r"[\"'](HEARTBEAT_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


def stages(name: str) -> list[list[tuple[str, str]]]:
    """Each stage of ``deploy/<name>``: its (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deploy" / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    found: list[list[tuple[str, str]]] = []
    for line in lines:
        kind, argument = line.split(None, 1)
        if kind.upper() == "FROM":
            found.append([])
        found[-1].append((kind.upper(), argument))
    return found


def dockerfile(name: str) -> list[tuple[str, str]]:
    """The instructions of the image ``deploy/<name>`` makes: its last stage."""
    return stages(name)[-1]


def exec_form(argument: str) -> list[str]:
    value = json.loads(argument)
    assert isinstance(value, list), f"{argument} is not the exec form: a shell would be PID 1"
    return value


def seconds(text: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", text)
    assert match and text, text
    return int(match[1] or 0) * 60 + int(match[2] or 0)


def test_the_compose_file_runs_mariadb_minio_the_api_and_a_worker_each_with_a_healthcheck(services):
    assert set(services) == {*LONG_RUNNING, *ONE_SHOT}
    for name in LONG_RUNNING:
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        assert services[name].get("restart") == "unless-stopped", name
    for name in ONE_SHOT:  # run once per `up`; restarted, they would loop
        assert services[name]["restart"] == "no", name
    assert services["minio-setup"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["api-setup"]["depends_on"] == {"mariadb": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {name: {"condition": "service_completed_successfully"} for name in ONE_SHOT}
    assert services["worker"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    for name in ("api", *ONE_SHOT):
        assert services[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile.api"}, name
        assert services[name]["image"] == "heartbeat-api", name
    assert services["worker"]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile.worker"}
    assert services["minio"]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile.minio"}


def test_every_service_rotates_its_logs_and_has_a_memory_limit(services):
    for name, service in services.items():
        assert service["logging"]["driver"] == "json-file", name
        assert {"max-size", "max-file"} <= set(service["logging"]["options"]), name
        assert re.fullmatch(r"\d+[mg]", service["mem_limit"]), name


def test_no_image_floats_every_one_is_built_here_or_pinned_by_digest(services):
    for name, service in services.items():
        if "build" in service:
            assert service["image"].startswith("heartbeat-"), name  # a local name: never pulled
        else:
            assert DIGEST.search(service["image"]), f"{name}: {service['image']} is not pinned by digest"
    assert "latest" not in COMPOSE.read_text()
    for dockerfile_name in ("Dockerfile.api", "Dockerfile.worker", "Dockerfile.minio"):
        for stage in stages(dockerfile_name):
            image = stage[0][1].split()[0]
            assert DIGEST.search(image), f"{dockerfile_name}: {image} is not pinned by digest"
            assert ":latest" not in image


def test_no_service_shares_another_ones_network_namespace(services):
    assert "network_mode" not in COMPOSE.read_text()
    for name, service in services.items():
        assert "network_mode" not in service and "pid" not in service, name


def test_nothing_is_published_beyond_loopback_unless_the_operator_says_so(services):
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published, "the API and MinIO are published"
    for port in published:
        assert port.startswith("127.0.0.1:"), port
    opted_in = interpolate(compose_file()["services"], {**made_env(), "HEARTBEAT_BIND_ADDRESS": "0.0.0.0"})
    assert "0.0.0.0:8080:8080" in opted_in["api"]["ports"] and "0.0.0.0:9000:9000" in opted_in["minio"]["ports"]
    assert "127.0.0.1:9001:9001" in opted_in["minio"]["ports"]  # MinIO's console stays on loopback


def test_presigned_urls_name_a_host_that_reaches_minio_from_containers_and_from_the_host(services):
    settings = Settings.from_env(services["api"]["environment"])
    public_host, public_port = parse_endpoint(settings.s3_public_endpoint or "", settings.s3_secure)[0].split(":")
    assert parse_endpoint(settings.s3_endpoint or "", settings.s3_secure) == ("minio:9000", False)
    # Containers: the public name is MinIO's alias on the compose network, and MinIO listens on that port.
    assert services["minio"]["networks"]["default"]["aliases"] == [public_host]
    assert public_host == made_env()["HEARTBEAT_S3_PUBLIC_HOST"]
    # The host: the same port is published, so the name resolving to the host reaches MinIO too.
    assert f"127.0.0.1:{public_port}:{public_port}" in services["minio"]["ports"]


def test_every_heartbeat_variable_in_the_compose_file_is_one_the_code_reads(services):
    read = variables_the_code_reads()
    for name, service in services.items():
        environment = service.get("environment", {})
        named = set(
            re.findall(r"--(?:from-env|root-access-key-from-env|root-secret-key-from-env) (\w+)", command_text(service))
        )
        assert named <= set(environment), f"{name}: reads a variable it is not given"
        for variable in environment:
            if variable.startswith("HEARTBEAT_"):
                assert variable in read or variable in named, f"{name}: nothing reads {variable}"
    assert {"HEARTBEAT_API", "HEARTBEAT_TOKEN"} <= set(services["worker"]["environment"])


def test_the_api_uses_the_compose_files_mariadb_and_a_minio_user_that_is_not_root(services):
    api = Settings.from_env(services["api"]["environment"])
    mariadb, minio = services["mariadb"]["environment"], services["minio"]["environment"]
    assert api.db_auth is not None
    assert (api.db_auth.host, api.db_auth.port) == ("mariadb", 3306)
    assert (api.db_auth.user, api.db_auth.password, api.db_auth.database) == (
        mariadb["MARIADB_USER"],
        mariadb["MARIADB_PASSWORD"],
        mariadb["MARIADB_DATABASE"],
    )
    assert "HEARTBEAT_DB_AUTH" not in services["api"]["environment"]  # field by field: no JSON to break
    assert api.storage == "s3://heartbeat"
    assert api.s3_access_key != minio["MINIO_ROOT_USER"] and api.s3_secret_key != minio["MINIO_ROOT_PASSWORD"]
    setup = Settings.from_env(services["minio-setup"]["environment"])
    assert (setup.storage, setup.s3_access_key, setup.s3_secret_key) == (
        api.storage,
        api.s3_access_key,
        api.s3_secret_key,
    )
    for name, service in services.items():  # MinIO's root key: MinIO's and minio-setup's alone
        if name not in ("minio", "minio-setup"):
            assert minio["MINIO_ROOT_PASSWORD"] not in json.dumps(service), name
    environment = services["api-setup"]["environment"]
    for variable in re.findall(r"--from-env (\w+)", command_text(services["api-setup"])):
        assert len(environment[variable]) >= MIN_SECRET_LENGTH, f"{variable} is too short to be imported"
    assert services["worker"]["environment"]["HEARTBEAT_TOKEN"] == environment["HEARTBEAT_WORKER_TOKEN"]


def test_the_api_runs_its_images_exec_form_cmd_under_an_init_and_docker_waits_for_its_graceful_stop(services):
    assert "command" not in services["api"]  # the image's CMD: no shell in front of the server
    # An init as PID 1 passes SIGTERM on: Python as PID 1 would ignore one that came before its handlers.
    assert services["api"]["init"] is True and services["worker"]["init"] is True
    [cmd] = [argument for kind, argument in dockerfile("Dockerfile.api") if kind == "CMD"]
    assert exec_form(cmd) == ["heartbeat", "serve"]
    # The supervisor kills a child still running KILL_AFTER_SECONDS after SIGTERM; docker must wait longer.
    assert seconds(services["api"]["stop_grace_period"]) > KILL_AFTER_SECONDS
    assert seconds(services["worker"]["stop_grace_period"]) > 30  # the worker finishes its jobs for 30 s


def test_secrets_come_from_an_env_file_that_git_ignores_and_the_sample_has_none():
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    text = COMPOSE.read_text()
    used = {match[0] for match in VARIABLE.findall(text)}
    required = {match[0] for match in VARIABLE.findall(text) if match[1] == "?"}
    assert set(env_sample()) <= used, "the sample sets nothing the compose file does not use"
    assert required <= set(env_sample()), "the sample names every required variable"
    assert {name for name, value in env_sample().items() if not value} == required, "a secret needs making"
    for secret in ("MARIADB_PASSWORD", "MARIADB_ROOT_PASSWORD", "MINIO_ROOT_PASSWORD", "HEARTBEAT_ADMIN_TOKEN"):
        assert secret in required, f"{secret} can be left out"
        assert "make_env.py" in re.search(rf"\$\{{{secret}:\?([^}}]*)\}}", text)[1], "the refusal says what to do"


def test_make_env_fills_every_secret_with_a_new_one_and_never_overwrites(tmp_path):
    made, again = made_env(), made_env()
    for name, value in env_sample().items():
        if value:
            assert made[name] == value, name  # settings are copied
        else:
            assert len(made[name]) >= MIN_SECRET_LENGTH and made[name] != again[name], name
            assert re.fullmatch(r"[A-Za-z0-9_-]+", made[name]), name  # nothing compose or a shell reads specially
    assert made["HEARTBEAT_ADMIN_TOKEN"].startswith("hb_")
    output = tmp_path / ".env"
    assert load_make_env().main(["--output", str(output)]) == 0
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    first = output.read_text()
    assert load_make_env().main(["--output", str(output)]) == 1
    assert output.read_text() == first


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker", "Dockerfile.minio"])
def test_the_images_run_as_a_user_and_check_their_health(name):
    instructions = dockerfile(name)
    kinds = [kind for kind, _ in instructions]
    users = [argument for kind, argument in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as root"
    assert kinds.index("USER") < kinds.index("CMD")
    assert "HEALTHCHECK" in kinds
    read = variables_the_code_reads()
    for kind, argument in instructions:
        if kind == "ENV":
            for variable in re.findall(r"(HEARTBEAT_\w+)=", argument):
                assert variable in read, f"{name} sets {variable}, which nothing reads"


@pytest.mark.parametrize(
    ("name", "lock"), [("Dockerfile.api", "requirements-api.lock"), ("Dockerfile.worker", "requirements-worker.lock")]
)
def test_the_python_images_install_their_dependencies_from_a_lock_with_hashes(name, lock):
    runs = [argument for kind, argument in dockerfile(name) if kind == "RUN"]
    assert f"pip install --require-hashes --no-deps -r {lock}" in runs
    assert any(run.startswith("pip install --no-deps --no-build-isolation ") for run in runs), "the project alone"
    assert ("COPY", f"deploy/{lock} ./") in dockerfile(name)
    locked = (ROOT / "deploy" / lock).read_text()
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+) \\$", locked, flags=re.M))
    lines = locked.splitlines()
    for index, line in enumerate(lines):
        if "==" in line and not line.startswith("#"):
            assert lines[index + 1].strip().startswith("--hash=sha256:"), f"{line}: a pin without its hashes"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = list(project["project"]["dependencies"])
    if name == "Dockerfile.worker":
        wanted += project["project"]["optional-dependencies"]["faces"]
    for requirement in wanted:
        package = re.split(r"[<>=\[ ;]", requirement)[0].lower().replace("_", "-")
        assert package in pins, f"{lock} does not pin {package}: regenerate it (see the README)"
    assert "setuptools" in pins, "the build backend too: the project is built without isolation"


def test_the_api_image_serves_on_the_port_the_compose_file_publishes(services):
    instructions = dockerfile("Dockerfile.api")
    environment = " ".join(argument for kind, argument in instructions if kind == "ENV").split()
    assert {"HEARTBEAT_HOST=0.0.0.0", "HEARTBEAT_PORT=8080", "HEARTBEAT_DATA_DIR=/data"} <= set(environment)
    assert ("EXPOSE", "8080") in instructions
    assert "127.0.0.1:8080:8080" in services["api"]["ports"]
    assert services["api"]["volumes"] == ["api-data:/data"]  # the image's HEARTBEAT_DATA_DIR: upload spool files


def test_the_worker_image_installs_the_faces_extra_and_runs_face_detection(services):
    instructions = dockerfile("Dockerfile.worker")
    assert ("RUN", "pip install --no-deps --no-build-isolation . && rm -rf /src") in instructions
    assert "scikit-image==" in (ROOT / "deploy" / "requirements-worker.lock").read_text()  # the faces extra
    [command] = [argument for kind, argument in instructions if kind == "CMD"]
    assert exec_form(command) == [
        "heartbeat",
        "worker",
        "run",
        "heartbeat.examples.face_detection:detect",
        "--software",
        "face_detection",
    ]
    assert "command" not in services["worker"]


def test_minio_is_built_from_a_checked_release_of_its_source_and_runs_as_its_own_user(services):
    build, runtime = stages("Dockerfile.minio")
    assert build[0][1].startswith("golang:") and build[0][1].endswith(" AS build")
    arguments = dict(argument.split("=", 1) for kind, argument in build if kind == "ARG")
    assert re.fullmatch(r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", arguments["MINIO_RELEASE"])
    assert re.fullmatch(r"[0-9a-f]{40}", arguments["MINIO_COMMIT"])
    clone = next(argument for kind, argument in build if kind == "RUN" and "git clone" in argument)
    assert '--branch "$MINIO_RELEASE"' in clone and 'test "$(git rev-parse HEAD)" = "$MINIO_COMMIT"' in clone
    assert ("COPY", "--from=build /out/minio /usr/local/bin/minio") in runtime
    assert ("USER", "minio") in runtime
    assert "useradd --system --uid 10002 --create-home minio" in next(arg for kind, arg in runtime if kind == "RUN")
    [entrypoint] = [argument for kind, argument in runtime if kind == "ENTRYPOINT"]
    [cmd] = [argument for kind, argument in runtime if kind == "CMD"]
    assert exec_form(entrypoint) == ["minio"]
    assert services["minio"]["command"] == exec_form(cmd) == ["server", "/data", "--console-address", ":9001"]
    assert services["minio"]["volumes"] == ["minio-data:/data"]
    assert ("VOLUME", "/data") in runtime


def test_data_lives_in_named_volumes(services):
    declared = set(compose_file()["volumes"])
    mounts = {
        name: dict(volume.split(":", 1) for volume in service.get("volumes", [])) for name, service in services.items()
    }
    assert mounts["mariadb"] == {"mariadb-data": "/var/lib/mysql"}
    assert mounts["minio"] == {"minio-data": "/data"}
    assert mounts["api"] == {"api-data": "/data"}
    assert {volume for mounted in mounts.values() for volume in mounted} == declared


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed here; the file is checked above")
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_docker_compose_config_accepts_the_file_with_a_made_env(tmp_path):
    env_file = tmp_path / ".env"
    assert load_make_env().main(["--output", str(env_file)]) == 0
    done = compose_config(env_file)
    assert done.returncode == 0, done.stderr


def test_the_sample_secrets_cannot_start_a_stack():
    done = compose_config(ENV_SAMPLE)
    assert done.returncode != 0
    assert "make_env.py" in done.stderr
