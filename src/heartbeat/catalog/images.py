"""The overview table: reading, listing and deleting images."""

from __future__ import annotations

import logging
import time
from typing import Any

import peewee

from heartbeat.catalog.registry import Registry
from heartbeat.db.database import Database, transactional
from heartbeat.db.models import DELETED_OUTCOME, DeletedPicture, Event, Image, ImportedObject, JobStatus
from heartbeat.db.paging import UPLOAD_ORDER, keyset_page
from heartbeat.errors import BackendUnavailable, NotFound
from heartbeat.events.outbox import ERASED_DATA, IMAGE_DELETED, NewEvent
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.privacy import actions, audit
from heartbeat.query.resolve import Resolved
from heartbeat.queue import JobQueue
from heartbeat.storage import Storage

log = logging.getLogger(__name__)


class Catalog:
    """Images as the API shows them; deleting one removes every trace of it."""

    def __init__(self, database: Database, storage: Storage, registry: Registry, queue: JobQueue):
        self._database = database
        self._storage = storage
        self._registry = registry
        self._queue = queue
        self._by_id_sql = (
            f"SELECT {', '.join(IMAGE_COLUMNS)} FROM {database.quote(Image._meta.table_name)} WHERE id IN "
        )

    def get(self, image_id: str) -> Image:
        image = Image.get_or_none(Image.id == image_id)
        if image is None:
            raise NotFound(f"no image {image_id!r}")
        return image

    def page(
        self,
        *,
        origin: str | None,
        status: str | None,
        cursor: str | None,
        limit: int,
        newest_first: bool = False,
        where: Resolved | None = None,
    ) -> tuple[list[Image], str | None]:
        """Images oldest (or newest) first; ``status`` is ``<software>:<status>`` (checked by the
        caller), ``where`` a resolved query (:meth:`Registry.where`). Its statements stop at the
        database's time limit (:class:`~heartbeat.errors.StatementTimeout`)."""
        query = Image.select()
        order: tuple[peewee.Field, peewee.Field] = (Image.uploaded_date, Image.id)
        if status is not None:
            software_name, _, job_status = status.partition(":")
            software = self._registry.get(software_name)
            query, order = self._queue.reads.images_with_status(software, JobStatus(job_status))
        if origin is not None:
            query = query.where(Image.origin == origin)
        if where is not None:
            query = query.where(self._queue.reads.where(where))
        with self._database.time_limit():
            return keyset_page(query, order, UPLOAD_ORDER, cursor, limit, descending=newest_first, key=_upload_position)

    def count(self, *, where: Resolved | None = None) -> int:
        """How many images there are (that ``where`` selects); its cost grows with them: for exports.
        Stops at the database's time limit (:class:`~heartbeat.errors.StatementTimeout`)."""
        query = Image.select()
        if where is not None:
            query = query.where(self._queue.reads.where(where))
        with self._database.time_limit():
            return int(query.count())

    def set_priority(self, image_id: str, priority: int) -> Image:
        """Change an image's priority; its pending jobs are claimed in the new order from now on."""
        self._set_priority(image_id, priority)
        return self.get(image_id)

    @transactional
    def _set_priority(self, image_id: str, priority: int) -> None:
        self.get(image_id)  # 404 for an unknown image
        Image.update(priority=priority).where(Image.id == image_id).execute()
        self._queue.rows.reprioritize(image_id, priority)

    def delete(
        self, image_id: str, *, keep_object: bool = False, by_import: bool = False, token_id: str | None = None
    ) -> None:
        """The row, its jobs, extra-table rows and import records in one transaction, then its bytes
        (with ``keep_object``, only its thumbnail: for an imported object whose bytes changed).

        A picture deleted by a user is not imported again: its sha256 is kept (:class:`DeletedPicture`,
        a digest, not the picture) and the import records of its objects are marked deleted. An import
        that deletes an image (``by_import``: its object is gone or changed) keeps neither.

        The commit is the deletion. A database that fails before it changes nothing (503). A store
        that fails after it cannot undo it: the bytes it kept are objects without a row, which
        ``heartbeat check --fix`` removes, and the delete succeeds, with a warning in the log.
        The audit records it (with ``token_id``, the token of the request that asked for it) in the
        same transaction.
        """
        image = self._delete_image(image_id, by_import, token_id)
        keys = [thumbnail_key(image.id)] if keep_object else [image.storage_key, thumbnail_key(image.id)]
        for done, key in enumerate(keys):
            try:
                self._storage.delete(key)
            except (BackendUnavailable, OSError) as error:
                # A store that failed once will likely fail again: the rest waits for `heartbeat check --fix`.
                log.warning(
                    "image %s is deleted but its objects %s are left behind (%s); `heartbeat check --fix` removes them",
                    image_id,
                    ", ".join(keys[done:]),
                    error,
                )
                return

    @transactional
    def _delete_image(self, image_id: str, by_import: bool, token_id: str | None) -> Image:
        image = self.get(image_id)
        self.delete_rows([image], keep_digests=not by_import)
        detail = {"by": "import"} if by_import else {}
        audit.write_entry(actions.IMAGE_DELETED, time.time(), token_id=token_id, image_ids=[image_id], **detail)
        return image

    def delete_objects(self, image_ids: list[str]) -> list[Image]:
        """Remove the bytes and thumbnails of those of these images that exist (an erasure's first
        step: its rows go after, by :meth:`delete_rows`, so that a crash between the two leaves rows
        that the erasure, run again, removes, never bytes that nothing names); returns those images.
        Raises :class:`BackendUnavailable` when the store fails (nothing is assumed removed)."""
        images = list(Image.select().where(Image.id.in_(image_ids)))
        keys = [key for image in images for key in (image.storage_key, thumbnail_key(image.id))]
        try:
            self._storage.delete_many(keys)
        except OSError as error:
            raise BackendUnavailable(f"storage could not delete objects: {error}") from error
        return images

    def delete_rows(self, images: list[Image], *, keep_digests: bool) -> None:
        """Every row of these images (call inside a transaction): theirs, their jobs (counts
        adjusted), extra-table rows and import records; their earlier events keep their IDs and types
        alone; an ``image.deleted`` event each. With ``keep_digests`` (a user's delete, see
        :meth:`delete`) their sha256 and their import records, marked deleted, stay so that an import
        does not bring them back; without (an import's delete, an erasure), nothing of them stays."""
        if not images:
            return
        image_ids = sorted(image.id for image in images)
        self._queue.rows.delete_image_rows(image_ids)
        Image.delete().where(Image.id.in_(image_ids)).execute()
        # After the images' rows: the jobs' and the images' deletes follow each other as closely as before.
        records = ImportedObject.image_id.in_(image_ids)
        if not keep_digests:  # an object imported again after its image is gone is read again, as a new one
            ImportedObject.delete().where(records).execute()
        else:
            ImportedObject.update(outcome=DELETED_OUTCOME, image_id=None, key="").where(records).execute()
            now = time.time()
            deleted = [{"sha256": image.sha256, "deleted_at": now} for image in images]
            DeletedPicture.insert_many(deleted).on_conflict_replace().execute()
        # Every trace: the earlier events of the images keep their IDs and types, no longer fields or results.
        Event.update(data=ERASED_DATA).where(Event.image_id.in_(image_ids)).execute()
        self._queue.outbox.add_many(
            [NewEvent(IMAGE_DELETED, {"id": image_id}, None, image_id) for image_id in image_ids]
        )

    def by_id(self, image_ids: list[str]) -> dict[str, Image]:
        """The images with these IDs (a claim reads them for every job it hands out: one short statement)."""
        if not image_ids:
            return {}
        images = {}
        for row in self._database.execute(self._by_id_sql + self._database.params(len(image_ids)), image_ids):
            fields = dict(zip(IMAGE_COLUMNS, row, strict=True))
            fields["other_data"] = Image.other_data.python_value(fields["other_data"])
            images[fields["id"]] = Image(**fields)
        return images


def _upload_position(image: Image) -> tuple[float, str]:
    return image.uploaded_date, image.id


IMAGE_COLUMNS = tuple(field.column_name for field in Image._meta.sorted_fields)


def describe_image(image: Image, jobs: dict[str, str] | None = None) -> dict[str, Any]:
    """An image as the API shows it."""
    described = {
        "id": image.id,
        "filename": image.filename,
        "uploaded_date": image.uploaded_date,
        "origin": image.origin,
        "other_data": image.other_data,
        "sha256": image.sha256,
        "size": image.size,
        "content_type": image.content_type,
        "width": image.width,
        "height": image.height,
        # None only until the migration at start has read the bytes of an image stored before the field
        "orientation": image.orientation or 1,
        "priority": image.priority,
    }
    if jobs is not None:
        described["jobs"] = jobs
    return described
