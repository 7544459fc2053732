"""The picture formats Heartbeat stores: the one list, read by ingest (what an upload may be) and by
the CLI (which files of a folder ``heartbeat upload`` sends)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ImageType:
    content_type: str
    suffixes: tuple[str, ...]  # file name endings, the one a stored image gets first

    @property
    def extension(self) -> str:
        return self.suffixes[0]


# By Pillow's format name.
IMAGE_TYPES = {
    "JPEG": ImageType("image/jpeg", (".jpg", ".jpeg", ".jpe", ".jfif")),
    "PNG": ImageType("image/png", (".png",)),
    "GIF": ImageType("image/gif", (".gif",)),
    "WEBP": ImageType("image/webp", (".webp",)),
    "BMP": ImageType("image/bmp", (".bmp",)),
    "TIFF": ImageType("image/tiff", (".tiff", ".tif")),
}
IMAGE_SUFFIXES = frozenset(suffix for image_type in IMAGE_TYPES.values() for suffix in image_type.suffixes)
EXTENSIONS = {image_type.content_type: image_type.extension for image_type in IMAGE_TYPES.values()}


def extension_of(content_type: str | None) -> str:
    """The file name ending of a stored image's content type (``.jpg`` for ``image/jpeg``); ``""``
    for a type that is not one of ``IMAGE_TYPES``."""
    return EXTENSIONS.get(content_type or "", "")
