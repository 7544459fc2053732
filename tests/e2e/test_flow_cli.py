"""Flow control from the command line: ``heartbeat software add/set --max-in-flight --rate`` on the
database directly, seen by a real server's claims; ``software list`` shows the limits and the jobs in
flight; a bad value names its flag in one line, exit 2, and changes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartbeat.worker import Client
from helpers import distinct_images, heartbeat

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(start_server, session_data_dir) -> Iterator[Client]:
    """The SDK's client on a real server over the test database (the one ``db_flags`` names)."""
    with Client(start_server(data_dir=session_data_dir).url) as client:
        yield client


def listed(db_flags: list[str]) -> dict[str, dict[str, str]]:
    """``heartbeat software list`` as {name: {field: value}}, values as printed."""
    done = heartbeat("software", "list", *db_flags)
    assert done.returncode == 0, done.stderr
    listing = {}
    for line in done.stdout.splitlines():
        name, *fields = line.split("\t")
        listing[name] = dict(field.split("=", 1) for field in fields)
    return listing


def run(*args: str) -> str:
    done = heartbeat(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_software_add_with_limits_is_held_to_them_by_the_server_and_list_shows_them(api, db_flags):
    added = run("software", "add", "ocr", "--max-in-flight", "2", "--rate", "30/min", *db_flags)
    assert added == "registered ocr (lease 300s, 3 attempts, max in flight 2, rate 30/min)"
    software = api.software("ocr")
    assert (software.max_in_flight, software.rate, software.in_flight) == (2, {"per_minute": 30}, 0)
    for data in distinct_images(3):
        api.upload(data)

    first = api.claim_jobs("ocr", 5)
    assert len(first.jobs) == 2, "cut to the room left"
    held = api.claim_jobs("ocr", 1)
    assert held.jobs == [] and held.retry_after_seconds is not None and held.retry_after_seconds >= 1
    row = listed(db_flags)["ocr"]
    assert (row["pending"], row["claimed"]) == ("1", "2")
    assert (row["in_flight"], row["max_in_flight"], row["rate"]) == ("2", "2", "30/min")
    assert api.software("ocr").held_back

    api.release("ocr", first.jobs[0].image_id, first.jobs[0].token)  # room freed at once
    assert listed(db_flags)["ocr"]["in_flight"] == "1"
    assert len(api.claim("ocr", 5)) == 1


def test_software_set_changes_lifts_and_keeps_limits(api, db_flags):
    run("software", "add", "ocr", *db_flags)
    assert "in_flight" not in listed(db_flags)["ocr"], "a software without limits lists as before"

    changed = run("software", "set", "ocr", "--max-in-flight", "4", "--rate", "10/s", *db_flags)
    assert changed == "ocr: version 1, 0 pending, 0 outdated, max in flight 4, rate 10/s"
    kept = run("software", "set", "ocr", "--lease-seconds", "60", *db_flags)  # limits not given: kept
    assert kept.endswith("max in flight 4, rate 10/s")
    software = api.software("ocr")
    assert (software.max_in_flight, software.rate, software.lease_seconds) == (4, {"per_second": 10}, 60)

    lifted = run("software", "set", "ocr", "--rate", "none", *db_flags)
    assert lifted.endswith("max in flight 4, rate none")
    assert (api.software("ocr").max_in_flight, api.software("ocr").rate) == (4, None)
    row = listed(db_flags)["ocr"]
    assert (row["max_in_flight"], row["rate"]) == ("4", "none")

    run("software", "set", "ocr", "--rate", "500/h", *db_flags)
    assert run("software", "set", "ocr", "--max-in-flight", "none", *db_flags).endswith(
        "max in flight none, rate 500/h"
    )
    assert run("software", "set", "ocr", "--rate", "NONE", *db_flags).endswith(", no limits")
    assert (api.software("ocr").max_in_flight, api.software("ocr").rate) == (None, None)
    assert "in_flight" not in listed(db_flags)["ocr"]


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--max-in-flight", "0", "argument --max-in-flight: expected a number from 1 to 1000000, not '0'"),
        ("--max-in-flight", "many", "argument --max-in-flight: expected a whole number, not 'many'"),
        ("--max-in-flight", "1000001", "argument --max-in-flight: expected a number from 1 to 1000000"),
        ("--rate", "30", "argument --rate: expected N/s, N/min or N/h (or none, for no limit), not '30'"),
        ("--rate", "30/day", "argument --rate: expected N/s, N/min or N/h (or none, for no limit), not '30/day'"),
        ("--rate", "0/min", "argument --rate: expected a number from 1 to 1000000000 before the slash, not '0/min'"),
        ("--rate", "x/min", "argument --rate: expected a whole number before the slash, not 'x/min'"),
    ],
    ids=["in-flight-zero", "in-flight-word", "in-flight-too-large", "rate-no-unit", "rate-day", "rate-zero", "rate-x"],
)
def test_a_bad_limit_names_its_flag_in_one_line_exits_2_and_changes_nothing(api, db_flags, flag, value, named):
    run("software", "add", "ocr", "--max-in-flight", "3", "--rate", "5/s", *db_flags)
    for command in (["software", "add", "other"], ["software", "set", "ocr"]):
        done = heartbeat(*command, flag, value, *db_flags)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        [line] = done.stderr.strip().splitlines()
        assert named in line, line
    assert list(listed(db_flags)) == ["ocr"]
    software = api.software("ocr")
    assert (software.max_in_flight, software.rate) == (3, {"per_second": 5})


@pytest.mark.parametrize(
    ("document", "section"),
    [("README.md", "## Flow control: at most N at once, R per minute\n"), ("docs/flow-control.md", "")],
    ids=["readme", "docs"],
)
def test_the_flow_control_examples_of_the_readme_and_the_docs_run_as_written(
    start_server, db_auth_file, tmp_path, document, section
):
    text = (ROOT / document).read_text()
    block = re.search(r"```sh\n(.*?)```", text.split(section, 1)[1] if section else text, re.S).group(1)
    server = start_server(data_dir=tmp_path / "heartbeat-data")  # where the CLI looks by default
    env = os.environ | {"API": server.url, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if db_auth_file is not None:
        env["HEARTBEAT_DB_AUTH"] = str(db_auth_file)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", 'curl() { command curl --fail-with-body "$@"; }\n' + block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with Client(server.url) as client:
        limited = {item.name: (item.max_in_flight, item.rate) for item in client.software_list()}
    if document == "README.md":
        assert limited == {"vision_api": (8, {"per_second": 50})}
    else:
        assert limited == {"vision_api": (4, None), "gpu_licences": (8, None)}
