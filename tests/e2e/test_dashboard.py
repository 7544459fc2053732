"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a running server."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from heartbeat.examples import face_detection
from heartbeat.worker import Client
from helpers import heartbeat, image_bytes, oriented, upright_astronaut

CHROMIUM = os.environ.get("HEARTBEAT_TEST_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(os.environ.get("HEARTBEAT_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))
# Chromium as root, headless, with nothing reaching out to the network on its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FACES = [{"x": 40, "y": 30, "w": 80, "h": 60}, {"x": 200, "y": 120, "w": 60, "h": 90, "score": 0.9}]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


# Reports every Content-Security-Policy violation to the console, where the tests collect them
# (Chromium logs most of them there itself; this catches those it does not).
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => console.error(
  `Content Security Policy violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`));
"""


def csp_violations(page: Page) -> list[str]:
    """The list that fills with the page's Content-Security-Policy violations, as they happen."""
    violations: list[str] = []
    page.add_init_script(REPORT_VIOLATIONS)
    page.on("console", lambda message: "Content Security Policy" in message.text and violations.append(message.text))
    return violations


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab; the test fails if the page raised an error or broke its Content-Security-Policy."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    violations = csp_violations(page)
    yield page
    folder = OUTPUT / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "last-page.png"), full_page=True)
    context.close()
    assert not errors, f"the page raised: {errors}"
    assert not violations, f"the page broke its Content-Security-Policy: {violations}"


def save_screenshot(page: Page, name: str) -> None:
    path = OUTPUT / name
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000


class Api:
    def __init__(self, url: str, token: str | None = None):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, self.url + path, headers=self.headers, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json() if response.content else None


