"""Pictures in the frame every coordinate in Heartbeat is in: upright, as a person sees them.

An image's bytes are kept as uploaded. A camera held sideways stores its pixels sideways and says so
in EXIF (orientation 1 to 8); the server reads that once, at upload, into the image's
``orientation``, and its ``width``, ``height``, thumbnail and the dashboard's boxes are all upright.
A handler that reports boxes must find them in the upright picture: :func:`open_upright` decodes the
bytes with Pillow and turns them as the record says. (OpenCV's ``cv2.imdecode`` with its default
flags turns them as well; plain ``PIL.Image.open`` does not.)

The server turns its thumbnails with the same table, so that the two cannot disagree. Pillow is
imported when a function here is called: a worker machine needs it only if its handlers use them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import PIL.Image

    from heartbeat.worker.models import Image

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


def open_upright(image_bytes: bytes, image: Image | None = None) -> PIL.Image.Image:
    """The picture's first frame, decoded by Pillow and turned upright: ``image.orientation`` says how
    (the bytes' own EXIF when no record is given, or its server is older than ``orientation``). Its
    size is the record's ``width`` x ``height``, and a box found in it is where the dashboard draws it.

    Raises what ``PIL.Image.open`` and ``load`` raise for bytes that are not a picture.
    """
    import PIL.Image

    picture = PIL.Image.open(io.BytesIO(image_bytes))
    picture.load()
    if picture.format in TURNED_BY_PILLOW:
        return picture  # upright already
    orientation = image.orientation if image is not None and image.orientation is not None else None
    return turn_upright(picture, read_orientation(picture) if orientation is None else orientation)
