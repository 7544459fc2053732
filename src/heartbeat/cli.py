"""``heartbeat serve | check | software | token | export | s3 | upload | worker``: the command line.

A mistake on the command line stops it with one line naming the flag or variable as given, and exit
status 2 (a wrong or missing flag shows the command's own usage first); no user mistake prints a
traceback.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from heartbeat.config import OPTIONS, Option, SettingError, Settings
from heartbeat.image_types import IMAGE_SUFFIXES
from heartbeat.logs import configure_logging
from heartbeat.roles import Role

if TYPE_CHECKING:
    from heartbeat.db.database import Database
    from heartbeat.queue import JobQueue
    from heartbeat.registry import Registry

DEFAULT_API = "http://127.0.0.1:8080"
MAX_BATCH = 100  # the API's limit on a claim's jobs and a batch submit's results
PLACEHOLDER_MARK = "change-me"  # in the secrets of older releases' .env.sample: public, never a token
DESCRIPTION = (
    "Heartbeat: a database and work coordinator for images that computer-vision software analyses. "
    "Run 'heartbeat COMMAND --help' for a command's flags."
)


DATABASE_SETTINGS = ("data_dir", "db_auth", "db_host", "db_port", "db_user", "db_password", "db_name")
STORAGE_SETTINGS = ("storage", "secret_key", *(option.field for option in OPTIONS if option.field.startswith("s3_")))


class Parser(argparse.ArgumentParser):
    """argparse, its errors in one line: ``heartbeat serve: error: argument --port: expected ...``, exit 2.

    A bad value names its flag in that one line; a wrong or missing flag or argument shows the
    command's own usage before it.
    """

    def error(self, message: str) -> NoReturn:
        if not message.startswith("argument "):
            self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag_type(option: Option) -> Any:
    """The setting's parser for its flag: a bad value's error is argparse's, naming the flag."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except (ValueError, OSError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    """A flag's type: a whole number from ``low`` (up to ``high``); anything else names the flag."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise argparse.ArgumentTypeError(f"expected a number {allowed}, not {text!r}")
        return value

    return parse


def _new_file(text: str) -> Path:
    """A file to write, in a folder that exists."""
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {path.parent}")
    return path


