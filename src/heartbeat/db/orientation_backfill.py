"""Images stored before ``orientation`` was recorded get it, and their upright size, at start.

Their rows have ``orientation`` NULL (the column came without a default: see ``db/models.py``) and
``width``/``height`` as the pixels are stored, not upright. ``Service.upgrade`` calls
:func:`fill_orientations` at every start: it reads each such image's bytes from storage once
(a few at a time, for stores where each read is a round trip), lets Pillow read the size and EXIF,
and writes both, a batch per transaction, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import warnings
from collections.abc import Callable

import PIL.Image
from tqdm import tqdm

from heartbeat.db.database import Database
from heartbeat.db.models import Image
from heartbeat.errors import BackendUnavailable, NotFound
from heartbeat.storage import Storage
from heartbeat.upright import TURNED_BY_PILLOW, read_orientation, upright_size

log = logging.getLogger(__name__)

BATCH_ROWS = 200
READERS = 8  # images read from storage at once
PROGRESS_BAR_FROM = 1000  # images: fewer are done before anyone would watch a bar


def fill_orientations(database: Database, storage: Callable[[], Storage]) -> int:
    """Read the orientation and upright size of every image whose row has none; returns how many.
    ``storage()`` opens the store, called only when such images exist.

    Call with a connection. An image whose bytes are missing or unreadable keeps its size and gets
    orientation 1, with a warning (``heartbeat check`` lists rows without their bytes). Raises
    :class:`BackendUnavailable` when the store does not answer: the images read so far keep theirs.
    """
    waiting = Image.select().where(Image.orientation.is_null())
    total = waiting.count()
    if not total:
        return 0
    log.info("reading the orientation of %d images stored before it was recorded", total)
    store = storage()
    done = 0
    seen: set[str] = set()
    bar = tqdm(total=total, unit="image", desc="orientations", disable=total < PROGRESS_BAR_FROM, file=sys.stderr)
    with bar, concurrent.futures.ThreadPoolExecutor(READERS) as pool:
        while batch := [image for image in waiting.limit(BATCH_ROWS) if image.id not in seen]:
            seen.update(image.id for image in batch)
            found = list(pool.map(lambda image: _read(store, image), batch))
            database.transaction(_write, found)
            done += len(found)
            bar.update(len(found))
    log.info("read the orientation of %d images", done)
    return done


def _read(storage: Storage, image: Image) -> tuple[str, int, int, int]:
    """``(id, orientation, upright width, upright height)`` from the image's bytes."""
    try:
        with storage.open(image.storage_key) as stream, warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(stream) as picture:
                orientation = read_orientation(picture)
                if picture.format in TURNED_BY_PILLOW:  # its size is upright as opened
                    return (image.id, orientation, *picture.size)
                return (image.id, orientation, *upright_size(*picture.size, orientation))
    except BackendUnavailable:
        raise
    except NotFound:
        log.warning("image %s: its bytes are missing (%s); orientation 1 assumed", image.id, image.storage_key)
    except Exception as error:  # anything Pillow raises on bytes it stored once and cannot read now
        log.warning("image %s: its bytes cannot be read (%s); orientation 1 assumed", image.id, error)
    return image.id, 1, image.width, image.height


def _write(found: list[tuple[str, int, int, int]]) -> None:
    for image_id, orientation, width, height in found:
        fields = {Image.orientation: orientation, Image.width: width, Image.height: height}
        Image.update(fields).where((Image.id == image_id) & Image.orientation.is_null()).execute()
