"""``heartbeat upload PATH...``: files and folders uploaded over HTTP, with a progress bar."""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
from collections.abc import Sequence
from pathlib import Path

from heartbeat.ingest.image_types import IMAGE_SUFFIXES


def _upload_targets(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(the files to send, the files of the folders that are not named as pictures: skipped).

    A file named on the command line is sent whatever its name: the server says what it is.
    """
    targets: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                (targets if found.suffix.lower() in IMAGE_SUFFIXES else skipped).append(found)
        else:
            targets.append(path)
    return targets, skipped


def upload(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from heartbeat.worker import Client, HeartbeatError, ServerUnavailable

    targets, skipped = _upload_targets(args.paths)
    suffixes = " ".join(sorted(IMAGE_SUFFIXES))
    skipped_lines = [f"skipped {path}: not an image file name ({suffixes})" for path in skipped]
    if not targets:
        for line in skipped_lines:
            print(line, file=sys.stderr)
        print(f"error: no image files in {', '.join(str(path) for path in args.paths)}", file=sys.stderr)
        return 1
    client = Client(args.api, args.token, retries=2)
    try:
        client.health()  # nothing listening: one line now, rather than a progress bar of failures
    except ServerUnavailable:
        print(f"error: no Heartbeat API answers at {args.api} (the URL of {args.api_given_as})", file=sys.stderr)
        return 1
    except HeartbeatError as error:
        print(f"error: {args.api} ({args.api_given_as}) is not a Heartbeat API: {error}", file=sys.stderr)
        return 1

    def send(path: Path) -> tuple[str | None, bool]:
        """(what went wrong, or None; whether the server had these bytes already)."""
        try:
            return None, bool(client.upload(path, origin=args.origin).duplicate)
        except (OSError, HeartbeatError) as error:
            return str(error), False

    failures: list[tuple[Path, str]] = []
    duplicates = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
        futures = {pool.submit(send, path): path for path in targets}
        with tqdm(total=len(targets), unit="image", desc="uploading") as progress:
            for future in concurrent.futures.as_completed(futures):
                failure, duplicate = future.result()
                if failure is not None:
                    failures.append((futures[future], failure))
                duplicates += duplicate
                progress.update()
    print(
        f"{len(targets) - len(failures)} uploaded ({duplicates} of them stored before), {len(failures)} failed"
        + (f", {len(skipped)} skipped" if skipped else "")
    )
    for path, failure in sorted(failures):
        print(f"  {path}: {failure}", file=sys.stderr)
    for line in skipped_lines:  # at the end, with the failures: what a user reads last
        print(line, file=sys.stderr)
    return 1 if failures else 0
