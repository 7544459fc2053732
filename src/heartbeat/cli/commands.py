"""What each command does, on the database, the store or the API the settings name."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heartbeat.cli.parser import NO_LIMIT, PLACEHOLDER_MARK, rate_text, settings_from_args
from heartbeat.config import SettingError, Settings
from heartbeat.logs import configure_logging
from heartbeat.private_files import private_dir

if TYPE_CHECKING:
    from heartbeat.catalog.picture_folder import UprightFolder
    from heartbeat.db.database import Database
    from heartbeat.db.models import Software
    from heartbeat.service import Service


def _connect(
    settings: Settings, *, create: bool = True, threads: int = 16, say: Callable[[str], object] | None = None
) -> Database:
    """The configured database. ``create``: a command that writes makes it when missing, and says where
    (else :class:`DatabaseMissing`, exit 2: a command that only reads never creates a database), on
    standard error or by ``say`` (the server: a log record, in the log's format).
    ``threads``: how many threads will use it at once."""
    from heartbeat.db.connect import DatabaseMissing, connect, sqlite_path

    new_file = settings.db_auth is None and not sqlite_path(settings.data_dir).exists()
    if new_file and create:
        _private_data_dir(settings)
    try:
        database = connect(data_dir=settings.data_dir, db_auth=settings.db_auth, create=create, threads=threads)
    except DatabaseMissing as error:
        if settings.db_auth is None:
            raise DatabaseMissing(
                f"{error}: the data dir is --data-dir (HEARTBEAT_DATA_DIR, default ./heartbeat-data); "
                "`heartbeat serve` creates it"
            ) from None
        raise
    if new_file:
        message = f"created a new Heartbeat database in {settings.data_dir}"
        say(message) if say is not None else print(message, file=sys.stderr)
    return database


def _private_data_dir(settings: Settings) -> None:
    """Make the data dir (0700), or tighten it; :class:`SettingError` when it cannot be made."""
    try:
        private_dir(settings.data_dir)
    except OSError as error:
        raise SettingError(
            f"the data dir {settings.data_dir} (--data-dir, HEARTBEAT_DATA_DIR) cannot be made: "
            f"{error.strerror or error}"
        ) from None


def _service(settings: Settings, database: Database) -> Service:
    """The object graph over ``database``, its tables brought up to this release (call with a
    connection; a command's upgrade reads no pictures: see :meth:`Service.upgrade`)."""
    from heartbeat.service import Service

    service = Service(settings, database)
    service.upgrade(pictures=False)
    return service


def serve(args: argparse.Namespace) -> int:
    from heartbeat.api.auth import is_loopback
    from heartbeat.auth.tokens import tokens_exist
    from heartbeat.db.lock_probe import UnsafeEngine, prove_skip_locked
    from heartbeat.server import serve as serve_forever
    from heartbeat.server.process import listening_socket
    from heartbeat.service import Service
    from heartbeat.storage import open_storage

    settings = settings_from_args(args)
    settings.check_serving()
    configure_logging(settings.log_format)
    listening_socket(settings.host, settings.port).close()  # a port in use: one line now, before any change
    _private_data_dir(settings)  # made, or tightened if an older release left it readable by others
    # Checked and upgraded here, once, before the port is taken; each server process connects again on its own.
    database = _connect(settings, say=logging.getLogger("heartbeat").info)
    try:
        if database.features.skip_locked:  # claims rely on it: an engine that ignores it stops us here
            try:
                prove_skip_locked(database.new_connection)
            except UnsafeEngine as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
        with database.connection():
            _service(settings, database)
            open_server = not tokens_exist(database)
        if open_server and not is_loopback(settings.host):
            print(
                f"refusing to serve on {settings.host}: no live API token exists, and without one Heartbeat serves "
                "only on a loopback address (127.0.0.1, ::1). Create one with `heartbeat token create --role "
                "admin` (with the same --data-dir or --db-auth), then start again.",
                file=sys.stderr,
            )
            return 2
        storage = open_storage(settings)  # an unreachable store stops the start here, with one line
        with database.connection():
            Service(settings, database, storage=storage).upgrade()
    finally:
        database.close_all()
    return serve_forever(settings)


def check(args: argparse.Namespace) -> int:
    from heartbeat.catalog.check import run_check

    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        grace = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
        service = _service(settings, database)
        return run_check(service.storage, service.queue, fix=args.fix, out=sys.stdout, **grace)


def software(args: argparse.Namespace) -> int:
    from heartbeat.errors import HeartbeatError

    settings = settings_from_args(args)
    database = _connect(settings, create=args.software_command == "add")
    service = _service(settings, database)
    queue, registry = service.queue, service.registry
    if args.software_command == "add":
        try:
            item = registry.register(
                args.name,
                lease_seconds=args.lease_seconds,
                max_attempts=args.max_attempts,
                after=args.after,
                origins=args.origins,
                max_in_flight=getattr(args, "max_in_flight", None),
                rate=getattr(args, "rate", None),
                **({"version": args.version} if args.version is not None else {}),
            )
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
        print(f"registered {item.name} (lease {item.lease_seconds}s, {item.max_attempts} attempts{_limits(item)})")
        return 0
    if args.software_command == "set":
        changes: dict[str, Any] = {
            key: value
            for key, value in (
                ("version", args.version),
                ("lease_seconds", args.lease_seconds),
                ("max_attempts", args.max_attempts),
                ("paused", None if args.paused is None else args.paused == "true"),
            )
            if value is not None
        }
        if args.version is not None and not args.recompute:
            changes["recompute"] = False
        # Given as none, a limit is lifted (null); not given, it stays as it is.
        changes |= {key: getattr(args, key) for key in ("max_in_flight", "rate") if key in args}
        try:
            item = registry.change(args.name, changes)
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
        counts = queue.counters.counts(item)
        print(
            f"{item.name}: version {item.version}, {counts['pending']} pending, {counts['outdated']} outdated"
            + _limits(item, always="max_in_flight" in changes or "rate" in changes)
        )
        return 0
    now = time.time()
    for item in registry.all():
        counts = queue.counters.counts(item)
        fields = [f"{status}={count}" for status, count in counts.items()]
        if _limited(item):  # its limits, and the jobs it has in flight against them
            limits = _limit_values(item)
            fields += [
                f"in_flight={queue.flow.in_flight(item, now)}",
                f"max_in_flight={limits['max_in_flight']}",
                f"rate={limits['rate']}",
            ]
        print(f"{item.name}\t" + "\t".join(fields))
    return 0


def _limited(item: Software) -> bool:
    return item.max_in_flight is not None or item.rate_limit is not None


def _limit_values(item: Software) -> dict[str, str]:
    """A software's flow-control limits as its flags take them: ``4``, ``30/min``, ``none``."""
    from heartbeat.queue.flow import rate_of

    return {
        "max_in_flight": NO_LIMIT if item.max_in_flight is None else str(item.max_in_flight),
        "rate": rate_text(rate_of(item.rate_limit, item.rate_window)),
    }


def _limits(item: Software, *, always: bool = False) -> str:
    """``, max in flight 4, rate 30/min`` for a limited software; for one without limits, ``, no
    limits`` when ``always``, else nothing."""
    if not _limited(item):
        return ", no limits" if always else ""
    limits = _limit_values(item)
    return f", max in flight {limits['max_in_flight']}, rate {limits['rate']}"


def export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from heartbeat.catalog.export import Exporter, ExportRequest, software_named
    from heartbeat.catalog.picture_folder import UprightFolder
    from heartbeat.errors import HeartbeatError

    if args.images is not None:
        _picture_folder(args.format, args.images)
    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        service = _service(settings, database)
        registry, storage, catalog = service.registry, service.storage, service.catalog
        registered = registry.all()
        try:
            chosen = software_named(args.software, registered)
            request = ExportRequest(args.format, registry.where(args.where), chosen, args.table, args.category)
            pictures = None if args.images is None else UprightFolder(storage, args.images)
            total = catalog.count(where=request.where) * (2 if args.format == "coco" else 1)
            with tqdm(total=total, unit="image", file=sys.stderr) as bar:
                exporter = Exporter(
                    database, catalog, service.queue, registered, progress=bar.update, pictures=pictures
                )
                _write_chunks(exporter.stream(request), args.output)
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
    if pictures is not None:
        return _report_pictures(pictures)
    return 0


def _picture_folder(export_format: str, folder: Path) -> None:
    """Make ``--images``' folder, or :class:`SettingError` naming the flag."""
    if export_format != "coco":
        raise SettingError("--images: only a coco export (--format coco) writes pictures")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingError(f"--images: {folder} cannot be made a folder ({error.strerror or error})") from None


def _write_chunks(chunks: Iterator[bytes], output: Path | None) -> None:
    out = open(output, "wb") if output else sys.stdout.buffer  # noqa: SIM115
    try:
        for chunk in chunks:
            out.write(chunk)
    finally:
        if output:
            out.close()


def _report_pictures(pictures: UprightFolder) -> int:
    """List the pictures ``--images`` could not write; 1 when there were any."""
    for image_id in pictures.missing:
        print(f"image {image_id}: its bytes are missing from storage (`heartbeat check` lists it)", file=sys.stderr)
    for image_id in pictures.unreadable:
        print(f"image {image_id}: its stored bytes do not decode", file=sys.stderr)
    return 1 if pictures.missing or pictures.unreadable else 0


def token(args: argparse.Namespace) -> int:
    from heartbeat.auth import tokens
    from heartbeat.errors import HeartbeatError

    secret = None
    if args.token_command == "create" and args.from_env:
        secret = os.environ.get(args.from_env)
        if not secret:
            raise SettingError(f"{args.from_env} (--from-env): the variable is empty or not set")
        if PLACEHOLDER_MARK in secret.lower():
            raise SettingError(
                f"{args.from_env} (--from-env): it holds a placeholder that anyone can read (an older release's "
                ".env.sample); `python3 deploy/make_env.py` makes a new .env with real secrets"
            )
    _connect(settings_from_args(args), create=args.token_command == "create")
    try:
        if args.token_command == "create":
            row, secret = tokens.create_token(
                args.role, clock=time.time, software=args.software, name=args.name, secret=secret
            )
            scope = f" for {row.software}" if row.software else ""
            print(f"created {row.role} token {row.id}{scope}", file=sys.stderr)
            if not args.from_env:
                print(secret)
        elif args.token_command == "revoke":
            row = tokens.revoke_token(args.id, clock=time.time)
            print(f"revoked {row.id}")
        else:
            for row in tokens.list_tokens():
                state = "revoked" if row.revoked_at is not None else "active"
                print("\t".join([row.id, row.role, row.software or "*", state, row.name or ""]))
    except HeartbeatError as error:
        print(f"error: {error.description}", file=sys.stderr)
        return 1
    return 0


def s3(args: argparse.Namespace) -> int:
    from heartbeat.storage.provision import minio_clients, provision
    from heartbeat.storage.s3 import parse_endpoint

    settings = settings_from_args(args)
    bucket = settings.storage.removeprefix("s3://").strip("/")
    needed = {
        "HEARTBEAT_STORAGE (--storage) as s3://BUCKET": settings.storage.startswith("s3://") and bucket,
        "HEARTBEAT_S3_ENDPOINT (--s3-endpoint)": settings.s3_endpoint,
        "HEARTBEAT_S3_ACCESS_KEY (--s3-access-key)": settings.s3_access_key,
        "HEARTBEAT_S3_SECRET_KEY (--s3-secret-key)": settings.s3_secret_key,
        args.root_access_key_from_env: os.environ.get(args.root_access_key_from_env),
        args.root_secret_key_from_env: os.environ.get(args.root_secret_key_from_env),
    }
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise SettingError(f"s3 provision needs {', '.join(missing)}")
    endpoint, secure = parse_endpoint(settings.s3_endpoint or "", settings.s3_secure)
    client, admin = minio_clients(
        endpoint,
        secure,
        access_key=os.environ[args.root_access_key_from_env],
        secret_key=os.environ[args.root_secret_key_from_env],
        region=settings.s3_region,
    )
    provision(
        client,
        admin,
        bucket=bucket,
        user=settings.s3_access_key or "",
        secret=settings.s3_secret_key or "",
        region=settings.s3_region,
    )
    print(f"bucket {bucket} and its user {settings.s3_access_key} are ready", file=sys.stderr)
    return 0


def import_images(args: argparse.Namespace) -> int:
    from heartbeat.cli.import_command import import_command
    from heartbeat.storage import open_storage

    settings = settings_from_args(args)
    return import_command(
        settings,
        lambda: _connect(settings, threads=args.workers),
        lambda: open_storage(settings),
        args.source,
        origin=args.origin,
        prune=args.prune,
        workers=args.workers,
        out=sys.stdout,
    )


def worker(args: argparse.Namespace) -> int:
    from heartbeat.worker.command import run_worker

    return run_worker(
        args.target,
        software=args.software,
        api_url=args.api,
        token=args.token,
        concurrency=args.concurrency,
        batch=args.batch,
        lease_seconds=args.lease_seconds,
        wait_seconds=args.wait_seconds,
        exit_when_idle=args.exit_when_idle,
        give_up_seconds=args.give_up_seconds,
        register=args.register,
    )
