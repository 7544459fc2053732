"""``heartbeat events``: the API's events as JSON lines, through the worker SDK; ``--follow`` goes on
until Ctrl-C, each line flushed as it comes; a mistake is one line and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from helpers import distinct_images, free_port, heartbeat

README = Path(__file__).parents[2] / "README.md"


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def upload(url: str, data: bytes, headers: dict[str, str] | None = None) -> str:
    answer = requests.post(f"{url}/v1/images", files={"file": ("p.png", data)}, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def register(url: str, name: str) -> None:
    answer = requests.post(f"{url}/v1/software", json={"name": name}, timeout=30)
    assert answer.status_code == 201, answer.text


def test_events_prints_every_kept_event_after_the_cursor_one_object_a_line_and_exits(start_server):
    url = start_server().url
    register(url, "ocr")
    ids = [upload(url, data) for data in distinct_images(2)]
    done = heartbeat("events", "--api", url, timeout=30)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    events = json_lines(done.stdout)
    assert [(event["type"], event.get("image_id")) for event in events] == [
        ("software.created", None),
        ("image.created", ids[0]),
        ("image.created", ids[1]),
    ]
    after_first = heartbeat(
        "events", "--after", events[0]["id"], "--types", "image.created", env={"HEARTBEAT_API": url}
    )
    assert json_lines(after_first.stdout) == events[1:]
    ocr = heartbeat("events", "--software", "ocr", "--api", url)
    assert json_lines(ocr.stdout) == events[:1]
    nothing_new = heartbeat("events", "--after", "now", "--api", url)
    assert (nothing_new.returncode, nothing_new.stdout) == (0, "")


def test_events_follow_prints_each_event_as_it_happens_and_ctrl_c_exits_0_quietly(start_server):
    url = start_server().url
    clean = {key: value for key, value in os.environ.items() if not key.startswith("HEARTBEAT_")}
    command = [sys.executable, "-m", "heartbeat", "events", "--follow", "--api", url]
    # Ctrl-C as a terminal sends it: a child inherits an ignored SIGINT (a suite started in the background
    # of a script has one), and Python then never raises KeyboardInterrupt. The child starts with the default.
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        try:
            image_id = upload(url, distinct_images(1)[0])  # on a new server: its first event, whenever it asks
            line = process.stdout.readline()  # its line arrives while the command runs: it was flushed
            assert (json.loads(line)["type"], json.loads(line)["image_id"]) == ("image.created", image_id)
            register(url, "ocr")
            assert json.loads(process.stdout.readline())["type"] == "software.created"
        finally:
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stderr == "" and stdout == ""


def test_events_without_a_server_or_a_token_says_so_in_one_line(start_server, create_token, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    done = heartbeat("events", "--follow", env={"HEARTBEAT_API": nowhere}, timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: no Heartbeat API answers at {nowhere} (the URL of HEARTBEAT_API)"

    data = tmp_path / "data"
    secret = create_token("reader", data)
    url = start_server(data_dir=data).url
    refused = heartbeat("events", "--api", url, timeout=30)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "401" in refused.stderr and "Traceback" not in refused.stderr
    allowed = heartbeat("events", "--api", url, env={"HEARTBEAT_TOKEN": secret}, timeout=30)
    assert allowed.returncode == 0 and allowed.stdout == "", allowed.stderr


def test_events_with_a_type_or_cursor_that_cannot_be_used_names_its_flag_in_one_line(start_server):
    for args, named in [
        (["--types", "job.done,job.nope"], "argument --types: unknown event type 'job.nope': one of image.created"),
        (["--after", "yesterday"], "argument --after: expected an event's id (a whole number) or now"),
    ]:
        done = heartbeat("events", *args, timeout=30)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith(f"heartbeat events: error: {named}"), line
    url = start_server().url
    unmade = heartbeat("events", "--after", "123456", "--api", url, timeout=30)
    assert unmade.returncode == 2 and "Traceback" not in unmade.stderr
    assert unmade.stderr.strip() == "error: cursor '123456' was not made by this server"


def test_the_readme_events_example_runs_as_written(start_server):
    """The README's section *Events*, its commands run as they are against a server with a result."""
    url = start_server().url
    register(url, "face_colours")
    image_id = upload(url, distinct_images(1)[0])
    [job] = requests.post(f"{url}/v1/software/face_colours/claim", json={}, timeout=30).json()["jobs"]
    result = {"token": job["token"], "info": {"faces": 0}}
    assert requests.put(f"{url}/v1/software/face_colours/jobs/{image_id}/result", json=result, timeout=30).ok
    section = README.read_text().split("## Events\n", 1)[1].split("\n## ", 1)[0]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env={**os.environ, "API": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    page, stream = done.stdout.split("retry: ", 1)
    assert [event["data"]["info"] for event in json.loads(page)["events"]] == [{"faces": 0}]
    assert '"type":"job.done","time":' in stream and stream.count("\nid: ") >= 4  # every event kept, as SSE
