"""The command line's arguments: every command's flags, their checks and help, and the settings they give."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from heartbeat.auth.roles import Role
from heartbeat.config import OPTIONS, Option, Settings
from heartbeat.privacy.actions import ACTIONS

DEFAULT_API = "http://127.0.0.1:8080"
MAX_BATCH = 100  # the API's limit on a claim's jobs and a batch submit's results
MAX_IMPORT_WORKERS = 64  # each may hold a database connection: MySQL's default max_connections is 151
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


MAX_IN_FLIGHT = 1_000_000  # the API's bounds (heartbeat.catalog.registry's MAX_IN_FLIGHT and RATE)
MAX_RATE = 1_000_000_000
RATE_UNITS = {  # what --rate takes after its slash -> the API's key
    "s": "per_second",
    "sec": "per_second",
    "second": "per_second",
    "min": "per_minute",
    "minute": "per_minute",
    "h": "per_hour",
    "hour": "per_hour",
}
RATE_SHORT = {"per_second": "s", "per_minute": "min", "per_hour": "h"}
NO_LIMIT = "none"


def _max_in_flight(text: str) -> int | None:
    """``--max-in-flight``: a whole number from 1, or ``none`` (no limit)."""
    if text.strip().lower() == NO_LIMIT:
        return None
    try:
        return _whole_number(1, MAX_IN_FLIGHT)(text)
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"{error} (or none, for no limit)") from None


def _rate(text: str) -> dict[str, int] | None:
    """``--rate``: ``N/s``, ``N/min`` or ``N/h`` as the API's ``{"per_second": N}``...; ``none``: no limit."""
    if text.strip().lower() == NO_LIMIT:
        return None
    count, slash, unit = text.strip().partition("/")
    key = RATE_UNITS.get(unit.strip().lower())
    if not slash or key is None:
        raise argparse.ArgumentTypeError(f"expected N/s, N/min or N/h (or none, for no limit), not {text!r}")
    try:
        limit = int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number before the slash, not {text!r}") from None
    if not 1 <= limit <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_RATE} before the slash, not {text!r}")
    return {key: limit}


def rate_text(rate: dict[str, int] | None) -> str:
    """A rate as ``--rate`` takes it: ``30/min``; ``none`` for no limit."""
    if not rate:
        return NO_LIMIT
    [(key, limit)] = rate.items()
    return f"{limit}/{RATE_SHORT[key]}"


def _limit_flags(parser: argparse.ArgumentParser, *, changing: bool) -> None:
    """``--max-in-flight`` and ``--rate`` (flow control), on ``software add`` and ``software set``."""
    default = "" if changing else " (default none: no limit)"
    parser.add_argument(
        "--max-in-flight",
        type=_max_in_flight,
        default=argparse.SUPPRESS,
        metavar="N|none",
        help=f"how many of its jobs may be claimed at once, across every server process and machine{default}",
    )
    parser.add_argument(
        "--rate",
        type=_rate,
        default=argparse.SUPPRESS,
        metavar="N/s|N/min|N/h|none",
        help=f"how many of its jobs may be handed out in any second, minute or hour, across every process{default}",
    )


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


