"""Tokens and roles, as the contract gives them: who may call which route, 401 against 403,
revocation at once in every process, and no secret where it does not belong."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import falcon.inspect
import pytest
import requests

from heartbeat.auth import tokens
from heartbeat.db.models import ApiToken, Image
from helpers import claim, image_bytes, multipart, register, upload

# The contract's roles, written out as the contract says them (not read from the code).
PUBLIC = "public"
READ = {"admin", "uploader", "reader", "worker", "worker_face_detection", "worker_ocr"}
UPLOAD = {"admin", "uploader"}
WORK = {"admin", "worker", "worker_face_detection"}  # the routes name face_detection
ADMIN = {"admin"}
CONTRACT: dict[tuple[str, str], Any] = {
    ("GET", "/v1/health"): PUBLIC,
    ("GET", "/openapi.json"): READ,
    ("GET", "/metrics"): READ,
    ("GET", "/v1/blobs/{key:path}"): PUBLIC,
    ("PUT", "/v1/blobs/{key:path}"): PUBLIC,
    ("POST", "/v1/uploads"): UPLOAD,
    ("POST", "/v1/uploads/{upload_id}/complete"): UPLOAD,
    ("GET", "/v1/images"): READ,
    ("POST", "/v1/images"): UPLOAD,
    ("GET", "/v1/images/{image_id}"): READ,
    ("PATCH", "/v1/images/{image_id}"): ADMIN,
    ("DELETE", "/v1/images/{image_id}"): ADMIN,
    ("GET", "/v1/images/{image_id}/url"): READ,
    ("GET", "/v1/images/{image_id}/content"): READ,
    ("GET", "/v1/images/{image_id}/thumbnail"): READ,
    ("GET", "/"): PUBLIC,
    ("GET", "/dashboard/{name}"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/assets/{name}"): PUBLIC,
    ("GET", "/v1/software"): READ,
    ("POST", "/v1/software"): ADMIN,
    ("GET", "/v1/software/{name}"): READ,
    ("PATCH", "/v1/software/{name}"): ADMIN,
    ("GET", "/v1/export"): READ,
    ("POST", "/v1/software/{name}/requeue"): ADMIN,
    ("POST", "/v1/software/{name}/pause"): ADMIN,
    ("POST", "/v1/software/{name}/resume"): ADMIN,
    ("POST", "/v1/software/{name}/claim"): WORK,
    ("POST", "/v1/software/{name}/results"): WORK,
    ("GET", "/v1/software/{name}/jobs"): READ,
    ("GET", "/v1/software/{name}/jobs/{image_id}"): READ,
    ("POST", "/v1/software/{name}/jobs/{image_id}/extend"): WORK,
    ("PUT", "/v1/software/{name}/jobs/{image_id}/result"): WORK,
    ("POST", "/v1/software/{name}/jobs/{image_id}/fail"): WORK,
    ("POST", "/v1/software/{name}/jobs/{image_id}/release"): WORK,
    ("GET", "/v1/software/{name}/tables/{table}"): READ,
    ("GET", "/v1/events"): READ,
    ("GET", "/v1/events/stream"): READ,
    ("POST", "/v1/webhooks"): ADMIN,
    ("GET", "/v1/webhooks"): ADMIN,  # a receiver's URL may carry its credentials
    ("GET", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("PATCH", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("DELETE", "/v1/webhooks/{webhook_id}"): ADMIN,
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): READ,
    ("POST", "/v1/webhooks/{webhook_id}/replay"): ADMIN,
    ("GET", "/v1/retention"): ADMIN,
    ("POST", "/v1/retention"): ADMIN,
    ("GET", "/v1/retention/{policy}"): ADMIN,
    ("DELETE", "/v1/retention/{policy}"): ADMIN,
    ("GET", "/v1/erasures"): ADMIN,
    ("POST", "/v1/erasures"): ADMIN,
    ("GET", "/v1/erasures/{erasure_id}"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
}
# Every route that answers GET answers HEAD the same way (the contract's Conventions).
CONTRACT |= {("HEAD", template): allowed for (method, template), allowed in list(CONTRACT.items()) if method == "GET"}
ROLES = sorted(READ)


def served_routes(app: falcon.App) -> set[tuple[str, str]]:
    return {
        (method.method, route.path)
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    }


def test_the_role_table_covers_every_route_the_app_serves(app):
    assert served_routes(app) == set(CONTRACT)


@pytest.fixture
def secrets_by_role(app, clock) -> dict[str, str]:
    made = {
        "admin": tokens.create_token("admin", clock=clock),
        "uploader": tokens.create_token("uploader", clock=clock),
        "reader": tokens.create_token("reader", clock=clock),
        "worker": tokens.create_token("worker", clock=clock),
        "worker_face_detection": tokens.create_token("worker", software="face_detection", clock=clock),
        "worker_ocr": tokens.create_token("worker", software="ocr", clock=clock),
    }
    return {role: secret for role, (_row, secret) in made.items()}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def call(client, method: str, template: str, image_id: str, secret: str | None) -> Any:
    path = (
        template.replace("{image_id}", image_id)
        .replace("{name}", "face_detection")
        .replace("{table}", "faces")
        .replace("{key:path}", "images/xx/nothing.jpg")
        .replace("{upload_id}", "no-such-upload")
        .replace("{webhook_id}", "no-such-webhook")
        .replace("{policy}", "no_such_policy")
        .replace("{erasure_id}", "no-such-erasure")
    )
    if template == "/v1/events/stream":
        path += "?max_seconds=0.05"
    headers = bearer(secret) if secret else {}
    if (method, template) == ("POST", "/v1/images"):
        form = multipart(file=image_bytes((1, 2, 3)))
        return client.simulate_post(path, body=form["body"], headers=form["headers"] | headers)
    body = {"token": "not-the-lease", "info": {}, "error": "x", "results": [], "status": "failed", "name": "x"}
    if method in ("GET", "HEAD", "DELETE"):
        return client.simulate_request(method, path, headers=headers)
    return client.simulate_request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_allowed_exactly_what_the_contract_gives_it(client, secrets_by_role, role):
    admin = bearer(secrets_by_role["admin"])
    register(client, "face_detection", tables={"faces": {"x": "int"}}, headers=admin)
    image_id = upload(client, headers=admin).json["id"]
    for (method, template), allowed in CONTRACT.items():
        result = call(client, method, template, image_id, secrets_by_role[role])
        where = f"{role}: {method} {template} -> {result.status_code} {result.text}"
        if allowed is PUBLIC or role in allowed:
            assert result.status_code not in (401, 403) or template == "/v1/blobs/{key:path}", where
        else:
            assert result.status_code == 403, where
            assert method == "HEAD" or "may not" in result.json["description"], where


def test_without_a_token_only_the_public_routes_answer_once_tokens_exist(client, secrets_by_role):
    register(client, "face_detection", tables={"faces": {"x": "int"}}, headers=bearer(secrets_by_role["admin"]))
    for (method, template), allowed in CONTRACT.items():
        result = call(client, method, template, "someimage", None)
        if allowed is PUBLIC:
            assert result.status_code != 401, f"{method} {template}"
        else:
            assert result.status_code == 401, f"{method} {template} -> {result.status_code}"
            assert result.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Bearer hb_not-a-token-anybody-made-aaaaaaaaaaaaaa", "Basic YWRtaW46YWRtaW4=", "Bearer", "hb_bare"],
    ids=["unknown", "basic", "empty-bearer", "no-scheme"],
)
def test_an_unknown_or_malformed_token_is_401_even_before_any_token_exists(client, header):
    result = client.simulate_get("/v1/images", headers={"Authorization": header})
    assert result.status_code == 401
    assert result.headers["WWW-Authenticate"] == "Bearer"


def test_with_no_token_configured_loopback_clients_are_served_and_others_are_not(client):
    assert client.simulate_get("/v1/images").status_code == 200
    assert client.simulate_get("/v1/images", remote_addr="::1").status_code == 200
    assert client.simulate_get("/v1/images", remote_addr="10.0.0.7").status_code == 401
    assert client.simulate_get("/v1/images", remote_addr="203.0.113.9").status_code == 401
    assert client.simulate_get("/v1/health", remote_addr="203.0.113.9").status_code == 200


def test_a_refused_call_changes_nothing(client, secrets_by_role):
    admin = bearer(secrets_by_role["admin"])
    register(client, "face_detection", headers=admin)
    register(client, "ocr", headers=admin)
    image_id = upload(client, headers=admin).json["id"]

    reader = bearer(secrets_by_role["reader"])
    assert client.simulate_delete(f"/v1/images/{image_id}", headers=reader).status_code == 403
    assert Image.get_or_none(Image.id == image_id) is not None
    assert client.simulate_post("/v1/software", json={"name": "sneaky"}, headers=reader).status_code == 403
    assert client.simulate_get("/v1/software/sneaky", headers=admin).status_code == 404

    scoped = bearer(secrets_by_role["worker_face_detection"])
    assert client.simulate_post("/v1/software/ocr/claim", json={}, headers=scoped).status_code == 403
    assert client.simulate_get(f"/v1/software/ocr/jobs/{image_id}", headers=scoped).json["status"] == "pending"
    [job] = claim(client, "face_detection", headers=scoped)
    uploader = bearer(secrets_by_role["uploader"])
    result = client.simulate_put(
        f"/v1/software/face_detection/jobs/{image_id}/result",
        json={"token": job["token"], "info": {"stolen": True}},
        headers=uploader,
    )
    assert result.status_code == 403
    assert client.simulate_get(f"/v1/software/face_detection/jobs/{image_id}", headers=admin).json["status"] == (
        "claimed"
    )


def test_a_revoked_token_stops_working_at_once(client, clock, secrets_by_role):
    row, secret = tokens.create_token("reader", clock=clock, name="leaving")
    assert client.simulate_get("/v1/images", headers=bearer(secret)).status_code == 200
    tokens.revoke_token(row.id, clock=clock)
    result = client.simulate_get("/v1/images", headers=bearer(secret))
    assert result.status_code == 401
    assert secret not in result.text


def test_only_the_hash_of_a_token_is_stored(app, clock):
    row, secret = tokens.create_token("admin", clock=clock)
    stored = [value for value in ApiToken.select().where(ApiToken.id == row.id).dicts().get().values()]
    assert all(secret not in str(value) for value in stored)
    assert secret.startswith("hb_") and len(secret) > 40


def test_importing_the_same_token_twice_keeps_one_row_and_a_short_one_is_refused(app, clock):
    value = "compose-worker-token-0123456789abcdef"
    first, _ = tokens.create_token("worker", clock=clock, software="face_detection", secret=value)
    again, _ = tokens.create_token("worker", clock=clock, software="face_detection", secret=value)
    assert first.id == again.id and ApiToken.select().count() == 1
    with pytest.raises(Exception, match="at least"):
        tokens.create_token("admin", clock=clock, secret="short")


def test_importing_a_new_token_under_a_name_revokes_the_old_one_and_only_its_own(client, clock):
    old, old_secret = tokens.create_token("admin", clock=clock, name="compose-admin", secret="a" * 40)
    _, bystander = tokens.create_token("admin", clock=clock, name="someone-else", secret="b" * 40)
    _, made_here = tokens.create_token("admin", clock=clock, name="compose-admin")  # made, not imported: added
    assert client.simulate_get("/v1/images", headers=bearer(old_secret)).status_code == 200

    new, new_secret = tokens.create_token("admin", clock=clock, name="compose-admin", secret="c" * 40)
    assert client.simulate_get("/v1/images", headers=bearer(old_secret)).status_code == 401
    assert client.simulate_get("/v1/images", headers=bearer(made_here)).status_code == 401
    assert client.simulate_get("/v1/images", headers=bearer(new_secret)).status_code == 200
    assert client.simulate_get("/v1/images", headers=bearer(bystander)).status_code == 200
    again, _ = tokens.create_token("admin", clock=clock, name="compose-admin", secret="c" * 40)
    assert again.id == new.id and again.revoked_at is None  # the same import again changes nothing
    assert ApiToken.get_by_id(old.id).revoked_at is not None


# --- real processes: the CLI and two servers -------------------------------------------------


def heartbeat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    return subprocess.run(
        [sys.executable, "-m", "heartbeat", *args], capture_output=True, text=True, timeout=60, env=clean | (env or {})
    )


def test_token_cli_and_revocation_reach_every_api_process(start_server, db_auth_file, tmp_path):
    shared = tmp_path / "shared"
    db = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(shared)]
    created = heartbeat("token", "create", "--role", "reader", "--name", "ci", *db)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    token_id = created.stderr.split("token ")[1].split()[0]

    servers = [start_server(data_dir=shared), start_server(data_dir=shared)]
    for server in servers:
        assert requests.get(f"{server.url}/v1/images", timeout=10).status_code == 401
        assert requests.get(f"{server.url}/v1/images", headers=bearer(secret), timeout=10).status_code == 200

    listed = heartbeat("token", "list", *db)
    assert listed.returncode == 0
    [line] = listed.stdout.splitlines()
    assert line.split("\t")[:4] == [token_id, "reader", "*", "active"]
    assert secret not in listed.stdout + listed.stderr

    revoked = heartbeat("token", "revoke", token_id, *db)
    assert revoked.returncode == 0, revoked.stderr
    for server in servers:
        assert requests.get(f"{server.url}/v1/images", headers=bearer(secret), timeout=10).status_code == 401
    assert heartbeat("token", "revoke", "0000000000000000", *db).returncode == 1

    for server in servers:
        server.stop()
        log = server.log()
        assert "GET /v1/images 401" in log  # the access log was written, and holds no token
        assert secret not in log


def test_a_server_on_a_public_address_starts_with_a_token_and_never_serves_openly(start_server, db_auth_file, tmp_path):
    data = tmp_path / "public"
    db = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(data)]
    created = heartbeat("token", "create", "--role", "admin", *db)
    secret = created.stdout.strip()
    token_id = created.stderr.split("token ")[1].split()[0]

    server = start_server("--host", "0.0.0.0", data_dir=data)
    assert requests.get(f"{server.url}/v1/images", headers=bearer(secret), timeout=10).status_code == 200
    assert heartbeat("token", "revoke", token_id, *db).returncode == 0
    # No live token is left, yet a server bound beyond loopback still refuses a tokenless request.
    assert requests.get(f"{server.url}/v1/images", timeout=10).status_code == 401
