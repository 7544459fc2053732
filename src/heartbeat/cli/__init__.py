"""``heartbeat serve | check | software | token | export | s3 | upload | worker | import | events |
retention | erase | audit``: the command line (its arguments in ``parser.py``, what each command does
in ``commands.py``, ``upload_command.py``, ``import_command.py``, ``events_command.py`` and
``privacy_command.py``).

A mistake on the command line stops it with one line naming the flag or variable as given, and exit
status 2 (a wrong or missing flag shows the command's own usage first); no user mistake prints a
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from heartbeat.cli.commands import check, export, import_images, s3, serve, software, token, worker
from heartbeat.cli.events_command import events
from heartbeat.cli.parser import build_parser, parse_args, settings_from_args
from heartbeat.cli.privacy_command import audit, erase, retention
from heartbeat.cli.upload_command import upload
from heartbeat.config import SettingError
from heartbeat.logs import configure_logging
from heartbeat.private_files import use_private_umask

__all__ = ["build_parser", "main", "parse_args", "settings_from_args"]

# The commands that may write in the data dir: what they make there is their user's alone.
WRITES_DATA_DIR = frozenset({"serve", "check", "software", "token", "import", "retention", "erase"})


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    import peewee
    import urllib3
    from minio.error import MinioAdminException, MinioException

    from heartbeat.errors import HeartbeatError

    args = parse_args(argv)
    if args.command in WRITES_DATA_DIR:
        use_private_umask()
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
        "events": events,
        "retention": retention,
        "erase": erase,
        "audit": audit,
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
        from heartbeat.db.database import Database

        if Database.fault(error) is None:  # it answered, refusing a statement: a bug, not an outage
            print(f"error: the database refused a statement (a bug; please report it): {error}", file=sys.stderr)
        else:
            print(f"error: the database is unreachable: {error}", file=sys.stderr)
        return 1
