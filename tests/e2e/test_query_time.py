"""``heartbeat serve --query-seconds``: no statement of a query holds the database longer; the
answer is 503 with ``Retry-After``, and the server goes on serving."""

from __future__ import annotations

import requests

from helpers import image_bytes

SLOW_WHERE = " or ".join(f"sw.t.count(x = -{n} and y > 0) > 0" for n in range(1, 121))


def test_serve_stops_a_query_past_query_seconds_with_503(start_server):
    server = start_server("--query-seconds", "0.01")
    api = f"{server.url}/v1"
    tables = {"t": {"x": "int", "y": "float"}}
    assert requests.post(f"{api}/software", json={"name": "sw", "tables": tables}, timeout=10).status_code == 201
    files = {"file": ("a.png", image_bytes(fmt="PNG"))}
    image_id = requests.post(f"{api}/images", files=files, timeout=10).json()["id"]
    job = requests.post(f"{api}/software/sw/claim", json={"max": 1}, timeout=10).json()["jobs"][0]
    rows = [{"x": n, "y": float(n)} for n in range(10_000)]
    body = {"token": job["token"], "info": {}, "rows": {"t": rows}}
    assert requests.put(f"{api}/software/sw/jobs/{image_id}/result", json=body, timeout=30).status_code == 200

    slow = requests.get(f"{api}/images", params={"where": SLOW_WHERE}, timeout=30)
    assert slow.status_code == 503, slow.text
    assert slow.headers.get("Retry-After")
    assert "HEARTBEAT_QUERY_SECONDS" in slow.json()["description"]
    quick = requests.get(f"{api}/images", params={"where": "sw.status = 'done'"}, timeout=10)
    assert quick.status_code == 200 and [image["id"] for image in quick.json()["images"]] == [image_id]
