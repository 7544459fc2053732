"""The local three-node MariaDB Galera test cluster (`.ci/galera-up`, `.ci/galera-down`), for tests.

Node n (1..3) is ``NODES[n - 1]``: SQL on 127.0.0.1:4305+n, user ``root`` without a password, database ``test``.
The scripts need root (they start the nodes as the ``mysql`` user); every call blocks until the scripts are done.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pymysql

NODES: list[tuple[str, int]] = [("127.0.0.1", 4306), ("127.0.0.1", 4307), ("127.0.0.1", 4308)]
"""(host, SQL port) of nodes 1, 2 and 3."""

_CI = Path(__file__).resolve().parent.parent / ".ci"
_TIMEOUT_S = 600.0
"""Upper bound, in seconds, for one script run (each of its waits has its own 120 s limit)."""


def _run(script: str, *args: str) -> str:
    """Run ``.ci/<script> [args]``; return its stdout, raise ``RuntimeError`` with stdout and stderr on failure."""
    cmd = [str(_CI / script), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(cmd)} did not finish in {_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


def _check_node(n: int) -> None:
    if n not in (1, 2, 3):
        raise ValueError(f"node number must be 1, 2 or 3, not {n!r}")


def ensure_up() -> None:
    """Bring the whole cluster up (a no-op, ~0.3 s, if all 3 nodes are already synced; ~20 s cold, ~11 s from
    existing datadirs). On return every node reports wsrep_cluster_size=3, Synced, wsrep_ready=ON."""
    _run("galera-up")


def stop_node(n: int) -> None:
    """Stop node ``n`` (1..3) cleanly and wait until its process is gone; the other two keep the cluster (size 2).
    A no-op if the node is not running."""
    _check_node(n)
    _run("galera-down", str(n))


def start_node(n: int) -> None:
    """Start node ``n`` (1..3) again and wait until it has rejoined (IST, else SST) and is Synced, with a cluster size
    equal to the number of running nodes. A no-op if it already runs and is synced. Raises if no other node is up."""
    _check_node(n)
    _run("galera-up", str(n))


def stop_all() -> None:
    """Stop the whole cluster (nodes 3, 2, then 1), e.g. at the end of a session to give the memory back."""
    _run("galera-down")


def status(port: int) -> dict[str, str]:
    """``SHOW GLOBAL STATUS LIKE 'wsrep_%'`` of the node on 127.0.0.1:``port``, as {variable name: value}, both str.

    E.g. ``status(4306)["wsrep_cluster_size"] == "3"``, ``["wsrep_local_state_comment"] == "Synced"``,
    ``["wsrep_ready"] == "ON"``, ``["wsrep_cluster_status"] == "Primary"``. Raises ``pymysql.MySQLError`` if the node
    does not answer within 5 s.
    """
    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password="", connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'wsrep\\_%'")
            return {str(name): "" if value is None else str(value) for name, value in cur.fetchall()}
    finally:
        conn.close()
