"""``serve --processes N`` keeps its counters in a folder it removes on exit; a supervisor killed
outright leaves it, and the next one to start removes it. A folder is known stale by its lock, which
the kernel releases when its supervisor dies, never by a PID (another PID namespace sharing /tmp has
PIDs of its own)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from heartbeat.server.supervisor import (
    METRICS_DIR_LOCK,
    METRICS_DIR_PREFIX,
    UNLOCKED_GRACE_SECONDS,
    lock_metrics_dir,
    remove_stale_metrics_dirs,
)


def make(folder: Path, name: str, *, lock_file: bool) -> Path:
    made = folder / f"{METRICS_DIR_PREFIX}{name}"
    made.mkdir()
    (made / "counter_1.db").write_bytes(b"x")
    if lock_file:
        (made / METRICS_DIR_LOCK).touch()
    return made


def test_only_folders_whose_lock_nobody_holds_or_old_ones_without_a_lock_are_removed(tmp_path):
    running = make(tmp_path, "running", lock_file=False)
    held = lock_metrics_dir(str(running))  # its supervisor runs (this process holds the lock)
    killed = make(tmp_path, "killed", lock_file=True)  # its supervisor died: nobody holds the lock
    starting = make(tmp_path, "starting", lock_file=False)  # made a moment ago, lock not yet taken
    older = make(tmp_path, "older", lock_file=False)  # an older release's, long gone
    past = time.time() - UNLOCKED_GRACE_SECONDS - 60
    os.utime(older, (past, past))
    other = tmp_path / "heartbeat-data"
    other.mkdir()
    try:
        removed = remove_stale_metrics_dirs(str(tmp_path), time.time())
        assert sorted(removed) == [killed.name, older.name]
        assert running.is_dir() and starting.is_dir() and other.is_dir()
        assert not killed.exists() and not older.exists()
    finally:
        os.close(held)
    # Once its supervisor is gone (the lock released), the folder goes too.
    assert remove_stale_metrics_dirs(str(tmp_path), time.time()) == [running.name]


def test_the_lock_is_held_against_another_open_of_the_same_file(tmp_path):
    folder = make(tmp_path, "one", lock_file=False)
    held = lock_metrics_dir(str(folder))
    other = os.open(folder / METRICS_DIR_LOCK, os.O_RDWR)
    try:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            raise AssertionError("the lock was taken twice")
        except BlockingIOError:
            pass
    finally:
        os.close(other)
        os.close(held)
