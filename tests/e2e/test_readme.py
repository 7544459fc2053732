"""The README's curl walk-through works as written, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def walkthrough() -> str:
    section = README.read_text().split("## The flow, with curl", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readme_walkthrough_registers_uploads_claims_fetches_submits_and_reads(start_server, tmp_path):
    server = start_server()
    script = walkthrough()
    assert "API=http://127.0.0.1:8080" in script
    script = script.replace("API=http://127.0.0.1:8080", f"API={server.url}").replace(
        ".venv/bin/python", sys.executable
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "same bytes" in done.stdout
    assert '"jobs": {"face_detection": "done"}' in done.stdout
    assert '"status": "done"' in done.stdout
    assert '"rows": [{"id": 1, "image_id":' in done.stdout


def test_every_test_the_readme_names_as_proof_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", README.read_text())
    assert len(named) >= 8, "the Guarantees section names its tests"
    root = README.parent
    for path, test in named:
        source = (root / path).read_text()
        assert not test or re.search(rf"^def {test}\(", source, re.M), f"{path}::{test} does not exist"
