"""The upright frame every coordinate in Heartbeat is in, as a person sees a picture: EXIF orientation
(1 to 8, CIPA DC-008 "Exif", tag 0x0112) read and applied with one table.

A camera held sideways stores its pixels sideways and says so in EXIF. The server reads that once, at
upload (``ingest/decode.py``), and its thumbnails are turned here; the worker SDK's ``open_upright``
turns the pictures a handler is given with the same table, so that the two cannot disagree. Pillow is
imported when a function here is called: a worker machine needs it only if its handlers use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import PIL.Image

ORIENTATION_TAG = 0x0112  # EXIF's Orientation
# EXIF orientation -> the transpose (a PIL.Image.Transpose name) that turns the stored pixels upright;
# the table of PIL.ImageOps.exif_transpose. 1, and any value outside 1-8, needs none.
UPRIGHT_TRANSPOSES = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}
SIDEWAYS = frozenset({5, 6, 7, 8})  # the orientations whose upright width is the stored height
# The formats Pillow itself turns upright: a TIFF's size is upright once opened, its pixels once loaded
# (its orientation tag then dropped; PIL.TiffImagePlugin, since Pillow 8).
TURNED_BY_PILLOW = frozenset({"TIFF"})


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """``(width, height)`` of a picture stored ``width`` x ``height`` pixels, once turned upright."""
    return (height, width) if orientation in SIDEWAYS else (width, height)


def read_orientation(picture: PIL.Image.Image) -> int:
    """The picture's EXIF orientation, 1 to 8; 1 when it has none or an unknown value. For some formats
    (PNG) Pillow reads EXIF only with the pixels: call it on a loaded picture."""
    orientation = picture.getexif().get(ORIENTATION_TAG, 1)
    return orientation if orientation in UPRIGHT_TRANSPOSES else 1


def turn_upright(picture: PIL.Image.Image, orientation: int) -> PIL.Image.Image:
    """``picture`` turned upright as ``orientation`` says (the picture itself for 1: no copy)."""
    import PIL.Image

    name = UPRIGHT_TRANSPOSES.get(orientation)
    return picture if name is None else picture.transpose(PIL.Image.Transpose[name])
