"""``heartbeat export --format coco --images DIR``: each exported picture written into a folder
under its COCO ``file_name``, upright, so that a COCO reader that ignores EXIF orientation sees the
frame the export's sizes and boxes are in."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from heartbeat.db.models import Image
from heartbeat.errors import NotFound
from heartbeat.ingest.decode import upright_picture
from heartbeat.storage import Storage


class UprightFolder:
    """A picture sink for :class:`heartbeat.catalog.export.Exporter`: ``folder(image, file_name)`` reads the
    image's bytes through the storage (local or S3) and writes them into the folder, one picture at a
    time. A picture stored upright (orientation 1) is copied as it is; any other is turned upright
    (:func:`upright_picture`). Each file appears whole or not at all.

    Images whose bytes the store lacks are listed in ``missing``, those Pillow cannot decode in
    ``unreadable``, and the export goes on.
    """

    def __init__(self, storage: Storage, folder: Path):
        self._storage = storage
        self._folder = folder
        self.missing: list[str] = []
        self.unreadable: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, image: Image, file_name: str) -> None:
        target = self._folder / file_name
        partial = target.with_name(f".{file_name}.partial")
        try:
            with self._storage.open(image.storage_key) as stream, open(partial, "wb") as out:
                if (image.orientation or 1) == 1:
                    shutil.copyfileobj(stream, out)
                else:
                    out.write(self._upright(image, stream))
        except NotFound:
            self.missing.append(image.id)
        except _Unreadable:
            self.unreadable.append(image.id)
        else:
            os.replace(partial, target)
            return
        partial.unlink(missing_ok=True)

    @staticmethod
    def _upright(image: Image, stream: BinaryIO) -> bytes:
        try:
            return upright_picture(stream)
        except Exception as error:  # whatever Pillow raises on bytes it decoded at upload and cannot now
            raise _Unreadable(image.id) from error


class _Unreadable(Exception):
    """The stored bytes of an image no longer decode."""
