"""One look at an uploaded picture: Pillow decodes it whole, and that one decode is the check, the
upright size and the source of the thumbnail.

A file is a picture only if Pillow decodes every pixel of the frame that workers, browsers and the
thumbnail read (the first frame of an animation) without error or truncation: ``Image.verify()``
alone decodes no JPEG data, so a truncated JPEG would pass it. A JPEG is decoded at the smallest
DCT scale that still gives its thumbnail (libjpeg still reads every coded block, so a truncated or
cut file fails as it would at full size); other formats have no cheaper decode than the whole.

The bytes stay as uploaded; :func:`upright_picture` makes the copy a reader that ignores EXIF
(many COCO tools) needs: the frame every width, height and box is in.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from typing import Any, BinaryIO

import PIL.Image
import PIL.ImageOps

from heartbeat.errors import TooLarge, UnsupportedImage
from heartbeat.ingest.image_types import IMAGE_TYPES, ImageType
from heartbeat.ingest.thumbnails import thumbnail_size
from heartbeat.upright import TURNED_BY_PILLOW, read_orientation, upright_size


@dataclasses.dataclass(frozen=True)
class Picture:
    """What the decode said about a file."""

    image_type: ImageType
    width: int  # upright: after ``orientation``
    height: int
    orientation: int  # EXIF orientation of the bytes, 1 to 8 (1 when absent)
    decoded: PIL.Image.Image  # the first frame's pixels as Pillow decoded them, at least thumbnail-sized
    turn: int  # the orientation still to apply to ``decoded``: 1 for a TIFF, which Pillow turned


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
                in_bytes = read_orientation(picture)  # a TIFF's, which its loading drops
                picture.load()
                turn = read_orientation(picture)  # after the pixels: a PNG's EXIF comes with them
                orientation = in_bytes if picture.format in TURNED_BY_PILLOW else turn
    except PIL.Image.DecompressionBombError:
        raise TooLarge(f"the image has more than {max_pixels} pixels") from None
    except PIL.UnidentifiedImageError:  # its message names the spooled file: no detail to give
        raise UnsupportedImage() from None
    except (TooLarge, UnsupportedImage, MemoryError):
        raise
    except Exception as error:  # whatever Pillow raises on these bytes (OSError mostly), they are no picture
        raise UnsupportedImage(f"{UnsupportedImage().description} It does not decode whole: {error}") from None
    width, height = upright_size(width, height, turn)  # a TIFF's size is upright as opened
    return Picture(image_type, width, height, orientation, picture, turn)


# Encoder options of a picture saved again: JPEG near its own quality; PNG, GIF and the rest lossless.
REENCODE_OPTIONS: dict[str, dict[str, Any]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


def upright_picture(stream: BinaryIO) -> bytes:
    """The picture in ``stream`` (its first frame) turned upright as its EXIF orientation says, its
    orientation tag removed, saved again in its own format with its other EXIF and its colour
    profile: what a person sees, and a reader that ignores EXIF sees the same. One picture in memory.

    (``PIL.ImageOps.exif_transpose``: the same table as ``heartbeat.upright``.) Raises what
    Pillow raises for bytes it cannot decode.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
        with PIL.Image.open(stream) as picture:
            picture.load()
            image_format = picture.format or "PNG"
            icc_profile = picture.info.get("icc_profile")
            upright = PIL.ImageOps.exif_transpose(picture)
    options = dict(REENCODE_OPTIONS.get(image_format, {}))
    if icc_profile:
        options["icc_profile"] = icc_profile
    out = io.BytesIO()
    upright.save(out, image_format, exif=upright.getexif(), **options)
    return out.getvalue()