def _existing_path(text: str) -> Path:
    """A file or folder that exists (``upload``'s PATHs)."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {text}")
    return path


def _remember_parsers(parser: argparse.ArgumentParser) -> None:
    """Each command's parser in its own namespace (``parser``), so that an unknown flag is reported
    with that command's usage rather than the top level's."""
    parser.set_defaults(parser=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _remember_parsers(child)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line parsed; a mistake exits 2 with one line (see :class:`Parser`)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if "api" in args:  # a client command: where its URL came from, for a message about it
        args.api_given_as = "--api" if args.api else "HEARTBEAT_API" if os.environ.get("HEARTBEAT_API") else "default"
        args.api = args.api or os.environ.get("HEARTBEAT_API") or DEFAULT_API
    return args


def _setting_flags(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None) -> None:
    """A flag for each setting (``fields``, or all of them), named after it, its variable in the help."""
    for option in OPTIONS:
        if fields is None or option.field in fields:
            parser.add_argument(
                option.flag, dest=option.field, type=_flag_type(option), help=f"{option.help} ({option.env})"
            )


def _database_flags(parser: argparse.ArgumentParser) -> None:
    _setting_flags(parser, DATABASE_SETTINGS)


def _api_flags(parser: argparse.ArgumentParser) -> None:
    """Where a client command finds the API, and the token it sends."""
    parser.add_argument("--api", help=f"the Heartbeat API's URL (HEARTBEAT_API; default {DEFAULT_API})")
    parser.add_argument(
        "--token", default=os.environ.get("HEARTBEAT_TOKEN"), help="the API token to send (HEARTBEAT_TOKEN)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="heartbeat", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"heartbeat {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API with waitress")
    _setting_flags(serve)

    check = commands.add_parser(
        "check", help="list rows without their object, objects without a row, and stale direct uploads"
    )
    _setting_flags(check, DATABASE_SETTINGS + STORAGE_SETTINGS)
    check.add_argument("--fix", action="store_true", help="remove objects without a row and stale direct uploads")
    check.add_argument(
        "--grace-seconds",
        type=float,
        help="leave objects younger than this alone: their rows may be on the way (default 600)",
    )

    software = commands.add_parser("software", help="register and list software")
    software_commands = software.add_subparsers(dest="software_command", required=True, metavar="COMMAND")
    add = software_commands.add_parser("add", help="register a software")
    add.add_argument("name", help="its name: lower case letters, digits and _, starting with a letter")
    add.add_argument("--version", help="the software's model (default 1)")
    add.add_argument("--lease-seconds", type=int, help="how long a worker holds a claimed job (default 300)")
    add.add_argument("--max-attempts", type=int, help="claims of a job before it fails for good (default 3)")
    add.add_argument("--after", action="append", metavar="SOFTWARE", help="an upstream software (repeatable)")
    add.add_argument(
        "--origin", action="append", dest="origins", metavar="ORIGIN", help="only this origin (repeatable)"
    )
    _database_flags(add)
    change = software_commands.add_parser("set", help="change a software's version, lease, attempts or pause")
    change.add_argument("name", help="the registered software's name")
    change.add_argument("--version", help="a new model: its done jobs of other versions are reopened")
    change.add_argument("--no-recompute", dest="recompute", action="store_false", help="with --version: reopen nothing")
    change.add_argument("--lease-seconds", type=int, help="how long a worker holds a claimed job")
    change.add_argument("--max-attempts", type=int, help="claims of a job before it fails for good")
    change.add_argument("--paused", choices=["true", "false"], help="pause (true) or resume (false) its claims")
    _database_flags(change)
    listing = software_commands.add_parser("list", help="list software with their job counts")
    _database_flags(listing)

    _token_parser(commands)

    export = commands.add_parser("export", help="every image a query selects, with the results, as jsonl, csv or coco")
    export.add_argument("--format", choices=["jsonl", "csv", "coco"], default="jsonl", help="default jsonl")
    export.add_argument("--where", help="a query expression (the API's where=)")
    export.add_argument("--software", help="software to include, comma separated (default: every one)")
    export.add_argument("--table", help="coco: SOFTWARE.TABLE, an extra table with x, y, w, h columns")
    export.add_argument("--category", help="coco: the column naming each box's category")
    export.add_argument("-o", "--output", type=_new_file, help="the file to write (default: standard output)")
    _database_flags(export)

    s3 = commands.add_parser("s3", help="set up an S3 store for Heartbeat")
    s3_commands = s3.add_subparsers(dest="s3_command", required=True, metavar="COMMAND")
    provision = s3_commands.add_parser(
        "provision",
        help="with MinIO's root key: make the bucket of --storage, and the user of --s3-access-key and "
        "--s3-secret-key, allowed that bucket alone (changes nothing the second time; sets the secret again)",
    )
    _setting_flags(provision, STORAGE_SETTINGS)
    provision.add_argument("--root-access-key-from-env", metavar="VAR", required=True, help="MinIO's root user")
    provision.add_argument("--root-secret-key-from-env", metavar="VAR", required=True, help="its password")

    upload = commands.add_parser("upload", help="upload image files and folders over HTTP")
    upload.add_argument(
        "paths",
        nargs="+",
        type=_existing_path,
        metavar="PATH",
        help="an image file, or a folder whose image files (any depth) are uploaded; other files are listed as skipped",
    )
    upload.add_argument("--origin", help="where the images come from (a camera, a site), stored with each one")
    _api_flags(upload)
    upload.add_argument("--parallel", type=_whole_number(1), default=4, help="uploads at once (default 4)")
    _worker_parser(commands)
    _import_parser(commands)
    _remember_parsers(parser)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("heartbeat")
    except PackageNotFoundError:  # run from a source tree that was not installed
        from heartbeat import __version__

        return __version__


def _import_parser(commands: Any) -> None:
    register = commands.add_parser(
        "import",
        help="register images already in the server's S3 store (no bytes copied) or, with local storage, a folder",
    )
    register.add_argument(
        "source",
        metavar="SOURCE",
        help="s3://BUCKET/PREFIX (read with the server's S3 settings) or, with local storage, a folder",
    )
    register.add_argument(
        "--origin", help="where the images come from (a camera, a site), stored with each one it registers"
    )
    register.add_argument("--prune", action="store_true", help="delete the images of objects that are gone")
    register.add_argument("--workers", type=_whole_number(1), default=4, help="objects read at once (default 4)")
    _setting_flags(register, DATABASE_SETTINGS + STORAGE_SETTINGS)


def _worker_parser(commands: Any) -> None:
    worker = commands.add_parser("worker", help="run a worker function on a software's jobs")
    worker_commands = worker.add_subparsers(dest="worker_command", required=True, metavar="COMMAND")
    run = worker_commands.add_parser("run", help="claim, handle and submit until SIGTERM or SIGINT")
    run.add_argument("target", metavar="module:function", help="handler(image_bytes, image) -> info | (info, rows)")
    run.add_argument("--software", required=True, help="the software whose jobs to work on")
    _api_flags(run)
    run.add_argument("--concurrency", type=_whole_number(1), default=1, help="handlers running at once (default 1)")
    run.add_argument(
        "--batch",
        type=_whole_number(1, MAX_BATCH),
        default=1,
        help=f"jobs per claim, results per submit, up to {MAX_BATCH} (default 1)",
    )
    run.add_argument("--lease-seconds", type=_whole_number(1), help="lease length (default: the software's)")
    run.add_argument("--wait-seconds", type=float, default=5.0, help="how long a claim waits for work (default 5)")
    run.add_argument("--exit-when-idle", action="store_true", help="exit once a claim finds no work")
    run.add_argument("--register", action="store_true", help="register the software from the module's SOFTWARE")


def _token_parser(commands: Any) -> None:
    token = commands.add_parser("token", help="create, list and revoke API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = token_commands.add_parser("create", help="make a token and print it, once")
    create.add_argument("--role", required=True, choices=[str(role) for role in Role], help="what the token may do")
    create.add_argument("--software", help="a worker token's one software (default: all)")
    create.add_argument("--name", help="a note saying who or what holds the token")
    create.add_argument(
        "--from-env",
        metavar="VAR",
        help="import the token held in environment variable VAR instead of making one (idempotent); "
        "with --name, it replaces (revokes) the live tokens of that name",
    )
    _database_flags(create)
    listing = token_commands.add_parser("list", help="one token a line, its ID first; never the secret")
    _database_flags(listing)
    revoke = token_commands.add_parser("revoke", help="revoke a token by its ID, at once")
    revoke.add_argument("id", help="the token's ID, as token list shows it")
    _database_flags(revoke)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the flags given on the command line winning."""
    return Settings.from_env(**{option.field: getattr(args, option.field, None) for option in OPTIONS})