def hold_the_next_listing(page: Page) -> list[Any]:
    """Hold the page's next ``GET /v1/software`` unanswered (the list it returns gets its route, to
    ``continue_`` or ``fulfill``); every later one goes through."""
    held: list[Any] = []

    def hold(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/v1/software", hold)
    return held


def seed(api: Api) -> dict[str, Any]:
    """Six uploads, two software; one image with two faces found, one job failed."""
    ids = []
    for index in range(6):
        data = image_bytes((40 * index, 120, 200 - 30 * index), size=(320, 240))
        ids.append(api("POST", "/v1/images", files={"file": (f"cam-{index}.jpg", data)})["id"])
    api("POST", "/v1/software", json={"name": "face_detection", "max_attempts": 1})
    api("POST", "/v1/software", json={"name": "ocr"})
    found, broken = api("POST", "/v1/software/face_detection/claim", json={"max": 2})["jobs"]
    api(
        "PUT",
        f"/v1/software/face_detection/jobs/{found['image_id']}/result",
        json={"token": found["token"], "info": FACES},
    )
    api(
        "POST",
        f"/v1/software/face_detection/jobs/{broken['image_id']}/fail",
        json={"token": broken["token"], "error": "ValueError: no pixels", "retry": False},
    )
    return {"ids": ids, "with_faces": found["image_id"], "failed": broken["image_id"]}


def test_the_dashboard_shows_progress_draws_boxes_and_requeues_and_pauses(start_server, page: Page):
    server = start_server()
    api = Api(server.url)
    seeded = seed(api)

    page.goto(server.url + "/")
    card = page.get_by_test_id("software-face_detection")
    expect(card.get_by_test_id("count-done")).to_have_text("1")
    expect(card.get_by_test_id("count-failed")).to_have_text("1")
    expect(card.get_by_test_id("count-pending")).to_have_text("4")
    segments = card.get_by_test_id("progress").locator("span")
    assert {
        segments.nth(i).get_attribute("data-status"): segments.nth(i).get_attribute("data-count")
        for i in range(segments.count())
    } == {
        "pending": "4",
        "done": "1",
        "failed": "1",
    }
    expect(card.get_by_test_id("throughput")).to_contain_text("0.2 done and 0.2 failed per minute")
    expect(page.get_by_test_id("image-tile")).to_have_count(6)
    [failure] = page.get_by_test_id("failed-job").all()
    expect(failure).to_contain_text(seeded["failed"])
    expect(failure).to_contain_text("ValueError: no pixels")

    page.locator(f'[data-testid=image-tile][data-id="{seeded["with_faces"]}"]').click()
    picture = page.get_by_test_id("picture")
    expect(picture).to_be_visible()
    page.wait_for_function("document.querySelector('[data-testid=picture]').naturalWidth > 0")
    boxes = page.locator("[data-testid=box]")
    expect(boxes).to_have_count(2)
    frame = picture.bounding_box()
    assert frame is not None
    scale = frame["width"] / 320
    for index, face in enumerate(FACES):
        drawn = boxes.nth(index).bounding_box()
        assert drawn is not None
        assert drawn["x"] - frame["x"] == pytest.approx(face["x"] * scale, abs=3)
        assert drawn["y"] - frame["y"] == pytest.approx(face["y"] * scale, abs=3)
        assert drawn["width"] == pytest.approx(face["w"] * scale, abs=4)
    expect(page.get_by_test_id("result-face_detection")).to_contain_text("done")
    expect(page.get_by_test_id("result-ocr")).to_contain_text("pending")
    save_screenshot(page, "image-page.png")

    page.goto(server.url + "/#/")
    card.get_by_test_id("requeue-failed").click()
    expect(card.get_by_test_id("count-failed")).to_have_text("0")
    expect(card.get_by_test_id("count-pending")).to_have_text("5")
    assert api("GET", f"/v1/software/face_detection/jobs/{seeded['failed']}")["status"] == "pending"

    card.get_by_test_id("pause").click()
    expect(card.get_by_test_id("paused")).to_be_visible()
    assert api("GET", "/v1/software/face_detection")["paused"] is True
    assert api("POST", "/v1/software/face_detection/claim", json={})["jobs"] == []
    card.get_by_test_id("resume").click()
    expect(card.get_by_test_id("paused")).to_have_count(0)
    assert api("GET", "/v1/software/face_detection")["paused"] is False

    page.get_by_test_id("filter").fill("face_detection.status = 'done' and width >= 320")
    page.get_by_test_id("filter").press("Enter")
    expect(page.get_by_test_id("image-tile")).to_have_count(1)
    expect(page.locator(f'[data-testid=image-tile][data-id="{seeded["with_faces"]}"]')).to_have_count(1)
    page.get_by_test_id("filter").fill("face_detection.stat = 1")
    page.get_by_test_id("filter").press("Enter")
    expect(page.get_by_test_id("filter-error")).to_contain_text("column 1")
    expect(page.get_by_text("No image matches.")).to_have_count(0)  # refused, not matching nothing
    page.get_by_test_id("filter").fill("face_detection.status = done")
    page.get_by_test_id("filter").press("Enter")
    expect(page.get_by_test_id("filter-error")).to_contain_text("text takes single quotes ('done')")
    page.get_by_test_id("filter").fill("")
    page.get_by_test_id("filter").press("Enter")
    expect(page.get_by_test_id("image-tile")).to_have_count(6)

    api("PATCH", "/v1/software/face_detection", json={"version": "2", "recompute": False})
    expect(card.get_by_test_id("version")).to_have_text("version 2, 1 done with an older version", timeout=10_000)
    assert card.get_by_test_id("progress").locator("[data-status=outdated]").count() == 0

    save_screenshot(page, "dashboard.png")


def test_an_answer_read_before_a_pause_never_hides_it_once_drawn(start_server, page: Page):
    """A refresh on its way when the user clicks Pause: its answer, read before the pause, comes back
    after the page drawn from the pause's own answer, and must not draw the software running again."""
    server = start_server()
    api = Api(server.url)
    seed(api)
    page.goto(server.url + "/")
    card = page.get_by_test_id("software-face_detection")
    expect(card.get_by_test_id("count-done")).to_have_text("1")
    before_the_pause = api("GET", "/v1/software")
    held = hold_the_next_listing(page)  # answered only once the pause is drawn
    with page.expect_request("**/v1/software"):
        page.evaluate("window.dispatchEvent(new HashChangeEvent('hashchange'))")  # a refresh starts reading
    card.get_by_test_id("pause").click()
    paused = card.get_by_test_id("paused")
    expect(paused).to_be_visible()
    # Every draw ends by writing the time in #status; the pause badge must never leave the page. What the
    # observers see is written on <html> (a page with this CSP runs no string as script: no wait_for_function).
    page.evaluate(
        """() => {
        const root = document.documentElement;
        new MutationObserver(() => { root.dataset.drawn = "yes"; }).observe(
          document.getElementById("status"), { childList: true, characterData: true, subtree: true });
        new MutationObserver(() => {
          if (!document.querySelector('[data-testid="software-face_detection"] [data-testid="paused"]')) {
            root.dataset.pauseLost = "yes";
          }
        }).observe(document.getElementById("view"), { childList: true, subtree: true });
      }"""
    )
    held[0].fulfill(status=200, content_type="application/json", body=json.dumps(before_the_pause))
    expect(page.locator("html")).to_have_attribute("data-drawn", "yes")  # the late answer's draw ran to its end
    expect(paused).to_be_visible()
    assert page.locator("html").get_attribute("data-pause-lost") is None


def test_a_filter_answered_after_a_card_drawn_since_is_drawn_with_that_card(start_server, page: Page):
    """A filter submitted, then a result elsewhere redraws a card before the filter's answer comes back:
    the filtered page is still drawn (the text box keeps the focus, so no later redraw would come), and
    the card keeps what the newer answer said."""
    server = start_server()
    api = Api(server.url)
    seeded = seed(api)
    page.goto(server.url + "/")
    card = page.get_by_test_id("software-ocr")
    expect(card.get_by_test_id("count-pending")).to_have_text("6")
    expect(page.get_by_test_id("status")).to_have_attribute("data-live", "true")  # the stream is open

    held: list[Any] = []
    page.route(lambda url: "where=" in url, lambda route: held.append(route))
    with page.expect_request(lambda request: "where=" in request.url):
        page.get_by_test_id("filter").fill("face_detection.status = 'done'")
        page.get_by_test_id("filter").press("Enter")
    [job] = api("POST", "/v1/software/ocr/claim", json={})["jobs"]
    api("PUT", f"/v1/software/ocr/jobs/{job['image_id']}/result", json={"token": job["token"], "info": {}})
    expect(card.get_by_test_id("count-done")).to_have_text("1")  # the card alone, drawn for the event

    [listing] = held
    listing.continue_()
    expect(page.get_by_test_id("image-tile")).to_have_count(1)
    expect(page.locator(f'[data-testid=image-tile][data-id="{seeded["with_faces"]}"]')).to_have_count(1)
    assert card.get_by_test_id("count-done").text_content() == "1"  # not the counts the page read before
    assert card.get_by_test_id("count-pending").text_content() == "5"


def test_boxes_a_software_keeps_in_its_extra_table_are_drawn_and_listed(start_server, page: Page):
    """As face_colours does (the README's first five minutes): the boxes are rows of its `faces` table,
    not in `info`; the image page draws them on the picture and lists the rows under the result."""
    server = start_server()
    api = Api(server.url)
    columns = {"x": "int", "y": "int", "w": "int", "h": "int", "colour": "text"}
    api("POST", "/v1/software", json={"name": "face_colours", "tables": {"faces": columns}})
    image_id = api("POST", "/v1/images", files={"file": ("two.jpg", image_bytes(size=(320, 240)))})["id"]
    [job] = api("POST", "/v1/software/face_colours/claim", json={})["jobs"]
    rows = [
        {key: face[key] for key in "xywh"} | {"colour": colour}
        for face, colour in zip(FACES, ["red", "blue"], strict=True)
    ]
    body = {"token": job["token"], "info": {"faces": 2}, "rows": {"faces": rows}}
    api("PUT", f"/v1/software/face_colours/jobs/{image_id}/result", json=body)
    page.goto(f"{server.url}/#/image/{image_id}")
    boxes = page.locator("[data-testid=box][data-software=face_colours]")
    expect(boxes).to_have_count(2)
    assert sorted(float(boxes.nth(i).get_attribute("x") or "nan") for i in range(2)) == sorted(f["x"] for f in FACES)
    expect(page.get_by_test_id("result-rows")).to_contain_text("faces (2 rows)")
    expect(page.get_by_test_id("result-rows")).to_contain_text('"colour":"blue"')


def test_a_software_held_back_by_its_limit_is_marked_and_its_limits_shown(start_server, page: Page):
    """Flow control: a card shows the limits and the jobs in flight, and a badge while all the room is
    taken and jobs wait; the badge goes when a result frees room (the card follows the event)."""
    server = start_server()
    api = Api(server.url)
    api("POST", "/v1/software", json={"name": "vision", "max_in_flight": 2, "rate": {"per_minute": 30}})
    api("POST", "/v1/software", json={"name": "ocr"})
    for index in range(3):
        api("POST", "/v1/images", files={"file": (f"{index}.jpg", image_bytes((60 * index, 90, 30)))})
    first, _second = api("POST", "/v1/software/vision/claim", json={"max": 3})["jobs"]  # cut to the limit: 2

    page.set_viewport_size({"width": 375, "height": 900})
    page.goto(server.url + "/")
    limited, plain = page.get_by_test_id("software-vision"), page.get_by_test_id("software-ocr")
    badge = limited.get_by_test_id("held-back")
    expect(badge).to_have_text("held back by its limit")
    expect(limited.get_by_test_id("limits")).to_have_text("at most 2 in flight, 30 per minute; 2 in flight now")
    expect(plain.get_by_test_id("limits")).to_have_text("no limits; 0 in flight now")
    expect(plain.get_by_test_id("held-back")).to_have_count(0)
    no_horizontal_scroll(page, 375)
    save_screenshot(page, "held-back.png")

    api("PUT", f"/v1/software/vision/jobs/{first['image_id']}/result", json={"token": first["token"], "info": {}})
    expect(badge).to_have_count(0, timeout=10_000)
    expect(limited.get_by_test_id("limits")).to_have_text("at most 2 in flight, 30 per minute; 1 in flight now")


def no_horizontal_scroll(page: Page, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width, f"a horizontal scrollbar at {width} px"


@pytest.mark.parametrize("width", [375, 1400])
def test_the_dashboard_at_a_phones_and_a_desktops_width(start_server, page: Page, width):
    server = start_server()
    api = Api(server.url)
    seeded = seed(api)
    page.set_viewport_size({"width": width, "height": 900})
    held = hold_the_next_listing(page)  # the first one: the page must say it is loading
    with page.expect_request("**/v1/software"):
        page.goto(server.url + "/")
    expect(page.get_by_test_id("loading")).to_be_visible()
    expect(page.locator("#view")).to_have_attribute("aria-busy", "true")
    assert len(held) == 1
    page.screenshot(path=str(OUTPUT / f"dashboard-loading-{width}.png"))  # a small picture: a header and a line
    held[0].continue_()
    expect(page.locator("#view")).to_have_attribute("aria-busy", "false")
    expect(page.get_by_test_id("loading")).to_have_count(0)

    tile = page.locator(f'[data-testid=image-tile][data-id="{seeded["with_faces"]}"]')
    name = page.evaluate("id => fetch('/v1/images/' + id).then(r => r.json())", seeded["with_faces"])["filename"]
    expect(tile.get_by_test_id("tile-name")).to_have_text(name)
    assert tile.get_attribute("title").splitlines()[0] == name
    assert "face_detection: done" in tile.get_attribute("title")
    expect(page.get_by_test_id("tile-name")).to_have_count(6)
    no_horizontal_scroll(page, width)
    save_screenshot(page, f"dashboard-{width}.png")

    tile.click()
    expect(page.get_by_test_id("picture")).to_be_visible()
    page.wait_for_function("document.querySelector('[data-testid=picture]').naturalWidth > 0")
    result = page.get_by_test_id("result-face_detection")
    expect(result.get_by_test_id("result-status")).to_have_text("done")
    expect(result.get_by_test_id("result-info")).to_contain_text('{"x":40,"y":30,"w":80,"h":60}')  # a box a line
    # The status sits beside the name, and what was found right under them: not spread over wide columns.
    heading = result.locator("h3 a").bounding_box()
    status = result.get_by_test_id("result-status").bounding_box()
    assert heading and status and status["x"] - (heading["x"] + heading["width"]) < 40
    assert abs(status["y"] - heading["y"]) < 20
    no_horizontal_scroll(page, width)
    save_screenshot(page, f"image-page-{width}.png")

    page.get_by_test_id("back").click()
    expect(page).to_have_url(server.url + "/#/")
    expect(page.get_by_test_id("image-tile")).to_have_count(6)


def difference(shown: PIL.Image.Image, picture: PIL.Image.Image) -> float:
    """Mean absolute difference of two pictures' pixels, at the size of the second."""
    resized = shown.convert("RGB").resize(picture.size, PIL.Image.Resampling.BILINEAR)
    return float(np.abs(np.asarray(resized, dtype="float64") - np.asarray(picture, dtype="float64")).mean())


def test_faces_found_on_photos_of_every_orientation_are_drawn_on_the_face(start_server, page: Page):
    server = start_server()
    client = Client(server.url)
    client.register(**face_detection.SOFTWARE)
    upright = upright_astronaut()
    ids = {}
    for orientation in range(1, 9):
        data = io.BytesIO(oriented(upright, orientation, "PNG"))
        ids[orientation] = client.upload(data, filename=f"astronaut-{orientation}.png").id
    target = "heartbeat.examples.face_detection:detect"
    done = heartbeat("worker", "run", target, "--software", "face_detection", "--api", server.url, "--exit-when-idle")
    assert done.returncode == 0, done.stderr
    [face] = [box for box in face_detection.find_faces(np.asarray(upright)) if box["x"] > 100]  # where it is upright

    for orientation, image_id in ids.items():
        page.goto(f"{server.url}/#/image/{image_id}")
        picture = page.get_by_test_id("picture")
        expect(picture).to_have_attribute("alt", f"astronaut-{orientation}.png")
        expect(picture).to_have_js_property("naturalWidth", 512)  # upright: the browser turned it
        expect(picture).to_have_js_property("naturalHeight", 384)
        row = page.locator("tr", has=page.locator("th", has_text="orientation"))
        expect(row.locator("td")).to_have_text(str(orientation))
        shown = PIL.Image.open(io.BytesIO(picture.screenshot()))
        mirrored = upright.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
        assert difference(shown, upright) < difference(shown, mirrored) / 2, "the browser shows it upright"
        frame = picture.bounding_box()
        assert frame is not None
        scale = frame["width"] / 512
        drawn = [box.bounding_box() for box in page.locator("[data-testid=box]").all()]
        nearest = min((box for box in drawn if box), key=lambda box: abs(box["x"] - frame["x"] - face["x"] * scale))
        assert nearest["x"] - frame["x"] == pytest.approx(face["x"] * scale, abs=4 * scale + 2), orientation
        assert nearest["y"] - frame["y"] == pytest.approx(face["y"] * scale, abs=4 * scale + 2), orientation
        assert nearest["width"] == pytest.approx(face["w"] * scale, abs=4 * scale + 4), orientation
        assert nearest["height"] == pytest.approx(face["h"] * scale, abs=4 * scale + 4), orientation
    save_screenshot(page, "image-page-orientation-8.png")


def test_the_dashboard_refreshes_by_itself(start_server, page: Page):
    server = start_server()
    api = Api(server.url)
    api("POST", "/v1/software", json={"name": "ocr"})
    page.goto(server.url + "/")
    expect(page.get_by_test_id("software-ocr").get_by_test_id("count-pending")).to_have_text("0")
    api("POST", "/v1/images", files={"file": ("a.jpg", image_bytes())})
    expect(page.get_by_test_id("software-ocr").get_by_test_id("count-pending")).to_have_text("1", timeout=10_000)
    expect(page.get_by_test_id("image-tile")).to_have_count(1)


def test_the_counts_follow_the_event_stream_with_the_token_and_no_poll(
    start_server, create_token, tmp_path, page: Page
):
    """A result submitted elsewhere shows in its software's counts as its event arrives: the card alone is
    read again (no poll interval passes: the fallback poll is half a minute apart), over a stream that
    carries the tab's token, which EventSource could not send."""
    data = tmp_path / "data"
    admin, reader = create_token("admin", data), create_token("reader", data)
    server = start_server(data_dir=data)
    api = Api(server.url, admin)
    api("POST", "/v1/software", json={"name": "ocr"})
    image_id = api("POST", "/v1/images", files={"file": ("a.jpg", image_bytes())})["id"]
    page.goto(server.url + "/")
    page.get_by_test_id("token").fill(reader)
    page.get_by_test_id("token").press("Enter")
    card = page.get_by_test_id("software-ocr")
    expect(card.get_by_test_id("count-pending")).to_have_text("1")
    expect(page.get_by_test_id("status")).to_have_attribute("data-live", "true")  # the stream is open

    [job] = api("POST", "/v1/software/ocr/claim", json={})["jobs"]
    with page.expect_request(lambda request: request.url == f"{server.url}/v1/software/ocr") as card_read:
        api("PUT", f"/v1/software/ocr/jobs/{image_id}/result", json={"token": job["token"], "info": {}})
    assert card_read.value.headers["authorization"] == f"Bearer {reader}"
    expect(card.get_by_test_id("count-done")).to_have_text("1")
    expect(card.get_by_test_id("count-pending")).to_have_text("0")
    expect(card.get_by_test_id("count-claimed")).to_have_text("0")

    api("POST", "/v1/images", files={"file": ("b.jpg", image_bytes((0, 90, 200)))})  # a job for every software
    expect(card.get_by_test_id("count-pending")).to_have_text("1")
    expect(page.get_by_test_id("image-tile")).to_have_count(2)  # the page too, drawn again for the event


def test_without_the_event_stream_the_dashboard_polls_instead(start_server, page: Page):
    server = start_server()
    api = Api(server.url)
    api("POST", "/v1/software", json={"name": "ocr"})
    page.route("**/v1/events/stream*", lambda route: route.abort())  # a proxy that will not pass it
    page.goto(server.url + "/")
    expect(page.get_by_test_id("software-ocr").get_by_test_id("count-pending")).to_have_text("0")
    api("POST", "/v1/images", files={"file": ("a.jpg", image_bytes())})
    # The first poll comes three seconds after the stream failed, the next ones later and later.
    expect(page.get_by_test_id("software-ocr").get_by_test_id("count-pending")).to_have_text("1", timeout=15_000)
    expect(page.get_by_test_id("status")).to_have_attribute("data-live", "false")


def test_with_auth_on_the_dashboard_asks_for_a_token_once_and_keeps_it_for_the_tab(
    start_server, create_token, tmp_path, page: Page
):
    data = tmp_path / "data"
    secret = create_token("reader", data)
    server = start_server(data_dir=data)
    page.goto(server.url + "/")
    expect(page.get_by_test_id("status")).to_have_text("this server needs a token")
    page.get_by_test_id("token").fill("hb_not-a-real-token")
    page.get_by_test_id("token").press("Enter")
    expect(page.get_by_test_id("status")).to_have_text("that token was refused")

    page.get_by_test_id("token").fill(secret)
    page.get_by_test_id("token").press("Enter")
    expect(page.get_by_text("No software registered yet.")).to_be_visible()
    page.reload()
    expect(page.get_by_text("No images yet.")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('heartbeat-token')") == secret


def test_the_dashboard_runs_no_script_but_its_own_and_cannot_be_framed(start_server, browser: Browser):
    server = start_server()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        expect(page.get_by_text("No software registered yet.")).to_be_visible()
        with page.expect_console_message(lambda message: "script-src 'self'" in message.text):
            injected = page.evaluate(
                """() => {
                  const script = document.createElement("script");
                  script.textContent = "window.injectedRan = true";
                  document.body.append(script);
                  return window.injectedRan === true;
                }"""
            )
        assert injected is False

        elsewhere = context.new_page()  # a page of another origin (about:blank) framing the dashboard
        with elsewhere.expect_console_message(lambda message: "frame-ancestors 'none'" in message.text):
            elsewhere.set_content(f'<iframe src="{server.url}/"></iframe>')
        assert elsewhere.frames[-1].url.startswith("chrome-error:"), "the frame shows an error, not the dashboard"
    finally:
        context.close()


@pytest.mark.parametrize("width", [375, 1400])
def test_the_api_reference_renders_the_openapi_document_from_this_server_alone(start_server, page: Page, width):
    server = start_server()
    elsewhere: list[str] = []  # a request to any other host: the page would not work offline

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.set_viewport_size({"width": width, "height": 900})
    answer = page.goto(server.url + "/docs")
    assert answer is not None and answer.status == 200
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Heartbeat")
    expect(page.locator(".opblock-summary-path", has_text="/v1/images").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/software/{name}/claim").first).to_be_visible()
    assert elsewhere == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width, "no horizontal scroll"
    save_screenshot(page, f"docs-{width}.png")