def _event_types(text: str) -> list[str]:
    """``--types``: event types, comma separated, each one the server makes."""
    from heartbeat.events.outbox import EVENT_TYPES

    types = [part.strip() for part in text.split(",")]
    unknown = [part for part in types if part not in EVENT_TYPES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown event type {unknown[0]!r}: one of {', '.join(EVENT_TYPES)}")
    return types


def _event_cursor(text: str) -> str:
    """``--after``: an event's ``id`` (a whole number), or ``now``."""
    if text != "now" and not (text.isascii() and text.isdigit() and len(text) <= 19):
        raise argparse.ArgumentTypeError(f"expected an event's id (a whole number) or now, not {text!r}")
    return text


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
    _limit_flags(add, changing=False)
    _database_flags(add)
    change = software_commands.add_parser(
        "set", help="change a software's version, lease, attempts, pause or limits (max in flight, rate)"
    )
    change.add_argument("name", help="the registered software's name")
    change.add_argument("--version", help="a new model: its done jobs of other versions are reopened")
    change.add_argument("--no-recompute", dest="recompute", action="store_false", help="with --version: reopen nothing")
    change.add_argument("--lease-seconds", type=int, help="how long a worker holds a claimed job")
    change.add_argument("--max-attempts", type=int, help="claims of a job before it fails for good")
    change.add_argument("--paused", choices=["true", "false"], help="pause (true) or resume (false) its claims")
    _limit_flags(change, changing=True)
    _database_flags(change)
    listing = software_commands.add_parser(
        "list", help="list software with their job counts (and, for a limited one, its limits and jobs in flight)"
    )
    _database_flags(listing)

    _token_parser(commands)
    _privacy_parsers(commands)

    export = commands.add_parser("export", help="every image a query selects, with the results, as jsonl, csv or coco")
    export.add_argument("--format", choices=["jsonl", "csv", "coco"], default="jsonl", help="default jsonl")
    export.add_argument("--where", help="a query expression (the API's where=)")
    export.add_argument("--software", help="software to include, comma separated (default: every one)")
    export.add_argument("--table", help="coco: SOFTWARE.TABLE, an extra table with x, y, w, h columns")
    export.add_argument("--category", help="coco: the column naming each box's category")
    export.add_argument("-o", "--output", type=_new_file, help="the file to write (default: standard output)")
    export.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="coco: also write each picture into DIR under its file_name, upright (EXIF orientation applied)",
    )
    _database_flags(export)
    _setting_flags(export, STORAGE_SETTINGS)

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
    _events_parser(commands)
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
    register.add_argument(
        "--workers",
        type=_whole_number(1, MAX_IMPORT_WORKERS),
        default=4,
        help=f"objects read at once (default 4, at most {MAX_IMPORT_WORKERS})",
    )
    _setting_flags(register, DATABASE_SETTINGS + STORAGE_SETTINGS)


def _events_parser(commands: Any) -> None:
    events = commands.add_parser(
        "events", help="print the API's events, one JSON object a line; --follow waits for new ones"
    )
    events.add_argument("--follow", action="store_true", help="keep printing events as they happen, until Ctrl-C")
    events.add_argument(
        "--types", type=_event_types, metavar="TYPE,TYPE", help="only these event types, comma separated"
    )
    events.add_argument("--software", metavar="NAME", help="only the events of this software")
    events.add_argument(
        "--after",
        type=_event_cursor,
        metavar="CURSOR",
        help="the events after this event id (the last one printed), or now (default: the oldest kept)",
    )
    _api_flags(events)


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
    run.add_argument(
        "--give-up-seconds",
        type=float,
        default=30.0,
        help="with --exit-when-idle: exit with an error once the API has not answered for this long (default 30)",
    )
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


def _privacy_parsers(commands: Any) -> None:
    retention = commands.add_parser("retention", help="add, list and remove retention policies")
    retention_commands = retention.add_subparsers(dest="retention_command", required=True, metavar="COMMAND")
    add = retention_commands.add_parser(
        "add", help="erase the images a where expression matches once they are older than --max-age"
    )
    add.add_argument("name", help="the policy's name: lower case letters, digits and _, starting with a letter")
    add.add_argument("--where", required=True, help="a query expression (the API's where=)")
    add.add_argument(
        "--max-age", required=True, type=duration, metavar="AGE", help="seconds, or with a unit: 90m, 36h, 30d"
    )
    _database_flags(add)
    listing = retention_commands.add_parser("list", help="one policy a line: name, max age (s), last run, where")
    _database_flags(listing)
    remove = retention_commands.add_parser("remove", help="remove a policy (a run it started goes on)")
    remove.add_argument("name", help="the policy's name, as retention list shows it")
    _database_flags(remove)

    erase = commands.add_parser(
        "erase",
        help="erase every trace of images (rows, results, bytes, thumbnails), with a progress bar and a receipt",
    )
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--where", help="every image this query expression matches")
    which.add_argument("--image", action="append", dest="image_ids", metavar="ID", help="an image's ID (repeatable)")
    _setting_flags(erase, DATABASE_SETTINGS + STORAGE_SETTINGS)

    audit = commands.add_parser("audit", help="the audit's entries, oldest first, one JSON object a line")
    audit.add_argument("--image", dest="image_id", metavar="ID", help="only entries that name this image")
    audit.add_argument("--token", dest="token_id", metavar="ID", help="only entries of requests with this token")
    audit.add_argument("--action", choices=ACTIONS, help="only entries of this action")
    _database_flags(audit)


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``90m``, ``36h`` or ``30d``; a positive number, else ValueError."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    seconds = float(number) * unit
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(text)
    return seconds


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the flags given on the command line winning."""
    return Settings.from_env(**{option.field: getattr(args, option.field, None) for option in OPTIONS})
