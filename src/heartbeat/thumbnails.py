"""Thumbnails: made once per image with Pillow at upload, kept in the object store beside the image."""

from __future__ import annotations

from pathlib import Path

import PIL.Image
import PIL.ImageOps

THUMBNAIL_SIZE = (320, 320)
THUMBNAIL_TYPE = "image/jpeg"


def thumbnail_key(image_id: str) -> str:
    return f"thumbnails/{image_id[:2]}/{image_id}.jpg"


def write_thumbnail(source: Path, target: Path) -> None:
    """A JPEG no larger than ``THUMBNAIL_SIZE``, upright (EXIF orientation applied), first frame only."""
    with PIL.Image.open(source) as picture:
        picture.seek(0)
        picture.draft("RGB", THUMBNAIL_SIZE)  # JPEG: decode at a reduced scale, far faster
        small = PIL.ImageOps.exif_transpose(picture.convert("RGB"))
        small.thumbnail(THUMBNAIL_SIZE)
        small.save(target, "JPEG", quality=80)