def _connect(settings: Settings, *, create: bool = True, threads: int = 16) -> Database:
    """The configured database. ``create``: a command that writes makes it when missing, and says where
    (else :class:`DatabaseMissing`, exit 2: a command that only reads never creates a database).
    ``threads``: how many threads will use it at once."""
    from heartbeat.db.database import DatabaseMissing, connect, sqlite_path

    new_file = settings.db_auth is None and not sqlite_path(settings.data_dir).exists()
    if new_file and create:
        try:
            Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SettingError(
                f"the data dir {settings.data_dir} (--data-dir, HEARTBEAT_DATA_DIR) cannot be made: "
                f"{error.strerror or error}"
            ) from None
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
        print(f"created a new Heartbeat database in {settings.data_dir}", file=sys.stderr)
    return database


def _open_queue(settings: Settings, database: Database) -> JobQueue:
    """The job queue over ``database``, its tables brought up to this release (call with a connection)."""
    from heartbeat.queue import JobQueue

    queue = JobQueue(database, time.time)
    queue.upgrade()
    return queue


def _registry(settings: Settings, database: Database, queue: JobQueue) -> Registry:
    """The software registry over ``database``, with the settings' defaults for new software."""
    from heartbeat.registry import Registry

    return Registry(
        database,
        queue,
        time.time,
        default_lease_seconds=settings.default_lease_seconds,
        default_max_attempts=settings.default_max_attempts,
    )


def serve(args: argparse.Namespace) -> int:
    from heartbeat.api.auth import is_loopback
    from heartbeat.orientations import fill_orientations
    from heartbeat.server import serve as serve_forever
    from heartbeat.server.process import listening_socket
    from heartbeat.storage import open_storage
    from heartbeat.tokens import tokens_exist

    settings = settings_from_args(args)
    settings.check_serving()
    configure_logging(settings.log_format)
    listening_socket(settings.host, settings.port).close()  # a port in use: one line now, before any change
    # Checked and upgraded here, once, before the port is taken; each server process connects again on its own.
    database = _connect(settings)
    try:
        with database.connection():
            _open_queue(settings, database)
            open_server = not tokens_exist(database)
        if open_server and not is_loopback(settings.host):
            print(
                f"refusing to serve on {settings.host}: no API token exists, and without one Heartbeat serves "
                "only on a loopback address (127.0.0.1, ::1). Create one with `heartbeat token create --role "
                "admin` (with the same --data-dir or --db-auth), then start again.",
                file=sys.stderr,
            )
            return 2
        storage = open_storage(settings)  # an unreachable store stops the start here, with one line
        with database.connection():
            fill_orientations(database, storage)
    finally:
        database.close_all()
    return serve_forever(settings)


