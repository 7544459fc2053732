"""The overview table: reading, listing and deleting images."""

from __future__ import annotations

import logging
from typing import Any

from heartbeat.db.database import database_proxy, placeholder, quoted
from heartbeat.db.models import Image, job_model
from heartbeat.errors import BackendUnavailable, InvalidInput, NotFound
from heartbeat.paging import UPLOAD_ORDER, after, page_of
from heartbeat.queue import delete_image_rows, reprioritize
from heartbeat.registry import STATUSES, Registry
from heartbeat.storage import Storage
from heartbeat.thumbnails import thumbnail_key

log = logging.getLogger(__name__)


class Catalog:
    """Images as the API shows them; deleting one removes every trace of it."""

    def __init__(self, storage: Storage, registry: Registry):
        self._storage = storage
        self._registry = registry

    def get(self, image_id: str) -> Image:
        image = Image.get_or_none(Image.id == image_id)
        if image is None:
            raise NotFound(f"no image {image_id!r}")
        return image

    def page(
        self, *, origin: str | None, status: str | None, cursor: str | None, limit: int, newest_first: bool = False
    ) -> tuple[list[Image], str | None]:
        """Images oldest (or newest) first; ``status`` is ``<software>:<status>``."""
        query = Image.select()
        if origin is not None:
            query = query.where(Image.origin == origin)
        if status is not None:
            software_name, _, job_status = status.partition(":")
            if job_status not in STATUSES:
                raise InvalidInput(f"status must be <software>:<{'|'.join(STATUSES)}>")
            job = job_model(self._registry.get(software_name).name)
            query = query.join(job, on=(job.image_id == Image.id)).where(job.status == job_status)
        position = UPLOAD_ORDER.parse(cursor)
        order = (Image.uploaded_date, Image.id)
        if position is not None:
            query = query.where(after(order, position, descending=newest_first))
        sort = [column.desc() for column in order] if newest_first else list(order)
        images = list(query.order_by(*sort).limit(limit + 1))
        return page_of(images, limit, lambda image: (image.uploaded_date, image.id), UPLOAD_ORDER)

    def set_priority(self, image_id: str, priority: int) -> Image:
        """Change an image's priority; its pending jobs are claimed in the new order from now on."""
        with database_proxy.atomic():
            self.get(image_id)  # 404 for an unknown image
            Image.update(priority=priority).where(Image.id == image_id).execute()
            reprioritize(image_id, priority)
        return self.get(image_id)

    def delete(self, image_id: str) -> None:
        """The row, its jobs and extra-table rows in one transaction, then its bytes.

        The commit is the deletion. A database that fails before it changes nothing (503). A store
        that fails after it cannot undo it: the bytes it kept are objects without a row, which
        ``heartbeat check --fix`` removes, and the delete succeeds, with a warning in the log.
        """
        with database_proxy.atomic():
            image = self.get(image_id)
            delete_image_rows(image_id)
            image.delete_instance()
        keys = [image.storage_key, thumbnail_key(image.id)]
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


IMAGE_COLUMNS = tuple(field.column_name for field in Image._meta.sorted_fields)


def images_by_id(image_ids: list[str]) -> dict[str, Image]:
    """The images with these IDs (a claim reads them for every job it hands out: one short statement)."""
    if not image_ids:
        return {}
    p = placeholder()
    sql = (
        f"SELECT {', '.join(IMAGE_COLUMNS)} FROM {quoted(Image._meta.table_name)}"
        f" WHERE id IN ({', '.join(p for _ in image_ids)})"
    )
    images = {}
    for row in database_proxy.execute_sql(sql, image_ids).fetchall():
        fields = dict(zip(IMAGE_COLUMNS, row, strict=True))
        fields["other_data"] = Image.other_data.python_value(fields["other_data"])
        images[fields["id"]] = Image(**fields)
    return images


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
        "priority": image.priority,
    }
    if jobs is not None:
        described["jobs"] = jobs
    return described
