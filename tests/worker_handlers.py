"""Handlers that ``heartbeat worker run`` loads in the tests (with the tests folder on PYTHONPATH)."""

from __future__ import annotations

import os
import socket
from typing import Any


def gated(image_bytes: bytes, image: Any) -> dict[str, int]:
    """Tell the test which image started (over the socket at HEARTBEAT_TEST_GATE), then wait for its go."""
    host, port = os.environ["HEARTBEAT_TEST_GATE"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as gate, gate.makefile("rw") as talk:
        talk.write(f"{image.id}\n")
        talk.flush()
        assert talk.readline().strip() == "go"
    return {"size": len(image_bytes)}
