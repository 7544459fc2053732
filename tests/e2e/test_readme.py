"""The README's first steps work as written, in order, against a real server on a fresh data dir."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import requests

README = Path(__file__).parents[2] / "README.md"
VENV_BIN = ".venv/bin/"
INSTALL_FACES = ".venv/bin/pip install -q -e '.[faces]'"
# Every curl of the README must succeed: an HTTP error fails the command, as `set -e` then fails the run.
STRICT_CURL = 'curl() { command curl --fail-with-body "$@"; }\n'


def shell_block(section: str) -> str:
    """The first ```sh block of the README's section titled ``section``."""
    text = README.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```sh\n(.*?)```", text, re.S).group(1)


def as_run_here(script: str, api: str) -> str:
    """The README's commands against ``api``, with this test's Python for ``.venv/bin``; the extra's
    install is checked instead of run (the test environment has it, and installs nothing)."""
    assert "API=http://127.0.0.1:8080" in script or "$API" in script
    assert script.count(INSTALL_FACES) <= 1
    script = script.replace(INSTALL_FACES, f"{VENV_BIN}python -c 'import skimage'")
    return script.replace("API=http://127.0.0.1:8080", f"API={api}").replace(
        VENV_BIN, f"{Path(sys.executable).parent}/"
    )


def test_the_readme_first_steps_in_order_all_succeed_on_a_fresh_data_dir(start_server, tmp_path):
    first = README.read_text().split("## First five minutes\n", 1)[1].split("\n## ", 1)[0]
    assert "make run PORT=" in first and "make run" in shell_block("First five minutes")
    server = start_server(data_dir=tmp_path / "heartbeat-data")
    flow = as_run_here(shell_block("The flow, with curl"), server.url)
    worker = as_run_here(shell_block("The example worker, and uploads from the command line"), server.url)
    folder = tmp_path / "work"
    folder.mkdir()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", STRICT_CURL + flow + worker],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "same bytes" in done.stdout
    assert '"jobs": {"face_colours": "done"}' in done.stdout
    assert "skipped photos/notes.txt: not an image file name" in done.stderr
    assert "1 uploaded (0 of them stored before), 0 failed, 1 skipped" in done.stdout

    images = requests.get(f"{server.url}/v1/images?include=jobs", timeout=10).json()["images"]
    assert {image["filename"]: image["jobs"] for image in images} == {
        "example.jpg": {"face_colours": "done"},
        "astronaut.png": {"face_colours": "done"},
    }
    rows = requests.get(f"{server.url}/v1/software/face_colours/tables/faces", timeout=10).json()["rows"]
    astronaut = next(image["id"] for image in images if image["filename"] == "astronaut.png")
    faces = [row for row in rows if row["image_id"] == astronaut]
    assert any(150 < face["x"] < 250 and 50 < face["y"] < 150 for face in faces), faces  # hers, upper middle
    assert json.loads(done.stdout.strip().splitlines()[-1])["rows"] == rows


def test_every_test_the_readme_names_as_proof_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", README.read_text())
    assert len(named) >= 8, "the Guarantees section names its tests"
    root = README.parent
    for path, test in named:
        source = (root / path).read_text()
        assert not test or re.search(rf"^def {test}\(", source, re.M), f"{path}::{test} does not exist"


def test_the_readme_sends_users_to_docs_they_have():
    text = README.read_text()
    assert "shared folder" not in text and "CONTRACT.md" not in text
    for link in re.findall(r"\]\((docs/[\w./-]+)\)", text):
        assert (README.parent / link).is_file(), link
    assert "/docs" in text and "/openapi.json" in text


def test_the_api_page_for_users_names_every_route_the_server_serves():
    from heartbeat.api.routes import ROUTES

    page = (README.parent / "docs" / "api.md").read_text()
    for route in ROUTES:
        path = re.sub(r"\{(\w+)(?::\w+)?\}", r"{\1}", route.path).replace("{image_id}", "{id}")
        # a job route may be written from its software on: `.../jobs/{id}/extend`
        forms = {path, ".../" + path.removeprefix("/v1/software/{name}/")}
        assert any(f"{form}`" in page or f"{form}," in page for form in forms), f"docs/api.md does not name {path}"
