"""Thumbnails: made once per image at upload from the decode that checked it, kept in the object store
beside the image. Upright, within ``THUMBNAIL_SIZE``, an 8-bit JPEG whatever the picture's mode."""

from __future__ import annotations

from pathlib import Path

import PIL.Image

from heartbeat.upright import turn_upright

THUMBNAIL_SIZE = (320, 320)
THUMBNAIL_TYPE = "image/jpeg"
THUMBNAIL_QUALITY = 80
BACKGROUND = "white"  # under transparent pixels: a JPEG has no alpha

# Integer and float grays beyond 8 bits: scaled from the picture's own range (lowest to highest value)
# to 0-255, not clipped (most 16-bit pictures hold values far above 255).
DEEP_GRAY_MODES = frozenset({"I", "I;16", "F"})


def thumbnail_key(image_id: str) -> str:
    return f"thumbnails/{image_id[:2]}/{image_id}.jpg"


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The size of the thumbnail of a ``width`` x ``height`` picture: the same shape, within
    ``THUMBNAIL_SIZE``, never larger than the picture."""
    scale = min(1.0, THUMBNAIL_SIZE[0] / width, THUMBNAIL_SIZE[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def make_thumbnail(picture: PIL.Image.Image, orientation: int) -> PIL.Image.Image:
    """The thumbnail of a loaded picture, as stored (turned here by ``orientation``): "L" or "RGB".

    ``picture`` may be a reduced decode (a JPEG's draft) as long as it is not smaller than its
    thumbnail. It is resized before the other conversions, so that they touch the thumbnail's pixels
    only. Raises ValueError for a mode Pillow cannot convert to RGB.
    """
    picture = _resizable(picture)
    value_range = picture.getextrema() if picture.mode in DEEP_GRAY_MODES else None
    size = thumbnail_size(*picture.size)
    if picture.size != size:
        picture = picture.resize(size, PIL.Image.Resampling.BICUBIC, reducing_gap=2.0)
    if value_range is not None:
        picture = _scaled_to_8_bits(picture, value_range)  # type: ignore[arg-type]  # a gray's range: two numbers
    elif picture.mode in ("LA", "RGBA"):
        picture = _flattened(picture)
    elif picture.mode not in ("L", "RGB"):
        picture = picture.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    return turn_upright(picture, orientation)


def _resizable(picture: PIL.Image.Image) -> PIL.Image.Image:
    """``picture`` in a mode that Pillow resizes by interpolation and whose range it reads: a palette
    or 1-bit picture (which Pillow would resize by nearest neighbour only) with its colours, and its
    transparency as alpha; a 16-bit gray of another byte order as "I"."""
    transparent = "transparency" in picture.info
    if picture.mode in ("P", "PA"):
        return picture.convert("RGBA" if transparent or picture.mode == "PA" else "RGB")
    if picture.mode == "1":
        return picture.convert("L")
    if transparent and picture.mode in ("L", "RGB"):
        return picture.convert("LA" if picture.mode == "L" else "RGBA")
    if picture.mode in ("I;16L", "I;16B", "I;16N"):
        return picture.convert("I")
    return picture


def _scaled_to_8_bits(picture: PIL.Image.Image, value_range: tuple[float, float]) -> PIL.Image.Image:
    """A deep gray picture as "L": its lowest value black, its highest white (a flat picture keeps its
    value, clipped to 0-255)."""
    low, high = value_range
    scale = 255 / (high - low) if high > low else 0.0
    offset = -low * scale if high > low else min(max(low, 0), 255)
    return picture.point(lambda value: value * scale + offset).convert("L")


def _flattened(picture: PIL.Image.Image) -> PIL.Image.Image:
    """An "LA" or "RGBA" picture laid over ``BACKGROUND``: "L" or "RGB"."""
    mode = picture.mode[:-1]
    flat = PIL.Image.new(mode, picture.size, BACKGROUND)
    flat.paste(picture.convert(mode), mask=picture.getchannel("A"))
    return flat


def write_thumbnail(picture: PIL.Image.Image, orientation: int, target: Path) -> None:
    """:func:`make_thumbnail` saved as a JPEG at ``target``."""
    make_thumbnail(picture, orientation).save(target, "JPEG", quality=THUMBNAIL_QUALITY)
