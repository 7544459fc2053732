"""``heartbeat retention add|list|remove``, ``heartbeat erase`` and ``heartbeat audit``, on the
database (and, for ``erase``, the store) the settings name, as ``heartbeat software`` does.

``erase`` starts an erasure and runs it here, with a progress bar, unless a server on the same
database holds the privacy chores' lease (``privacy/chores.py``): it then shows the server's progress
from the receipt. Either way it ends by printing the receipt, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from heartbeat.cli.commands import _connect, _service
from heartbeat.cli.parser import settings_from_args
from heartbeat.errors import HeartbeatError

POLL_SECONDS = 0.5  # how often the receipt is read while a server erases


def retention(args: argparse.Namespace) -> int:
    from heartbeat.privacy.retention import describe

    settings = settings_from_args(args)
    database = _connect(settings, create=args.retention_command == "add")
    with database.connection():
        policies = _service(settings, database).retention
        try:
            if args.retention_command == "add":
                policy = policies.add(args.name, args.where, args.max_age)
                print(f"added retention policy {policy.name}: images older than {policy.max_age_seconds:.0f} s")
            elif args.retention_command == "remove":
                policies.remove(args.name)
                print(f"removed retention policy {args.name}")
            else:
                cursor: str | None = None
                while True:
                    page, cursor = policies.page(cursor, 1000)
                    for policy in page:
                        shown = describe(policy)
                        last = "never" if shown["last_run_at"] is None else str(int(shown["last_run_at"]))
                        print("\t".join([shown["name"], f"{shown['max_age_seconds']:.0f}", last, shown["where"]]))
                    if cursor is None:
                        break
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
    return 0


def erase(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from heartbeat.privacy.chores import LEASE_SECONDS, PRIVACY
    from heartbeat.privacy.erasure import describe

    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        service = _service(settings, database)
        erasures, leases = service.erasures, service.privacy_chores.leases
        try:
            started = erasures.start(expression=args.where, image_ids=args.image_ids)
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
        waiting = threading.Event()
        with tqdm(total=started.matched or None, unit="image", file=sys.stderr) as bar:
            receipt = erasures.get(started.id)
            try:
                while receipt.status != "done":
                    if leases.take(PRIVACY, LEASE_SECONDS):
                        erasures.step(started.id)
                    else:  # a server erases it: follow its receipt
                        waiting.wait(POLL_SECONDS)
                    receipt = erasures.get(started.id)
                    bar.total = max(receipt.matched, 1)
                    bar.update(receipt.erased - bar.n)
            finally:
                leases.give_up(PRIVACY)
    print(json.dumps(describe(receipt)))
    return 0


def audit(args: argparse.Namespace) -> int:
    from heartbeat.privacy.audit import AuditFilter, describe_entry

    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        log = _service(settings, database).audit
        which = AuditFilter(image_id=args.image_id, token_id=args.token_id, action=args.action)
        cursor: str | None = None
        while True:
            entries, cursor = log.page(which, cursor, 1000)
            for entry in entries:
                print(json.dumps(describe_entry(entry)))
            if cursor is None:
                return 0
