"""One look at an uploaded picture: Pillow decodes it whole, and that one decode is the check, the
upright size and the source of the thumbnail.

A file is a picture only if Pillow decodes every pixel of the frame that workers, browsers and the
thumbnail read (the first frame of an animation) without error or truncation: ``Image.verify()``
alone decodes no JPEG data, so a truncated JPEG would pass it. A JPEG is decoded at the smallest
DCT scale that still gives its thumbnail (libjpeg still reads every coded block, so a truncated or
cut file fails as it would at full size); other formats have no cheaper decode than the whole.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import BinaryIO

import PIL.Image

from heartbeat.errors import TooLarge, UnsupportedImage
from heartbeat.image_types import IMAGE_TYPES, ImageType
from heartbeat.thumbnails import thumbnail_size
from heartbeat.worker.pictures import read_orientation, upright_size


@dataclasses.dataclass(frozen=True)
class Picture:
    """What the decode said about a file."""

    image_type: ImageType
    width: int  # upright: after ``orientation``
    height: int
    orientation: int  # EXIF orientation, 1 to 8 (1 when absent)
    decoded: PIL.Image.Image  # the first frame's pixels as stored (not turned), at least thumbnail-sized


def read_picture(file: BinaryIO, max_pixels: int) -> Picture:
    """Decode the file (open for reading, at its start) whole.

    Raises :class:`UnsupportedImage` when it is not one of ``IMAGE_TYPES`` or does not decode whole,
    and :class:`TooLarge` when it has more than ``max_pixels`` pixels (checked before decoding).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(file) as picture:
                image_type = IMAGE_TYPES.get(picture.format or "")
                if image_type is None:
                    raise UnsupportedImage()
                width, height = picture.size
                if width * height > max_pixels:
                    raise TooLarge(f"the image has {width * height} pixels, more than {max_pixels}")
                if picture.format == "JPEG":
                    picture.draft(None, thumbnail_size(width, height))
                picture.load()
                orientation = read_orientation(picture)
    except PIL.Image.DecompressionBombError:
        raise TooLarge(f"the image has more than {max_pixels} pixels") from None
    except PIL.UnidentifiedImageError:  # its message names the spooled file: no detail to give
        raise UnsupportedImage() from None
    except (TooLarge, UnsupportedImage, MemoryError):
        raise
    except Exception as error:  # whatever Pillow raises on these bytes (OSError mostly), they are no picture
        raise UnsupportedImage(f"{UnsupportedImage().description} It does not decode whole: {error}") from None
    width, height = upright_size(width, height, orientation)
    return Picture(image_type, width, height, orientation, picture)
