"""``heartbeat check``: rows whose bytes are gone, objects no row owns, direct uploads never completed.

Bytes are always stored before their row is committed, and deleted only after its deletion is, so a
crash, or a store that fails during a delete, can leave an object without a row (an orphan) but
never a row without its object, unless the store itself lost it. Objects are
listed before rows are read, so an upload that finishes during the check is seen as owned; an
object younger than the grace period is left alone all the same (its row may be on its way).

``heartbeat import`` reserves its image IDs (:class:`PendingImage`) before it stores their objects,
and a reservation ends only once its image's row has committed: the objects of a reserved ID are
owned, however old their files (a hard link keeps its file's modification time). Reservations are
read before the images, so an object is seen as owned by one or the other. A reservation older than
``RESERVATION_SECONDS`` is a killed import's: no longer an owner, and removed by ``--fix``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TextIO

from heartbeat.db.models import Image, ImportedObject, PendingImage, Software, Upload
from heartbeat.ingest.direct_uploads import STALE_UPLOAD_GRACE_SECONDS, discard_upload
from heartbeat.ingest.thumbnails import thumbnail_key
from heartbeat.queue import JobQueue
from heartbeat.storage import Storage, StoredObject
from heartbeat.storage.sources import OWN_PREFIXES

# The key prefixes Heartbeat writes; anything else in a shared bucket is none of its business.
PREFIXES = OWN_PREFIXES
DEFAULT_GRACE_SECONDS = 600
RESERVATION_SECONDS = 3600  # far longer than an import holds an ID between storing its objects and their row


@dataclasses.dataclass
class Findings:
    images: int = 0
    objects: int = 0
    rows_without_objects: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (image id, key)
    orphaned_objects: list[StoredObject] = dataclasses.field(default_factory=list)
    recent_unowned_objects: int = 0
    stale_uploads: list[Upload] = dataclasses.field(default_factory=list)
    stale_reservations: list[str] = dataclasses.field(default_factory=list)  # image IDs of killed imports


def find_problems(storage: Storage, *, now: float, grace_seconds: float) -> Findings:
    """Compare the store's listing with the overview table and the open direct uploads."""
    findings = Findings()
    listed = {stored.key: stored for prefix in PREFIXES for stored in storage.list_objects(prefix)}
    # Objects imported where they lie (s3://BUCKET/KEY) are listed with their source, once for all
    # its images, but they are the user's: an object there that no image owns is no orphan.
    imported = _imported_prefixes()
    for prefix in imported:
        listed.update((stored.key, stored) for stored in storage.list_objects(prefix))
    findings.objects = len(listed)
    reserved: set[str] = set()
    for reservation in PendingImage.select().iterator():
        if reservation.reserved_at < now - max(grace_seconds, RESERVATION_SECONDS):
            findings.stale_reservations.append(reservation.id)
        else:
            reserved.add(reservation.id)
    owned: set[str] = set()
    for image in Image.select(Image.id, Image.storage_key).iterator():
        findings.images += 1
        owned.update((image.storage_key, thumbnail_key(image.id)))
        # Not listed may mean stored after the listing was made: only the store's own answer counts.
        if image.storage_key not in listed and storage.stat(image.storage_key) is None:
            findings.rows_without_objects.append((image.id, image.storage_key))
    for upload in Upload.select().iterator():
        if upload.expires_at + STALE_UPLOAD_GRACE_SECONDS < now:
            findings.stale_uploads.append(upload)
        owned.add(upload.storage_key)
    for key, stored in sorted(listed.items()):
        if key in owned or not key.startswith(PREFIXES) or _image_id_of(key) in reserved:
            continue
        if stored.modified_at > now - grace_seconds:
            findings.recent_unowned_objects += 1
        else:
            findings.orphaned_objects.append(stored)
    return findings


def _image_id_of(key: str) -> str:
    """The image ID an object of the store's is named after (``images/ab/ID.png``, ``thumbnails/ab/ID.jpg``)."""
    return key.rpartition("/")[2].partition(".")[0]


def _imported_prefixes() -> list[str]:
    """The bucket prefixes (``s3://BUCKET/PREFIX``) that ``heartbeat import`` has read, none inside another."""
    sources = sorted(
        {
            row.source
            for row in ImportedObject.select(ImportedObject.source).distinct()
            if row.source.startswith("s3://")
        }
    )
    return [source for source in sources if not any(source != other and source.startswith(other) for other in sources)]


def run_check(
    storage: Storage,
    queue: JobQueue,
    *,
    fix: bool,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    out: TextIO,
    clock: Callable[[], float] = time.time,
) -> int:
    """Print what is wrong (and with ``fix``, remove orphans and stale uploads, and set job counts that
    differ from a recount to it); 1 if problems remain."""
    miscounted = _check_counts(queue, fix=fix, out=out)
    findings = find_problems(storage, now=clock(), grace_seconds=grace_seconds)
    print(f"checked {findings.images} images and {findings.objects} objects", file=out)
    done = " (removed)" if fix else ""
    for image_id, key in findings.rows_without_objects:
        print(f"row without its object: image {image_id} ({key})", file=out)
    for stored in findings.orphaned_objects:
        if fix:
            storage.delete(stored.key)
        print(f"object without a row: {stored.key} ({stored.size} bytes){done}", file=out)
    if findings.stale_reservations and fix:
        stale = findings.stale_reservations
        for start in range(0, len(stale), 1000):
            PendingImage.delete().where(PendingImage.id.in_(stale[start : start + 1000])).execute()
    if findings.stale_reservations:
        print(
            f"{len(findings.stale_reservations)} image IDs reserved by imports that did not finish, "
            f"over {RESERVATION_SECONDS} s ago{done}",
            file=out,
        )
    for upload in findings.stale_uploads:
        if fix:
            discard_upload(storage, upload)
        expired = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(upload.expires_at))
        print(f"stale direct upload: {upload.id} (its URL expired {expired} UTC, never completed){done}", file=out)
    if findings.recent_unowned_objects:
        print(
            f"{findings.recent_unowned_objects} objects without rows are younger than {grace_seconds:g} s "
            "and left alone (uploads in flight, perhaps)",
            file=out,
        )
    fixable = len(findings.orphaned_objects) + len(findings.stale_uploads)
    stale_reservations = len(findings.stale_reservations)
    print(
        f"{len(findings.rows_without_objects)} rows without their object, {len(findings.orphaned_objects)} objects "
        f"without a row, {len(findings.stale_uploads)} stale uploads" + (f"; {fixable} removed" if fix else ""),
        file=out,
    )
    if findings.rows_without_objects:
        print("rows without objects are not removed: restore their bytes, or DELETE /v1/images/{id}", file=out)
    unresolved = len(findings.rows_without_objects) + (0 if fix else fixable + miscounted + stale_reservations)
    return 1 if unresolved else 0


def _check_counts(queue: JobQueue, *, fix: bool, out: TextIO) -> int:
    """Compare every software's maintained job counts with a recount; returns how many differ."""
    miscounted = 0
    for software in Software.select().order_by(Software.name):
        differences = queue.counters.count_differences(software)
        if not differences:
            continue
        miscounted += 1
        if fix:
            queue.counters.repair_counts(software)
        told = ", ".join(f"{status} {kept} (recount {actual})" for status, (kept, actual) in differences.items())
        print(
            f"job counts of {software.name} differ from a recount: {told}" + (" (set to the recount)" if fix else ""),
            file=out,
        )
    return miscounted
