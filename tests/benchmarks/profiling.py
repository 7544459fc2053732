"""py-spy on the API process while it serves a load, and what its samples say.

``py-spy record --nonblocking`` samples the running ``heartbeat serve`` (never pausing it) into
collapsed stacks, in one of two ways: ``--gil`` samples only the thread that holds the GIL, so its
shares are shares of the Python CPU time, the one core a waitress process can use (what caps its
throughput); without it, every thread not idle is sampled, including threads blocked on a lock, on
MariaDB's answer or waiting for the GIL (where a request's time goes). The summary gives each
package's share of the samples by the frame on top of the stack (where the time is spent), the top
functions, and the share of the samples that pass through each of our own functions (what it
costs, everything it calls included).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Only waitress's main thread runs under these.
ENTRY_POINTS = ("heartbeat/__main__.py", "heartbeat/cli/__init__.py", "heartbeat/cli/commands.py")
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def start(pid: int, seconds: float, output: Path, *, gil: bool, rate: int = 250) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` for ``seconds`` in the background, into ``output`` (raw collapsed stacks)."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("py-spy is not installed: `make bench` installs it with the bench extra")
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(round(seconds)), "--rate", str(rate)]
    command += ["--nonblocking", "--format", "raw", "--output", str(output), *(["--gil"] if gil else [])]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _frames(stack: str) -> list[tuple[str, str]]:
    frames = []
    for text in stack.split(";"):
        match = FRAME.match(text)
        if match:
            frames.append((match["function"], match["file"]))
    return frames


def _package(file: str) -> str:
    """``peewee.py`` -> peewee, ``heartbeat/api/jobs.py`` -> heartbeat.api, ``json/encoder.py`` -> json."""
    parts = file.removesuffix(".py").split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    if parts[0] == "heartbeat" and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0]


def summarize(raw: Path, top: int = 15) -> list[str]:
    """Lines: samples by package of the top frame, then our functions by inclusive share."""
    by_package: collections.Counter[str] = collections.Counter()
    by_leaf: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = _frames(stack)
        if not frames or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        function, file = frames[-1]
        by_package[_package(file)] += count
        by_leaf[f"{function} ({file})"] += count
        if any(file.endswith(ENTRY_POINTS) for _, file in frames):
            ours["(waitress's main thread: accepting, polling and writing connections)"] += count
            continue
        for name in {f"{function} ({file})" for function, file in frames if "heartbeat/" in file}:
            ours[name] += count
    if not total:
        return ["no samples (is ptrace allowed here?)"]

    def share(counter: collections.Counter[str]) -> list[str]:
        return [f"  {count / total:6.1%}  {name}" for name, count in counter.most_common(top)]

    return [
        f"{total} samples",
        "by package, where the time is spent (top frame):",
        *share(by_package),
        "by function, where the time is spent (top frame):",
        *share(by_leaf),
        "heartbeat's own functions, with all they call (inclusive):",
        *share(ours),
    ]


# The parts of a claim+submit cycle (docs/performance.md): a sample counts for the first part whose
# marker is in its stack (``top_frame``: in its top frame only); a sample of no part ran in a
# background thread.
CYCLE_PARTS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("statements on the wire (PyMySQL: write, wait, read)", ("pymysql/",), False),
    ("access log line and latency histogram", ("RequestLog.",), False),
    ("token or open-server check (Python around its statement)", ("Authorization.",), False),
    ("request body: JSON parse, storable check, JSON Schema", ("read_body",), False),
    ("claim answer: the image's row, the presigned URL", ("JobClaims._describe",), False),
    ("answer body: JSON encoding", ("render_body", "App._get_body"), False),
    ("statement plumbing: transactions, cursors, rows (Peewee, heartbeat.db)", ("peewee.py", "heartbeat/db/"), True),
    ("claim, submit, events: the logic inside their transactions (our Python)", ("transactional",), False),
    ("Falcon: routing, middleware, request and response", ("falcon/", "heartbeat/api/"), False),
    ("waitress: task thread (WSGI environ, headers)", ("handler_thread",), False),
    ("waitress: I/O thread (poll, read, write)", ENTRY_POINTS, False),
)
BACKGROUND = "background threads: event sequencer, webhook sender, watcher"


def _cycle_part(stack: str) -> str:
    top = stack.rpartition(";")[2]
    for name, markers, top_frame_only in CYCLE_PARTS:
        if any(marker in (top if top_frame_only else stack) for marker in markers):
            return name
    return BACKGROUND


def cycle_parts(raw: Path, microseconds_per_cycle: float) -> list[str]:
    """Lines: each part of :data:`CYCLE_PARTS` in microseconds of API CPU a cycle (its share of the
    samples times ``microseconds_per_cycle``), for a ``--gil`` recording of the claim load."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        counts[_cycle_part(stack)] += int(count_text)
    total = sum(counts.values())
    if not total:
        return ["no samples (is ptrace allowed here?)"]
    names = [name for name, _, _ in CYCLE_PARTS] + [BACKGROUND]
    lines = [f"{counts[name] / total * microseconds_per_cycle:6.0f} us  {name}" for name in names]
    return [*lines, f"{microseconds_per_cycle:6.0f} us  API CPU per cycle"]
