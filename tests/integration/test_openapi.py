"""``GET /openapi.json`` stays true to the routes, and schemathesis fuzzes the running server against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import falcon.inspect
import jsonschema
import pytest
import requests

from heartbeat.api.openapi import COMPONENTS
from helpers import distinct_images

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
FUZZ_EXAMPLES = int(os.environ.get("HEARTBEAT_FUZZ_EXAMPLES", "25"))


def served(app: falcon.App) -> set[tuple[str, str]]:
    """(method, path) of every route, with Falcon's field converters (``{key:path}``) dropped."""
    return {
        (method.method.lower(), re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path))
        for route in falcon.inspect.inspect_routes(app)
        for method in route.methods
        if not method.internal
    }


def documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item if method in HTTP_METHODS}


def test_every_served_route_is_documented_and_every_documented_route_is_served(client, app):
    document = client.simulate_get("/openapi.json").json
    assert document["openapi"].startswith("3.")
    # HEAD is GET without its body (RFC 9110): the document says so once, and each GET stands for its HEAD.
    assert "HEAD" in document["info"]["description"]
    heads = {("head", path) for method, path in documented(document) if method == "get"}
    assert documented(document) | heads == served(app)


def test_every_documented_operation_names_its_errors_and_its_path_parameters(client):
    document = client.simulate_get("/openapi.json").json
    for path, item in document["paths"].items():
        names = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in ((m, o) for m, o in item.items() if m in HTTP_METHODS):
            declared = {p["name"] for p in item.get("parameters", []) + operation.get("parameters", [])}
            assert names <= declared, f"{method} {path}: path parameters {names - declared} undeclared"
            statuses = set(operation["responses"])
            assert any(status.startswith("2") or status.startswith("3") for status in statuses), (method, path)
            if operation.get("security") != []:
                assert {"401", "403"} <= statuses, f"{method} {path} does not document 401/403"


def test_the_component_schemas_are_valid_json_schemas():
    for name, schema in COMPONENTS.items():
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as error:
            pytest.fail(f"{name}: {error.message}")


# Refusals by state that no JSON Schema can state, per operation (the contract's 413, 415 and 422).
REFUSED_BY_STATE = {
    ("POST", "/v1/images"): ["413", "415", "422"],  # too large, not an image, a URL not allowed or unreachable
    ("POST", "/v1/uploads/{upload_id}/complete"): ["413", "415"],  # the uploaded bytes: too large, not an image
    ("POST", "/v1/software"): ["422"],  # `after` names an unregistered software, or would make a cycle
    ("PUT", "/v1/software/{name}/jobs/{image_id}/result"): ["422"],  # a row the software's tables do not take
    # A where expression is a language (nested parentheses), which no JSON Schema pattern can state.
    ("GET", "/v1/images"): ["400"],
    ("GET", "/v1/export"): ["400"],  # and a coco export needs a table of boxes
    ("POST", "/v1/software/{name}/requeue"): ["400"],
    # An event cursor is a position: one past the last event was not made by the server (400), one
    # older than the events kept is 410.
    ("GET", "/v1/events"): ["400", "410"],
    ("GET", "/v1/events/stream"): ["400", "410"],
    # A receiver's URL that does not resolve or reaches an internal address: 422, as for uploads by URL.
    ("POST", "/v1/webhooks"): ["422"],
    ("PATCH", "/v1/webhooks/{webhook_id}"): ["422"],
    ("POST", "/v1/webhooks/{webhook_id}/replay"): ["400", "410"],
    ("POST", "/v1/retention"): ["400"],  # its where expression
    ("POST", "/v1/erasures"): ["400"],
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]  # schemathesis's own, but 5xx, which is a bug


def schemathesis_config(path: Path) -> Path:
    """A schemathesis.toml: schema-valid requests must be accepted (the statuses above besides), and
    schema-invalid ones refused with a 4xx."""
    lines = [
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {json.dumps(ACCEPTED)}",
        "",
    ]
    for (method, route), statuses in REFUSED_BY_STATE.items():
        lines += [
            "[[operations]]",
            f"include-name = {json.dumps(f'{method} {route}')}",
            f"checks.positive_data_acceptance.expected-statuses = {json.dumps(ACCEPTED + statuses)}",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@pytest.mark.fuzz
@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error_and_the_document_exactly_as_strict_as_the_server(
    start_server, db_auth_file, tmp_path
):
    """Every route, fuzzed with every check: no 5xx, answers match their documented schemas, auth is
    never ignored, every request the document allows is accepted and every one it forbids refused.

    Accepted means a 2xx, 3xx, 401, 403, 404 (a name or ID that does not exist), 409 (a stale token, a
    name taken) or 429; besides those, only a refusal by state that no JSON Schema can state
    (``REFUSED_BY_STATE``): on the upload routes 413 and 415 (bytes too large, bytes that are not an
    image) and 422 (a URL that may not be fetched); 422 for a registration whose ``after`` names an
    unregistered software, and for a result whose rows the software's tables do not take.

    The server is seeded with a software (1-second leases, so claims rarely wait) and images, so the
    generated requests reach past the 404s.
    """
    data_dir = tmp_path / "fuzz"
    server = start_server(data_dir=data_dir)
    db_flags = ["--db-auth", str(db_auth_file)] if db_auth_file else ["--data-dir", str(data_dir)]
    made = subprocess.run(
        [sys.executable, "-m", "heartbeat", "token", "create", "--role", "admin", *db_flags],
        capture_output=True,
        text=True,
        check=True,
    )
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    requests.post(
        f"{server.url}/v1/software",
        json={"name": "face_detection", "lease_seconds": 1, "tables": {"faces": {"x": "int", "label": "text"}}},
        headers=headers,
        timeout=10,
    ).raise_for_status()
    for data in distinct_images(30):
        files = {"file": ("seed.png", data, "image/png")}
        requests.post(f"{server.url}/v1/images", files=files, headers=headers, timeout=10).raise_for_status()

    report = tmp_path / "schemathesis.txt"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(schemathesis_config(tmp_path / "schemathesis.toml")),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: {headers['Authorization']}",
        "--checks",
        "all",
        "--max-examples",
        str(FUZZ_EXAMPLES),
        "--request-timeout",
        "30",
        "--max-response-time",
        "25",  # a claim may wait up to 20 s for work: that is the long poll, not slowness
        "--workers",
        "1",  # several workers trip a thread-safety bug inside hypothesis ("AST constructor recursion")
        "--suppress-health-check",
        "all",
    ]
    hooks = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=os.environ | hooks)
    report.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"schemathesis found problems (full report in {report}):\n{done.stdout[-6000:]}"
