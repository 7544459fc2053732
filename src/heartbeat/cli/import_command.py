"""``heartbeat import SOURCE``: the run of :mod:`heartbeat.ingest.source_import` with a progress bar on
stderr, then its counts and lists on stdout."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

from heartbeat.config import SettingError, Settings
from heartbeat.db.database import Database
from heartbeat.errors import InvalidInput
from heartbeat.ingest.registration import check_metadata
from heartbeat.ingest.source_import import check_source
from heartbeat.service import open_importer
from heartbeat.storage import Storage
from heartbeat.storage.sources import Source, open_source


def printable(text: str) -> str:
    """``text`` on one line of a terminal: control characters (a newline in a name) as escapes."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def import_command(
    settings: Settings,
    connect: Callable[[], Database],
    open_storage: Callable[[], Storage],
    source_text: str,
    *,
    origin: str | None,
    prune: bool,
    workers: int,
    out: TextIO,
) -> int:
    """``heartbeat import``: the run with a progress bar on stderr, then its counts and lists on ``out``.
    0 when every object was read (refused ones included: they are listed), else what failed is raised.

    ``open_storage`` and ``connect`` open the store and the database once the source and the origin
    are known to be usable (a wrong SOURCE or --origin creates nothing).
    """
    check_source(source_text, settings)
    try:
        check_metadata(origin, None)
    except InvalidInput as error:
        raise SettingError(f"--origin: {error.description}") from None
    storage = open_storage()
    source = open_source(source_text, storage)
    database = connect()
    try:
        return _import(settings, database, storage, source, origin=origin, prune=prune, workers=workers, out=out)
    finally:
        database.close_all()


def _import(
    settings: Settings,
    database: Database,
    storage: Storage,
    source: Source,
    *,
    origin: str | None,
    prune: bool,
    workers: int,
    out: TextIO,
) -> int:
    from tqdm import tqdm

    importer = open_importer(settings, database, storage, source, origin=origin, workers=workers)

    @contextlib.contextmanager
    def bar() -> Iterator[Callable[[int, int], object]]:
        """Objects read out of those found to read so far: the total grows as the listing goes on."""
        with tqdm(total=0, unit="object", desc=f"importing {printable(source.name)}", file=sys.stderr) as shown:

            def advance(found: int, read: int) -> None:
                if found:
                    shown.total += found
                    shown.refresh()
                shown.update(read)

            yield advance

    report = importer.run(prune=prune, progress=bar)
    for key, reason in report.refused:
        print(f"refused: {printable(key)}: {reason}", file=out)
    for key, reason in report.skipped:
        print(f"skipped: {printable(key)}: {reason}", file=out)
    for key in report.gone:
        print(f"gone{' (its image deleted)' if prune else ''}: {printable(key)}", file=out)
    print(report.summary(), file=out)
    if report.gone and not prune:
        print("run again with --prune to delete the images of the objects that are gone", file=out)
    return 0
