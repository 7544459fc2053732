"""Face detection with the frontal-face LBP cascade that ships inside scikit-image's wheel (no
model download; OpenCV 5's wheel no longer carries its cascades).

    heartbeat software add face_detection
    heartbeat worker run heartbeat.examples.face_detection:detect --software face_detection

``info`` is a list of boxes ``{"x", "y", "w", "h"}`` in the image's upright pixels (after its EXIF
orientation, as its width and height are); the cascade gives no score.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import PIL.Image

from heartbeat.worker import Image, open_upright

SOFTWARE: dict[str, Any] = {"name": "face_detection", "lease_seconds": 60, "tables": {}}

# Larger pictures are searched at this size: the cost grows with the pixels, the faces found hardly do.
MAX_SIDE_PIXELS = 1024
MIN_FACE_PIXELS = 24  # the cascade's window
SCALE_FACTOR = 1.2
# Overlapping hits a box needs to count. 6 keeps textures (brick, grass, gravel) free of faces
# while finding most of the faces of scikit-image's LFW sample.
MIN_NEIGHBOURS = 6

Box = dict[str, int]
_cascades = threading.local()  # the Cython cascade is not documented as thread-safe: one per thread


def _cascade() -> Any:
    if not hasattr(_cascades, "cascade"):
        from skimage import data, feature

        _cascades.cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
    return _cascades.cascade


def load_rgb(image_bytes: bytes, image: Image | None = None) -> np.ndarray:
    """The picture as an RGB array, upright: in the frame of the image's width and height, where the
    dashboard draws the boxes (``image``: the record a handler is given; None: by the bytes' EXIF)."""
    return np.asarray(open_upright(image_bytes, image).convert("RGB"))


def find_faces(rgb: np.ndarray) -> list[Box]:
    """Boxes around the frontal faces in an RGB array, in its pixels, left to right."""
    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_SIDE_PIXELS / max(height, width))
    searched = rgb
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        searched = np.asarray(PIL.Image.fromarray(rgb).resize(size, PIL.Image.Resampling.BILINEAR))
    side = min(searched.shape[:2])
    if side < MIN_FACE_PIXELS:
        return []
    found = _cascade().detect_multi_scale(
        img=searched,
        scale_factor=SCALE_FACTOR,
        step_ratio=1,
        min_size=(MIN_FACE_PIXELS, MIN_FACE_PIXELS),
        max_size=(side, side),
        min_neighbor_number=MIN_NEIGHBOURS,
    )
    boxes = [
        {
            "x": round(hit["c"] / scale),
            "y": round(hit["r"] / scale),
            "w": round(hit["width"] / scale),
            "h": round(hit["height"] / scale),
        }
        for hit in found
    ]
    return sorted(boxes, key=lambda box: (box["x"], box["y"]))


def detect(image_bytes: bytes, image: Image | None) -> list[Box]:
    """The handler: the faces in one image, as ``info``, in its upright pixels."""
    return find_faces(load_rgb(image_bytes, image))
