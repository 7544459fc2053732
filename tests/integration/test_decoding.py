"""Pictures decoded whole: a cut file is not an image on any ingest path, and the thumbnail of every
mode Pillow opens looks like its picture (its mean and spread), upright."""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Callable

import falcon.testing
import numpy as np
import PIL.Image
import pytest

from heartbeat.app import create_app
from heartbeat.config import UrlAllowList
from helpers import direct_upload, fetch_url, oriented, serving, stored_keys, upload

SIZE = (600, 400)
CUTS = (0.4, 0.6, 0.9)


def textured(size: tuple[int, int] = SIZE, seed: int = 7) -> PIL.Image.Image:
    """An RGB picture with a photograph's detail (smoothed noise): every cut falls in coded pixels."""
    noise = random.Random(seed).randbytes(60 * 40 * 3)
    return PIL.Image.frombytes("RGB", (60, 40), noise).resize(size, PIL.Image.Resampling.BICUBIC)


def encoded(picture: PIL.Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture
def client(settings, database, storage, clock) -> falcon.testing.TestClient:
    """The API with loopback allowed to uploads by URL (the pictures come from a server of the test)."""
    allowing = dataclasses.replace(settings, url_allow=UrlAllowList.parse("127.0.0.0/8"))
    return falcon.testing.TestClient(create_app(allowing, database=database, storage=storage, clock=clock))


def by_form(client: falcon.testing.TestClient, data: bytes) -> falcon.testing.Result:
    return upload(client, data)


def by_url(client: falcon.testing.TestClient, data: bytes) -> falcon.testing.Result:
    with serving({"/picture": data}) as base:
        return client.simulate_post("/v1/images", json={"url": f"{base}/picture"})


INGEST_PATHS: dict[str, Callable[[falcon.testing.TestClient, bytes], falcon.testing.Result]] = {
    "multipart": by_form,
    "url": by_url,
    "direct": direct_upload,
}


@pytest.mark.parametrize("path", INGEST_PATHS)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_a_cut_picture_is_refused_with_415_and_nothing_is_stored_on_every_ingest_path(
    client, settings, storage, fmt, path
):
    whole = encoded(textured().convert("P") if fmt == "GIF" else textured(), fmt)
    send = INGEST_PATHS[path]
    for cut in CUTS:
        result = send(client, whole[: int(len(whole) * cut)])
        assert result.status_code == 415, (cut, result.text)
        assert client.simulate_get("/v1/images").json["images"] == []
        assert stored_keys(storage) == []
        assert list((settings.data_dir / "tmp").iterdir()) == []
    assert send(client, whole).status_code == 201  # the same picture whole is one


def test_a_cut_jpeg_says_why_it_is_refused(client):
    whole = encoded(textured(), "JPEG")
    assert "truncated" in upload(client, whole[: len(whole) // 2]).json["description"]


# --- thumbnails of every mode -------------------------------------------------------------------

RAMP = np.linspace(0.0, 1.0, SIZE[0])[None, :] * np.linspace(0.3, 1.0, SIZE[1])[:, None]  # 0..1, left to right


def gray(low: float, high: float, dtype: str) -> np.ndarray:
    return (low + RAMP * (high - low)).astype(dtype)


def with_alpha(base: str) -> PIL.Image.Image:
    """Black where transparent (a picture whose thumbnail ignored alpha would be dark), a colour ramp
    showing through a ramp of alpha."""
    picture = PIL.Image.fromarray((RAMP * 255).astype("uint8")).convert(base)
    alpha = PIL.Image.fromarray(((1 - RAMP) * 255).astype("uint8"))
    black = PIL.Image.new(base, SIZE, 0)
    picture.paste(black, mask=PIL.Image.eval(alpha, lambda value: 255 if value > 200 else 0))
    picture.putalpha(alpha)
    return picture


def palette_with_a_transparent_colour() -> PIL.Image.Image:
    picture = textured().quantize(64)
    picture.paste(0, (0, 0, 300, 400))  # the left half in colour 0, which the file says is transparent
    picture.putpalette([0, 0, 0], rawmode="RGB")  # black behind it
    picture.info["transparency"] = 0
    return picture


def blocks_1_bit() -> PIL.Image.Image:
    """Large black and white blocks: a thumbnail keeps their contrast."""
    rows = (np.arange(SIZE[1]) // 100)[:, None]
    columns = (np.arange(SIZE[0]) // 100)[None, :]
    return PIL.Image.fromarray((rows + columns) % 2 == 0).convert("1")


def animation(fmt: str) -> bytes:
    """Two frames: the first a picture, the second its negative (a thumbnail of it would be far off)."""
    first = textured()
    second = PIL.Image.eval(first, lambda value: 255 - value)
    frames = [first.convert("P"), second.convert("P")] if fmt == "GIF" else [first, second]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def flattened_on_white(picture: PIL.Image.Image) -> np.ndarray:
    """How a picture with alpha looks on the white that thumbnails lay it on: an RGB array."""
    rgba = np.asarray(picture.convert("RGBA"), dtype="float64")
    alpha = rgba[..., 3:] / 255
    return rgba[..., :3] * alpha + 255 * (1 - alpha)


def scaled_to_range(values: np.ndarray) -> np.ndarray:
    """A deep gray as a person is shown it: its lowest value black, its highest white."""
    values = values.astype("float64")
    return (values - values.min()) / (values.max() - values.min()) * 255


def as_rgb(picture: PIL.Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype="float64")


# mode -> (the file's bytes, how its picture looks as an RGB or gray array of 0-255)
MODES: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
    "RGB JPEG": lambda: (encoded(textured(), "JPEG", quality=95), as_rgb(textured())),
    "L JPEG": lambda: (encoded(textured().convert("L"), "JPEG", quality=95), as_rgb(textured().convert("L"))),
    "I;16 PNG": lambda: (encoded(PIL.Image.fromarray(gray(0, 65535, "uint16")), "PNG"), scaled_to_range(RAMP)),
    "I;16B TIFF": lambda: (
        encoded(PIL.Image.fromarray(gray(1000, 4000, ">u2")), "TIFF"),
        scaled_to_range(RAMP),
    ),
    "I TIFF": lambda: (
        encoded(PIL.Image.fromarray(gray(-200_000, 3_000_000, "int32")), "TIFF"),
        scaled_to_range(RAMP),
    ),
    "F TIFF": lambda: (encoded(PIL.Image.fromarray(gray(0.0, 1.0, "float32")), "TIFF"), scaled_to_range(RAMP)),
    "CMYK JPEG": lambda: (encoded(textured().convert("CMYK"), "JPEG", quality=95), as_rgb(textured())),
    "CMYK TIFF": lambda: (encoded(textured().convert("CMYK"), "TIFF"), as_rgb(textured().convert("CMYK"))),
    "P PNG, a transparent colour": lambda: (
        encoded(palette_with_a_transparent_colour(), "PNG"),
        flattened_on_white(palette_with_a_transparent_colour()),
    ),
    "P GIF, a transparent colour": lambda: (
        encoded(palette_with_a_transparent_colour(), "GIF"),
        flattened_on_white(palette_with_a_transparent_colour()),
    ),
    "LA PNG": lambda: (encoded(with_alpha("L"), "PNG"), flattened_on_white(with_alpha("L"))),
    "RGBA WEBP": lambda: (encoded(with_alpha("RGB"), "WEBP", lossless=True), flattened_on_white(with_alpha("RGB"))),
    "1 PNG": lambda: (encoded(blocks_1_bit(), "PNG"), as_rgb(blocks_1_bit())),
    "1 TIFF": lambda: (encoded(blocks_1_bit(), "TIFF"), as_rgb(blocks_1_bit())),
    "animated GIF": lambda: (animation("GIF"), as_rgb(textured().convert("P"))),
    "animated WEBP": lambda: (animation("WEBP"), as_rgb(textured())),
}


def thumbnail(client: falcon.testing.TestClient, image_id: str) -> PIL.Image.Image:
    redirect = client.simulate_get(f"/v1/images/{image_id}/thumbnail")
    fetched = fetch_url(client, redirect.headers["Location"])
    assert fetched.status_code == 200
    return PIL.Image.open(io.BytesIO(fetched.content))


@pytest.mark.parametrize("mode", MODES)
def test_the_thumbnail_of_every_mode_looks_like_its_picture(client, mode):
    data, looks = MODES[mode]()
    result = upload(client, data)
    assert result.status_code == 201, result.text
    assert (result.json["width"], result.json["height"]) == SIZE
    small = thumbnail(client, result.json["id"])
    assert small.size == (320, 213)
    seen = as_rgb(small).mean(axis=2)
    expected = looks.mean(axis=2) if looks.ndim == 3 else looks
    assert seen.mean() == pytest.approx(expected.mean(), abs=4), "mean"
    assert seen.std() == pytest.approx(expected.std(), abs=4), "spread"


def test_the_thumbnail_is_upright(client):
    # Left half dark, right half light, upright; stored turned a quarter as orientation 6 says.
    upright = PIL.Image.new("L", (400, 200), 20)
    upright.paste(230, (200, 0, 400, 200))
    result = upload(client, oriented(upright, 6)).json
    small = np.asarray(thumbnail(client, result["id"]).convert("L"), dtype="float64")
    assert small.shape == (160, 320)
    assert small[:, :150].mean() < 40 and small[:, 170:].mean() > 210
