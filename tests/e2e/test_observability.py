"""What an operator reads: Prometheus metrics with exact counts, and access logs (text or JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import parse_qsl, urlsplit

import requests
from prometheus_client.parser import text_string_to_metric_families

from helpers import claim, distinct_images, free_port, register, upload


def scrape(get) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:  # type: ignore[no-untyped-def]
    """Every sample of ``GET /metrics`` as ``{(name, sorted labels): value}``."""
    samples = {}
    for family in text_string_to_metric_families(get("/metrics")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_exactly_the_uploads_claims_submits_failures_and_lease_expiries(client, clock):
    images = distinct_images(5)
    for data in images:
        assert upload(client, data).status_code == 201
    assert upload(client, images[0]).status_code == 200  # a duplicate
    register(client, "ocr", max_attempts=1, lease_seconds=60)

    first, second, _expires = claim(client, "ocr", max=3)
    client.simulate_put(f"/v1/software/ocr/jobs/{first['image_id']}/result", json={"token": first["token"], "info": 1})
    client.simulate_post(
        f"/v1/software/ocr/jobs/{second['image_id']}/fail",
        json={"token": second["token"], "error": "x", "retry": False},
    )
    clock.advance(61)  # the third job's lease runs out on its last attempt: failed at the next claim
    fourth, fifth = claim(client, "ocr", max=5)
    batch = [{"image_id": job["image_id"], "token": job["token"], "info": None} for job in (fourth, fifth)]
    assert client.simulate_post("/v1/software/ocr/results", json={"results": batch}).status_code == 200
    client.simulate_get("/v1/images/nope")

    metrics = scrape(lambda path: client.simulate_get(path).text)
    ocr = (("software", "ocr"),)
    assert metrics[("heartbeat_uploads_total", ())] == 5
    assert metrics[("heartbeat_duplicates_total", ())] == 1
    assert metrics[("heartbeat_claims_total", ocr)] == 5
    assert metrics[("heartbeat_submits_total", ocr)] == 3
    assert metrics[("heartbeat_failures_total", ocr)] == 1
    assert metrics[("heartbeat_lease_expiries_total", ocr)] == 1
    for status, count in {"pending": 0, "claimed": 0, "done": 3, "failed": 2, "skipped": 0}.items():
        assert metrics[("heartbeat_jobs", (("software", "ocr"), ("status", status)))] == count
    assert metrics[("heartbeat_software_paused", ocr)] == 0
    jobs = [value for (name, labels), value in metrics.items() if name == "heartbeat_jobs" and ocr[0] in labels]
    assert sum(jobs) == 5, "a sum over statuses counts each job once"
    assert metrics[("process_resident_memory_bytes", ())] > 0  # the process's own, beside ours
    assert metrics[("process_open_fds", ())] > 0
    upload_requests = (("method", "POST"), ("route", "/v1/images"), ("status", "201"))
    assert metrics[("heartbeat_request_duration_seconds_count", upload_requests)] == 5
    not_found = (("method", "GET"), ("route", "/v1/images/{image_id}"), ("status", "404"))
    assert metrics[("heartbeat_request_duration_seconds_count", not_found)] == 1


def test_jobs_done_by_an_older_version_are_a_part_of_done_not_a_status_of_their_own(client):
    register(client, "ocr")
    for data in distinct_images(3):
        upload(client, data)
    for job in claim(client, "ocr", max=2):
        client.simulate_put(f"/v1/software/ocr/jobs/{job['image_id']}/result", json={"token": job["token"], "info": 1})
    assert client.simulate_patch("/v1/software/ocr", json={"version": "2", "recompute": False}).status_code == 200
    metrics = scrape(lambda path: client.simulate_get(path).text)
    jobs = {dict(labels)["status"]: value for (name, labels), value in metrics.items() if name == "heartbeat_jobs"}
    assert jobs["done"] == 2 and jobs["pending"] == 1 and "outdated" not in jobs
    assert sum(jobs.values()) == 3
    assert metrics[("heartbeat_jobs_outdated", (("software", "ocr"),))] == 2


def test_the_pages_and_their_files_are_measured_by_their_route_not_as_unmatched(client):
    for path in ("/", "/dashboard/app.js", "/dashboard/style.css", "/docs", "/docs/assets/swagger-ui.css"):
        assert client.simulate_get(path).status_code == 200, path
    metrics = scrape(lambda path: client.simulate_get(path).text)
    requests_by_route = {
        dict(labels)["route"]: value
        for (name, labels), value in metrics.items()
        if name == "heartbeat_request_duration_seconds_count"
    }
    assert requests_by_route == {"/": 1, "/dashboard/{name}": 2, "/docs": 1, "/docs/assets/{name}": 1}


def test_every_api_process_reports_the_same_job_gauges_from_the_shared_database(start_server, tmp_path):
    shared = tmp_path / "shared"
    servers = [start_server(data_dir=shared), start_server(data_dir=shared)]
    base = servers[0].url
    requests.post(f"{base}/v1/software", json={"name": "ocr"}, timeout=10).raise_for_status()
    for data in distinct_images(3):
        requests.post(f"{base}/v1/images", files={"file": ("a.png", data)}, timeout=10).raise_for_status()
    requests.post(f"{servers[1].url}/v1/software/ocr/claim", json={"max": 1}, timeout=10).raise_for_status()
    for server in servers:
        metrics = scrape(lambda path, url=server.url: requests.get(url + path, timeout=10).text)
        gauges = {
            status: metrics[("heartbeat_jobs", (("software", "ocr"), ("status", status)))]
            for status in ("pending", "claimed")
        }
        assert gauges == {"pending": 2, "claimed": 1}


def test_the_json_access_log_has_request_id_route_status_and_duration_but_no_secret(
    start_server, create_token, tmp_path
):
    data = tmp_path / "data"
    secret = create_token("admin", data)
    server = start_server("--log-format", "json", data_dir=data)
    auth = {"Authorization": f"Bearer {secret}"}
    answer = requests.get(f"{server.url}/v1/images/missing", headers=auth | {"X-Request-ID": "trace-42"}, timeout=10)
    assert answer.status_code == 404
    assert answer.headers["X-Request-ID"] == "trace-42"
    image = requests.post(
        f"{server.url}/v1/images", files={"file": ("a.png", distinct_images(1)[0])}, headers=auth, timeout=10
    )
    signed = requests.get(f"{server.url}/v1/images/{image.json()['id']}/url", headers=auth, timeout=10).json()["url"]
    assert requests.get(signed, timeout=10).status_code == 200
    server.stop()

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("name") == "heartbeat.access"]
    [traced] = [line for line in access if line["request_id"] == "trace-42"]
    assert traced["route"] == "/v1/images/{image_id}"
    assert (traced["method"], traced["status"], traced["level"]) == ("GET", 404, "INFO")
    assert traced["duration_ms"] >= 0
    routes = {line["route"] for line in access}
    assert routes >= {"/v1/images", "/v1/images/{image_id}/url"}
    assert ("/v1/blobs/{key:path}" in routes) == signed.startswith(server.url)  # local storage: served by the API
    assert all(len(line["request_id"]) == 16 for line in access if line["request_id"] != "trace-42")
    [signature] = [value for name, value in parse_qsl(urlsplit(signed).query) if "signature" in name.lower()]
    assert secret not in server.log() and signature not in server.log()


def test_the_text_access_log_names_route_status_and_request_id(start_server):
    server = start_server()
    requests.get(f"{server.url}/v1/software/nope", headers={"X-Request-ID": "abc-1"}, timeout=10)
    server.stop()
    assert "heartbeat.access: GET /v1/software/{name} 404" in server.log()
    assert "request_id=abc-1" in server.log()


def test_with_json_logs_every_line_on_standard_error_is_json_from_the_first(tmp_path):
    """A log shipper (or jq) reads standard error from its first line: the fresh data dir's notice too."""
    port = free_port()
    command = [sys.executable, "-m", "heartbeat", "serve", "--port", str(port), "--log-format", "json"]
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        server = subprocess.Popen([*command, "--data-dir", str(tmp_path / "new")], stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    time.sleep(0.05)  # not listening yet: nothing to wait on but the clock
            requests.get(f"http://127.0.0.1:{port}/v1/images", timeout=10).raise_for_status()
        finally:
            server.terminate()
            server.wait(timeout=30)
    lines = (tmp_path / "err").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # each line, the first included
    assert "created a new Heartbeat database" in records[0]["message"]
    assert any(record.get("route") == "/v1/images" for record in records)