def check(args: argparse.Namespace) -> int:
    from heartbeat.check import run_check
    from heartbeat.storage import open_storage

    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        grace = {} if args.grace_seconds is None else {"grace_seconds": args.grace_seconds}
        queue = _open_queue(settings, database)
        return run_check(open_storage(settings), queue, fix=args.fix, out=sys.stdout, **grace)


def software(args: argparse.Namespace) -> int:
    from heartbeat.errors import HeartbeatError

    settings = settings_from_args(args)
    database = _connect(settings, create=args.software_command == "add")
    queue = _open_queue(settings, database)
    registry = _registry(settings, database, queue)
    if args.software_command == "add":
        try:
            item = registry.register(
                args.name,
                lease_seconds=args.lease_seconds,
                max_attempts=args.max_attempts,
                after=args.after,
                origins=args.origins,
                **({"version": args.version} if args.version is not None else {}),
            )
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
        print(f"registered {item.name} (lease {item.lease_seconds}s, {item.max_attempts} attempts)")
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
        try:
            item = registry.change(args.name, changes)
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
        counts = queue.counts(item)
        print(f"{item.name}: version {item.version}, {counts['pending']} pending, {counts['outdated']} outdated")
        return 0
    for item in registry.all():
        counts = queue.counts(item)
        print(f"{item.name}\t" + "\t".join(f"{status}={count}" for status, count in counts.items()))
    return 0


def export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from heartbeat.catalog import Catalog
    from heartbeat.errors import HeartbeatError
    from heartbeat.export import Exporter, ExportRequest, software_named
    from heartbeat.storage import open_storage

    settings = settings_from_args(args)
    database = _connect(settings, create=False)
    with database.connection():
        queue = _open_queue(settings, database)
        registry = _registry(settings, database, queue)
        catalog = Catalog(database, open_storage(settings), registry, queue)
        registered = registry.all()
        try:
            chosen = software_named(args.software, registered)
            request = ExportRequest(args.format, registry.where(args.where), chosen, args.table, args.category)
            total = catalog.count(where=request.where) * (2 if args.format == "coco" else 1)
            with tqdm(total=total, unit="image", file=sys.stderr) as bar:
                chunks = Exporter(catalog, queue, registered, progress=bar.update).stream(request)
                out = open(args.output, "wb") if args.output else sys.stdout.buffer  # noqa: SIM115
                try:
                    for chunk in chunks:
                        out.write(chunk)
                finally:
                    if args.output:
                        out.close()
        except HeartbeatError as error:
            print(f"error: {error.description}", file=sys.stderr)
            return 1
    return 0


def token(args: argparse.Namespace) -> int:
    from heartbeat import tokens
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


def import_images(args: argparse.Namespace) -> int:
    from heartbeat.imports import import_command
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
        register=args.register,
    )


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    import peewee
    import urllib3
    from minio.error import MinioAdminException, MinioException

    from heartbeat.errors import HeartbeatError

    args = parse_args(argv)
    handlers = {
        "serve": serve,
        "check": check,
        "software": software,
        "token": token,
        "export": export,
        "s3": s3,
        "upload": upload,
        "worker": worker,
        "import": import_images,
    }
    try:
        return handlers[args.command](args)
    except SettingError as error:  # a setting that cannot be used, from the environment or a flag
        print(f"error: {error}", file=sys.stderr)
        return 2
    except HeartbeatError as error:  # an object store that does not answer, at startup
        print(f"error: {error.description}", file=sys.stderr)
        return 1
    except (MinioException, MinioAdminException, urllib3.exceptions.HTTPError) as error:  # s3 provision's store
        print(f"error: the S3 store refused or did not answer: {error}", file=sys.stderr)
        return 1
    except (peewee.OperationalError, peewee.InterfaceError) as error:  # the database does not answer
        print(f"error: the database is unreachable: {error}", file=sys.stderr)
        return 1
