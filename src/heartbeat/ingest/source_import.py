"""``heartbeat import SOURCE``: images that already lie in a bucket (or, with local storage, a folder)
registered where they are.

Each object is read once (:func:`heartbeat.ingest.registration.check_stream`: sha256, decoded whole, size, upright
size) and its thumbnail stored; then its image row, its jobs and its record in ``imported_objects``
commit in one transaction, so an import killed at any point and run again redoes only what had not
committed. The records are what a run has seen (key, size, ETag or modification time): the next run
reads only objects it has no record of, or whose size or version changed, and lists the recorded ones
that are gone (those it did not mark as listed). It lists, looks up and marks ``LIST_PAGE`` objects
at a time, so that its memory does not grow with the source. The unique sha256 of images and the
primary key of the records keep two imports of one source at once from doubling anything.

On S3 no byte is copied: the image's storage key is the object's locator ``s3://BUCKET/KEY``
(:func:`heartbeat.storage.s3.object_locator`). From a folder, a file is hard-linked into the local
store (copied where it cannot be linked), so that the store owns its bytes as for an upload.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import enum
import hashlib
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import peewee

from heartbeat.catalog.images import Catalog
from heartbeat.config import SettingError, Settings
from heartbeat.db.database import Database
from heartbeat.db.models import DELETED_OUTCOME, DeletedPicture, Image, ImportedObject, PendingImage
from heartbeat.errors import NotFound, TooLarge, UnsupportedImage
from heartbeat.ingest.registration import Ingest, check_metadata, check_stream, image_key, image_row
from heartbeat.storage import StoredObject
from heartbeat.storage.s3 import LOCATOR_SCHEME
from heartbeat.storage.sources import (
    OWN_OBJECT,
    NotAFile,
    Skipped,
    Source,
    Unreadable,
    filename_of,
    text_of,
)

__all__ = ["ImportReport", "Importer", "check_source"]

MAX_STORAGE_KEY_CHARS = Image.storage_key.max_length
MAX_SOURCE_CHARS = ImportedObject.source.max_length
COMMIT_BATCH = 100  # most image rows an import commits in one transaction
LIST_PAGE = 1000  # objects listed, and their records looked up, at a time
COMMIT_SECONDS = 1.0  # longest a read picture waits for its commit while others are being read


class Outcome(enum.StrEnum):
    """What became of an object read (the first four are recorded)."""

    NEW = "new"  # became an image
    DUPLICATE = "duplicate"  # its bytes are an image already
    REFUSED = "refused"  # no image: not a picture, cut short, too large
    DELETED = DELETED_OUTCOME  # its bytes are a picture deleted through the API: not registered again
    ALREADY = "already"  # imported by another run meanwhile
    VANISHED = "vanished"  # gone between the listing and its read
    SKIPPED = "skipped"  # no longer a regular file when it was opened (not recorded)
    UNREADABLE = "unreadable"  # there, but could not be opened (not recorded; its record is not gone)


DELETED_REASON = "its picture was deleted through the API: not imported again"


class _DeletedMeanwhile(Exception):
    """A picture read by an import was deleted through the API before its row committed."""


@dataclasses.dataclass
class _Read:
    """A picture read and its thumbnail stored, its row (:func:`heartbeat.ingest.registration.image_row`) waiting."""

    stored: StoredObject
    row: dict[str, Any]
    owned: bool  # the store's own object (a link into local storage), removed should the row lose


# ``progress()``: a context whose value is called with the number of objects just found to read (as
# the listing goes on) and the number just read.
Progress = Callable[[], contextlib.AbstractContextManager[Callable[[int, int], object]]]


def check_source(text: str, settings: Settings) -> None:
    """What can be said of SOURCE before anything is opened, so that a wrong one creates nothing:
    :class:`SettingError` naming it when it is too long, of another scheme, a missing folder, or of
    another kind than the storage (a bucket needs S3 storage, a folder local storage)."""
    if len(text) > MAX_SOURCE_CHARS:
        raise SettingError(f"SOURCE {text[:40]}...: at most {MAX_SOURCE_CHARS} characters")
    on_s3 = settings.storage.startswith(LOCATOR_SCHEME)
    if text.startswith(LOCATOR_SCHEME):
        if not on_s3:
            raise SettingError(f"SOURCE {text}: importing from a bucket needs S3 storage (--storage s3://BUCKET)")
        return
    if "://" in text:
        raise SettingError(f"SOURCE {text}: expected s3://BUCKET/PREFIX or a folder")
    folder = Path(text).resolve()
    if not folder.is_dir():
        raise SettingError(f"SOURCE {text}: no such folder")
    if len(text_of(str(folder))) > MAX_SOURCE_CHARS:  # what is recorded is the folder's absolute path
        raise SettingError(f"SOURCE {text}: its absolute path is longer than {MAX_SOURCE_CHARS} characters")
    if on_s3:
        raise SettingError(f"SOURCE {text}: importing a folder needs local storage; with S3, import from a bucket")


@dataclasses.dataclass
class ImportReport:
    """What one run did. Keys are the source's (``s3://BUCKET/KEY``, or a path in the folder, bytes
    that are not UTF-8 written ``\\xNN``)."""

    listed: int = 0
    unchanged: int = 0  # known from an earlier run (or imported by another run meanwhile): not read
    new: int = 0
    duplicate: int = 0
    changed: int = 0  # read again: their size or version differed from the record's
    refused: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, why)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (key, why): no file, or deleted
    own: int = 0  # Heartbeat's own objects (its store's images, thumbnails, uploads), left alone
    gone: list[str] = dataclasses.field(default_factory=list)  # recorded images whose object is gone
    pruned: int = 0  # images of gone objects deleted (--prune)

    def count(self, key: str, outcome: Outcome, reason: str) -> None:
        """One object's outcome (but VANISHED: the caller's)."""
        if outcome == Outcome.NEW:
            self.new += 1
        elif outcome == Outcome.DUPLICATE:
            self.duplicate += 1
        elif outcome == Outcome.REFUSED:
            self.refused.append((key, reason))
        elif outcome in (Outcome.SKIPPED, Outcome.UNREADABLE):
            self.skipped.append((key, reason))
        elif outcome == Outcome.DELETED:
            self.skipped.append((key, DELETED_REASON))
        elif outcome == Outcome.ALREADY:
            self.unchanged += 1

    def skip(self, entry: Skipped) -> None:
        """An entry of the source that is no object to read."""
        if entry.reason == OWN_OBJECT:
            self.own += 1
        else:
            self.skipped.append((text_of(entry.key), entry.reason))

    def summary(self) -> str:
        return (
            f"{self.listed} objects: {self.new} new, {self.duplicate} duplicate, {len(self.refused)} refused, "
            f"{len(self.gone)} gone" + (f" ({self.pruned} pruned)" if self.pruned else "") + f", "
            f"{self.unchanged} unchanged"
            + (f", {self.changed} changed and read again" if self.changed else "")
            + f", {len(self.skipped)} skipped"
            + (f"; {self.own} of Heartbeat's own objects left alone" if self.own else "")
        )


def record_id(source: str, key: str) -> str:
    """The record's ID: a name's bytes that are not UTF-8 count as themselves (two such names never share one)."""
    return hashlib.sha256(f"{source}\n{key}".encode("utf-8", "surrogateescape")).hexdigest()


def _version(stored: StoredObject) -> str:
    """What tells one version of the object from another, as recorded (``ImportedObject.version``)."""
    return (stored.etag or repr(stored.modified_at))[:255]


def unlisted_records(source: str, listed_since: float, past: str | None) -> peewee.ModelSelect[ImportedObject]:
    """A page (``LIST_PAGE``) of the records of ``source`` that no run has listed since ``listed_since``,
    of ids past ``past``, along the index ``(source, id)``."""
    query = ImportedObject.select().where((ImportedObject.source == source) & (ImportedObject.seen_at < listed_since))
    if past is not None:
        query = query.where(ImportedObject.id > past)
    return query.order_by(ImportedObject.id).limit(LIST_PAGE)


class Importer:
    """One source's import: reads what is new in parallel, and records what it saw."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        ingest: Ingest,
        catalog: Catalog,
        source: Source,
        *,
        origin: str | None = None,
        workers: int = 4,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str],
    ):
        check_metadata(origin, None)
        self._settings = settings
        self._database = database
        self._ingest = ingest
        self._catalog = catalog
        self._source = source
        self._origin = origin
        self._workers = max(1, workers)
        self._clock = clock
        self._new_id = new_id
        table, quote = database.quote(ImportedObject._meta.table_name), database.quote
        self._lookup_sql = (
            f"SELECT {quote('id')}, {quote('size')}, {quote('version')}, {quote('outcome')} FROM {table} "
            f"WHERE {quote('id')} IN "
        )
        self._reserved: collections.deque[str] = collections.deque()  # image IDs reserved, not yet handed out
        self._reservations: set[str] = set()  # every ID this run reserved and has not released
        self._mark_sql = f"UPDATE {table} SET {quote('seen_at')} = {database.param} WHERE {quote('id')} IN "

    def run(self, *, prune: bool = False, progress: Progress | None = None) -> ImportReport:
        """List the source a page at a time (``LIST_PAGE`` objects, their records looked up together),
        read what is new or changed (``workers`` at once), then list (and with ``prune`` delete the
        images of) the recorded objects this run did not list. What it holds is a page, the reads in
        flight and a batch of rows, however many objects the source has. A store or database that
        fails stops the run (what had committed stays recorded: a second run goes on from there).

        Each read gets an image ID reserved beforehand (:class:`PendingImage`), so that ``heartbeat
        check --fix`` leaves the objects it stores alone until their row commits."""
        report = ImportReport()
        listed_since = self._clock()  # every record of an object this run lists is seen at this time or later
        with (
            (progress or _no_progress)() as advance,
            tempfile.TemporaryDirectory(prefix="heartbeat-import-") as scratch,
            concurrent.futures.ThreadPoolExecutor(self._workers, thread_name_prefix="import") as pool,
        ):
            # At most a batch and a few reads a worker ahead: a bucket of millions of objects is not
            # queued (nor its results held) all at once.
            ahead = COMMIT_BATCH + 2 * self._workers
            unread = self._to_read(report, listed_since, advance)
            in_flight: collections.deque[tuple[concurrent.futures.Future[Any], StoredObject, ImportedObject | None]]
            in_flight = collections.deque()

            def read_ahead() -> None:
                while len(in_flight) < ahead and (item := next(unread, None)) is not None:
                    image_id = self._reserve()
                    future = pool.submit(self._read_one, item[0], item[1], image_id, Path(scratch))
                    in_flight.append((future, *item))

            waiting: list[_Read] = []
            last_commit = time.monotonic()
            try:
                read_ahead()
                while in_flight:
                    future, stored, record = in_flight.popleft()
                    result = future.result()
                    read_ahead()
                    advance(0, 1)
                    report.changed += record is not None
                    if isinstance(result, _Read):
                        waiting.append(result)
                    elif result[0] != Outcome.VANISHED:  # a vanished object has no record: not listed
                        report.count(text_of(stored.key), *result)
                        if result[0] == Outcome.UNREADABLE and record is not None:
                            self._still_there(stored.key, listed_since)
                    # Rows commit in batches of COMMIT_BATCH, or of what was read in COMMIT_SECONDS: a
                    # commit costs the database a log flush, and a killed run redoes at most a batch.
                    due = time.monotonic() - last_commit >= COMMIT_SECONDS
                    if waiting and (len(waiting) >= COMMIT_BATCH or not in_flight or due):
                        for read, outcome in self._commit(waiting):
                            report.count(text_of(read.stored.key), outcome, "")
                        waiting = []
                        last_commit = time.monotonic()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                with contextlib.suppress(Exception):  # else what `heartbeat check` ages out
                    self._release_all()
                raise
        self._release_all()
        self._settle_gone(listed_since, report, prune)
        report.refused.sort()
        report.skipped.sort()
        report.gone.sort()
        return report

    def _to_read(
        self, report: ImportReport, listed_since: float, advance: Callable[[int, int], object]
    ) -> Iterator[tuple[StoredObject, ImportedObject | None]]:
        """The listed objects that are new or changed (with their records), listed a page at a time; the
        records of unchanged ones are marked as seen at ``listed_since``."""
        listing = iter(self._source.list())
        while entries := list(itertools.islice(listing, LIST_PAGE)):
            page = []
            for entry in entries:
                if isinstance(entry, Skipped):
                    report.skip(entry)
                    if entry.unreadable:
                        self._still_there(entry.key, listed_since)
                else:
                    page.append(entry)
            if not page:
                continue
            report.listed += len(page)
            by_id = {record_id(self._source.name, stored.key): stored for stored in page}
            with self._database.connection():
                # Plain statements: peewee's making of a thousand parameters, and of a model row for
                # each record, cost more than the statements themselves.
                ids = list(by_id)
                found = self._database.execute(self._lookup_sql + self._database.params(len(ids)), ids)
                changed = []
                unchanged = set()
                deleted = 0
                for key, size, version, outcome in found:
                    if (size, version) == (by_id[key].size, _version(by_id[key])):
                        unchanged.add(key)
                        if outcome == Outcome.DELETED:  # listed as skipped, every run, as gone ones are
                            report.skipped.append((text_of(by_id[key].key), DELETED_REASON))
                            deleted += 1
                    else:
                        changed.append(key)
                if unchanged:  # retried should it meet a concurrent import's commit in a deadlock
                    marks = self._database.params(len(unchanged))
                    self._database.transaction(
                        self._database.execute, self._mark_sql + marks, [listed_since, *unchanged]
                    )
                changed_records = ImportedObject.select().where(ImportedObject.id.in_(changed)) if changed else []
                records = {record.id: record for record in changed_records}
            report.unchanged += len(unchanged) - deleted
            todo = [(stored, records.get(key)) for key, stored in by_id.items() if key not in unchanged]
            advance(len(todo), 0)
            yield from todo

    def _still_there(self, key: str, listed_since: float) -> None:
        """The records of an entry that could not be read (a file, or a folder: ``key`` ends in ``/``)
        marked as listed: an unreadable folder is no deleted one, and ``--prune`` must not take its
        images. A folder's records are found by their key's start (``LIKE``, which may take in a few
        more, of names that differ in case only: never fewer)."""
        records = ImportedObject.source == self._source.name
        if key.endswith("/"):
            records &= ImportedObject.key.startswith(text_of(key))
        else:
            records &= ImportedObject.id == record_id(self._source.name, key)
        with self._database.connection():
            self._database.transaction(ImportedObject.update(seen_at=listed_since).where(records).execute)

    def _settle_gone(self, listed_since: float, report: ImportReport, prune: bool) -> None:
        """Records of objects this run did not list (seen before ``listed_since``), a page at a time:
        forgotten when they made no image of their own; handed over when an object this run listed
        holds the same picture (a file moved or renamed, or a copy: :meth:`_hand_over`); else listed
        (and with ``prune``, their images deleted, every trace)."""
        past: str | None = None
        while True:
            with self._database.connection():
                page = list(unlisted_records(self._source.name, listed_since, past))
                if not page:
                    return
                past = page[-1].id
                images = {image.id: image for image in Image.select().where(Image.id.in_([r.image_id for r in page]))}
                forgotten = []
                for record in page:
                    image = None if record.image_id is None else images.get(record.image_id)
                    if image is None or record.outcome != Outcome.NEW:
                        forgotten.append(record.id)
                        continue
                    heir = ImportedObject.get_or_none(
                        (ImportedObject.source == self._source.name)
                        & (ImportedObject.image_id == image.id)
                        & (ImportedObject.outcome == Outcome.DUPLICATE.value)
                        & (ImportedObject.seen_at >= listed_since)
                    )
                    if heir is not None:
                        self._database.transaction(self._hand_over, image, record, heir)
                        continue
                    report.gone.append(record.key)
                    if prune:
                        with contextlib.suppress(NotFound):  # deleted meanwhile
                            self._catalog.delete(image.id, by_import=True)
                        report.pruned += 1
                if forgotten:
                    self._database.transaction(ImportedObject.delete().where(ImportedObject.id.in_(forgotten)).execute)

    @staticmethod
    def _hand_over(image: Image, gone: ImportedObject, heir: ImportedObject) -> None:
        """The image of the object ``gone`` becomes the image of ``heir``, an object listed now that
        holds the same bytes (recorded as its duplicate): the picture is still in the source, so it is
        neither gone nor pruned. Where the image's bytes were the gone object itself (a bucket's, kept
        where it lay), they are now the heir."""
        if image.storage_key == gone.key:
            Image.update(storage_key=heir.key).where(Image.id == image.id).execute()
        ImportedObject.update(outcome=Outcome.NEW.value).where(ImportedObject.id == heir.id).execute()
        ImportedObject.delete().where(ImportedObject.id == gone.id).execute()

    def _read_one(
        self, stored: StoredObject, record: ImportedObject | None, image_id: str, scratch: Path
    ) -> _Read | tuple[Outcome, str]:
        """Read, hash and decode the object, and store its thumbnail and (from a folder) its bytes under
        the reserved ``image_id``: a picture waiting for its row, or what else became of it (refusals
        and deleted pictures are recorded here)."""
        # The database is asked only about what is changed, refused or deleted: a connection for each
        # object read would cost more than its row.
        if record is not None:
            with self._database.connection():
                self._forget_changed(record)
        try:
            with self._source.open(stored.key) as stream:
                return self._take(stored, stream, image_id, scratch)
        except NotFound:
            return Outcome.VANISHED, ""
        except NotAFile as error:
            return Outcome.SKIPPED, str(error)
        except Unreadable as error:
            return Outcome.UNREADABLE, str(error)
        except (UnsupportedImage, TooLarge) as error:
            return self._refuse(stored, error.description)

    def _take(
        self, stored: StoredObject, stream: BinaryIO, image_id: str, scratch: Path
    ) -> _Read | tuple[Outcome, str]:
        """:meth:`_read_one` of an open object."""
        checked = check_stream(stream, self._settings.max_upload_bytes, self._settings.max_pixels)
        with self._database.connection():
            if DeletedPicture.get_or_none(DeletedPicture.sha256 == checked.sha256) is not None:
                self._record(stored, Outcome.DELETED, None)
                return Outcome.DELETED, DELETED_REASON
        storage_key = self._source.placed_key(stored.key, image_key(image_id, checked.picture))
        if len(storage_key) > MAX_STORAGE_KEY_CHARS:
            return self._refuse(
                stored, f"its name is longer than the {MAX_STORAGE_KEY_CHARS} characters an image's key may have"
            )
        self._ingest.store_thumbnail(checked.picture, image_id, scratch / f"{image_id}.jpg")
        owned = self._source.place(stored.key, stream, storage_key)
        row = image_row(
            checked,
            image_id=image_id,
            storage_key=storage_key,
            filename=filename_of(stored.key)[:255] or f"{image_id}{checked.picture.image_type.extension}",
            origin=self._origin,
            other_data=None,
            priority=0,
            uploaded_date=0.0,  # set at commit
        )
        return _Read(stored, row, owned)

    def _reserve(self) -> str:
        """An image ID for the next read, reserved (:class:`PendingImage`) a batch at a time before any
        object of it is stored."""
        if not self._reserved:
            ids = [self._new_id() for _ in range(COMMIT_BATCH)]
            now = self._clock()
            with self._database.connection():
                self._database.transaction(
                    PendingImage.insert_many([{"id": image_id, "reserved_at": now} for image_id in ids]).execute
                )
            self._reserved.extend(ids)
            self._reservations.update(ids)
        return self._reserved.popleft()

    def _release_all(self) -> None:
        """The end of a run: every reservation it still holds ends (a next run reserves its own)."""
        self._reserved.clear()
        self._release(list(self._reservations))

    def _release(self, image_ids: list[str]) -> None:
        """Reservations done with: their images committed, or they never stored anything that stays."""
        self._reservations.difference_update(image_ids)
        with self._database.connection():
            for start in range(0, len(image_ids), LIST_PAGE):
                chunk = image_ids[start : start + LIST_PAGE]
                self._database.transaction(PendingImage.delete().where(PendingImage.id.in_(chunk)).execute)

    def _commit(self, batch: list[_Read]) -> list[tuple[_Read, Outcome]]:
        """The rows of pictures read, with their jobs and records: in one transaction those whose bytes
        no image has (nor an earlier one of the batch); the others, or all after a conflict with a
        concurrent import, one at a time."""
        with self._database.connection():
            taken = self._ingest.existing([read.row["sha256"] for read in batch])
            fresh: list[_Read] = []
            later: list[_Read] = []
            for read in batch:
                (later if read.row["sha256"] in taken else fresh).append(read)
                taken.add(read.row["sha256"])
            now = self._clock()
            for read in batch:
                read.row["uploaded_date"] = now
            outcomes: list[tuple[_Read, Outcome]] = []
            try:
                if fresh:
                    self._ingest.register_all([read.row for read in fresh], self._recorder(*fresh))
                outcomes.extend((read, Outcome.NEW) for read in fresh)
            except (peewee.IntegrityError, _DeletedMeanwhile):
                later = fresh + later
            for read in later:
                try:
                    ingested = self._ingest.register_row(read.row, owns_object=read.owned, also=self._recorder(read))
                except _DeletedMeanwhile:  # its row, object and thumbnail are gone again
                    self._record(read.stored, Outcome.DELETED, None)
                    outcomes.append((read, Outcome.DELETED))
                    continue
                outcome = Outcome.NEW if ingested.created else self._duplicate(read.stored, ingested.image)[0]
                outcomes.append((read, outcome))
        # After the rows: a reservation must not end before the row that owns its objects commits.
        self._release([read.row["id"] for read in batch])
        return outcomes

    def _refuse(self, stored: StoredObject, reason: str) -> tuple[Outcome, str]:
        with self._database.connection():
            self._record(stored, Outcome.REFUSED, None, reason)
        return Outcome.REFUSED, reason

    def _recorder(self, *reads: _Read) -> Callable[[list[Image]], None]:
        """What the transaction that registers the images of ``reads`` also does: refuse a picture
        deleted through the API since it was read (:class:`_DeletedMeanwhile`; a locking read, so that a
        deletion committing at the same moment is seen, or waits for this commit), and record them."""

        def record(images: list[Image]) -> None:
            digests = [image.sha256 for image in images]
            deleted = DeletedPicture.select(DeletedPicture.sha256).where(DeletedPicture.sha256.in_(digests))
            if self._database.features.mysql:
                deleted = deleted.for_update(self._database.features.share_lock.strip())  # type: ignore[arg-type]
            if deleted.exists():
                raise _DeletedMeanwhile
            seen = zip(reads, images, strict=True)
            self._record_all([(read.stored, Outcome.NEW, image.id, None) for read, image in seen])

        return record

    def _duplicate(self, stored: StoredObject, existing: Image) -> tuple[Outcome, str]:
        """Bytes an image has already: this very object imported by another run, or a duplicate."""
        ours = ImportedObject.get_or_none(ImportedObject.id == record_id(self._source.name, stored.key))
        if existing.storage_key == stored.key or (
            ours is not None and ours.image_id == existing.id and ours.outcome == Outcome.NEW
        ):
            self._record(stored, Outcome.NEW, existing.id)
            return Outcome.ALREADY, ""
        self._record(stored, Outcome.DUPLICATE, existing.id)
        return Outcome.DUPLICATE, ""

    def _forget_changed(self, record: ImportedObject) -> None:
        """An object whose bytes changed since it became an image: that image describes bytes that are
        gone, and goes with every trace, but for the object itself where it lies in a bucket (it is the
        one about to be read again; a folder's file has a link in the store of its own)."""
        image = None if record.image_id is None else Image.get_or_none(Image.id == record.image_id)
        if image is not None and record.outcome == Outcome.NEW:
            with contextlib.suppress(NotFound):
                self._catalog.delete(image.id, keep_object=image.storage_key == record.key, by_import=True)
        ImportedObject.delete().where(ImportedObject.id == record.id).execute()

    def _record(self, stored: StoredObject, outcome: Outcome, image_id: str | None, refused: str | None = None) -> None:
        """What this run saw of ``stored``; written again by a second run at once, it is the same row."""
        self._record_all([(stored, outcome, image_id, refused)])

    def _record_all(self, seen: list[tuple[StoredObject, Outcome, str | None, str | None]]) -> None:
        """:meth:`_record` of many objects, in one statement."""
        now = self._clock()
        rows = [
            {
                "id": record_id(self._source.name, stored.key),
                "source": self._source.name,
                # A deleted picture's object keeps no name: it may name the person (the ID is a digest).
                "key": "" if outcome == Outcome.DELETED else text_of(stored.key),
                "size": stored.size,
                "version": _version(stored),
                "outcome": outcome.value,
                "image_id": image_id,
                "refused": refused,
                "seen_at": now,
            }
            for stored, outcome, image_id, refused in seen
        ]
        ImportedObject.insert_many(rows).on_conflict_replace().execute()


@contextlib.contextmanager
def _no_progress() -> Iterator[Callable[[int, int], object]]:
    yield lambda found, read: None
