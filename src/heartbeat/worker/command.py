"""``heartbeat worker run module:function``: what the command does once its flags are read."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

from heartbeat.worker.client import Client
from heartbeat.worker.exceptions import Conflict, HeartbeatError, NotFound
from heartbeat.worker.runner import Handler, Worker

log = logging.getLogger("heartbeat.worker")


def load_attribute(target: str) -> Any:
    """``package.module:name`` imported; the current directory is searched first, as ``python -m`` does.

    A DeprecationWarning raised by the import is logged: Python hides those outside ``__main__``, and
    the person who typed the name is the one who must change it.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:function, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always", DeprecationWarning)
        value: Any = importlib.import_module(module_name)
    for warning in raised:
        log.warning("%s: %s", warning.category.__name__, warning.message)
    for part in attribute.split("."):
        value = getattr(value, part)
    return value


def run_worker(
    target: str,
    *,
    software: str,
    api_url: str,
    token: str | None,
    concurrency: int = 1,
    batch: int = 1,
    lease_seconds: int | None = None,
    wait_seconds: float = 5.0,
    exit_when_idle: bool = False,
    give_up_seconds: float = 30.0,
    register: bool = False,
) -> int:
    """Run the handler named by ``target`` on ``software``'s jobs until SIGTERM/SIGINT; the exit status."""
    try:
        handler: Handler = load_attribute(target)
        description = dict(load_attribute(target.partition(":")[0] + ":SOFTWARE")) if register else None
    except (ImportError, AttributeError, ValueError, TypeError) as error:
        print(f"error: cannot load {target}: {error}", file=sys.stderr)
        return 2
    if not callable(handler):
        print(f"error: {target} is not a function", file=sys.stderr)
        return 2
    # The worker says in one line when the API does not answer; urllib3's own line for each of its
    # retries under it would say it four times more.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    client = Client(api_url, token)
    try:
        if description is not None:
            _register_if_missing(client, software, description)
        worker = Worker(
            client,
            software,
            handler,
            concurrency=concurrency,
            batch=batch,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            give_up_seconds=give_up_seconds,
        )
        log.info(
            "working on %s at %s with %s (concurrency %d, batch %d)", software, api_url, target, concurrency, batch
        )
        worker.run(exit_when_idle=exit_when_idle)
    except NotFound as error:
        print(f"error: {error.description} (register it with `heartbeat software add {software}`)", file=sys.stderr)
        return 1
    except HeartbeatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    log.info("stopped; nothing left in hand")
    return 0


def _register_if_missing(client: Client, software: str, description: dict[str, Any]) -> None:
    """Register ``software`` as its module's ``SOFTWARE`` dict describes it, unless it exists (asked in
    one call: two workers starting at once must not both try, and one of them fail)."""
    try:
        client.register(**(description | {"name": software}))
        log.info("registered %s", software)
    except Conflict:
        pass  # registered already
