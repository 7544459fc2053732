"""Pictures in the frame every coordinate in Heartbeat is in: upright, as a person sees them.

An image's bytes are kept as uploaded. A camera held sideways stores its pixels sideways and says so
in EXIF (orientation 1 to 8); the server reads that once, at upload, into the image's
``orientation``, and its ``width``, ``height``, thumbnail and the dashboard's boxes are all upright.
A handler that reports boxes must find them in the upright picture: :func:`open_upright` decodes the
bytes with Pillow and turns them as the record says. (OpenCV's ``cv2.imdecode`` with its default
flags turns them as well; plain ``PIL.Image.open`` does not.)

The server turns its thumbnails with the same table (:mod:`heartbeat.upright`), so that the two cannot
disagree. Pillow is imported when a function here is called: a worker machine needs it only if its
handlers use them.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import PIL.Image

    from heartbeat.worker.models import Image

from heartbeat.upright import TURNED_BY_PILLOW, read_orientation, turn_upright


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
