"""Edits in real headless Chromium, against `python -m app` with its built-in emulator: the mask
painter (brush, eraser, undo, clear, invert; mouse, pen and touch) and the PNG it puts in the
form, reference images added by drag and drop and by paste as removable thumbnails, and the
issue's "done when": pick a gallery image, paint a mask, prompt "make the sky stormy", Generate;
the new image appears and its page shows the input, the mask and the lineage. No page may log
an error or a CSP violation. Screenshots go to /work/shots (mask-painter.png is the README's)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.browser import serve_app, watch_problems

SHOTS = Path("/work/shots")
EDITS = "emulator-azure:gpt-image-1"

# What the page's mask input holds: None when empty, else the PNG's size and the alpha of the
# pixels at the given fractions of its width and height (read back by decoding the PNG).
READ_MASK = """async (points) => {
  const input = document.querySelector('#mask-form input[name=mask]');
  if (!input.files.length) return null;
  const file = input.files[0];
  const bitmap = await createImageBitmap(file);
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  const alpha = points.map(([x, y]) =>
    context.getImageData(Math.floor(x * bitmap.width), Math.floor(y * bitmap.height), 1, 1).data[3]);
  return {type: file.type, name: file.name, width: bitmap.width, height: bitmap.height, alpha};
}"""
# A point in the painted band (top, middle) and one far from it (bottom).
PAINTED, UNPAINTED = (0.5, 0.2), (0.5, 0.85)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_app(
        tmp_path_factory.mktemp("browser-edits-data"), ATELIER_EMULATOR_LATENCY_SECONDS="0.3"
    ) as base:
        yield base


def submit(server: str, prompt: str, **body) -> int:
    response = requests.post(
        f"{server}/api/jobs", json={"prompt": prompt, "provider": EDITS, **body}, timeout=5
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def finished(server: str, job_id: int) -> dict:
    deadline = time.monotonic() + 30
    while True:
        job = requests.get(f"{server}/api/jobs/{job_id}", timeout=5).json()
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def landscape(server: str) -> dict:
    """A finished gallery image to edit (1536×1024, so the mask's size is not a square's)."""
    job = finished(server, submit(server, "a wide landscape under a calm sky", size="1536x1024"))
    assert job["status"] == "succeeded", job
    return job["images"][0]


def new_page(browser: Browser, problems: list[str], **options) -> Page:
    context = browser.new_context(
        viewport=options.pop("viewport", {"width": 1280, "height": 900}), **options
    )
    page = context.new_page()
    watch_problems(page, problems)
    return page


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    problems: list[str] = []
    page = new_page(browser, problems, base_url=server)
    yield page
    page.context.close()
    assert problems == [], f"the page reported errors: {problems}"


def open_painter(page: Page, image: dict) -> None:
    page.goto(f"/images/{image['id']}")
    expect(page.locator(".mask-painter")).to_be_visible()
    page.wait_for_function("() => document.querySelector('.mask-stage img').complete")


def stroke(page: Page, start=(0.15, 0.2), end=(0.85, 0.2), steps: int = 12) -> None:
    """Drag the mouse across the canvas between two points given as fractions of its size."""
    box = page.locator(".mask-canvas").bounding_box()
    assert box is not None

    def at(point):
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    page.mouse.move(*at(start))
    page.mouse.down()
    page.mouse.move(*at(end), steps=steps)
    page.mouse.up()


def mask(page: Page, points=(PAINTED, UNPAINTED)) -> dict | None:
    return page.evaluate(READ_MASK, [list(point) for point in points])


def wait_for_alpha(page: Page, expected: list[int]) -> None:
    """Wait until the mask in the input has these alphas at PAINTED and UNPAINTED."""
    deadline = time.monotonic() + 5
    while (found := mask(page)) is None or found["alpha"] != expected:
        assert time.monotonic() < deadline, f"the mask is not {expected}: {found}"
        time.sleep(0.05)


def wait_for_mask(page: Page, present: bool) -> None:
    page.wait_for_function(
        f"() => document.querySelector('#mask-form input[name=mask]').files.length === {int(present)}"
    )


# --- the mask painter ---------------------------------------------------------------------------


def test_painting_puts_a_png_of_the_images_size_transparent_where_painted(page, landscape):
    open_painter(page, landscape)
    expect(page.locator(".mask-upload")).to_be_hidden()  # the painter replaces the upload
    assert mask(page) is None

    stroke(page)
    wait_for_mask(page, True)

    found = mask(page)
    assert found["type"] == "image/png"
    assert (found["width"], found["height"]) == (landscape["width"], landscape["height"])
    assert found["alpha"] == [0, 255]


def test_undo_clear_and_invert_change_the_mask(page, landscape):
    open_painter(page, landscape)
    undo = page.get_by_role("button", name="Undo")
    expect(undo).to_be_disabled()

    stroke(page)
    wait_for_mask(page, True)
    undo.click()
    wait_for_mask(page, False)  # back to nothing painted: no mask at all

    stroke(page)
    wait_for_mask(page, True)
    page.get_by_role("button", name="Clear").click()
    wait_for_mask(page, False)

    stroke(page)
    wait_for_mask(page, True)
    page.get_by_role("button", name="Invert").click()
    wait_for_alpha(page, [255, 0])  # the stroke is kept now, the rest changes
    undo.click()
    wait_for_alpha(page, [0, 255])  # the stroke again


def test_the_eraser_takes_paint_away_and_the_size_slider_sets_the_brush(page, landscape):
    open_painter(page, landscape)
    size = page.get_by_label("Size")
    size.fill("10")
    expect(page.locator(".mask-size-value")).to_have_text("10 px")

    stroke(page)
    wait_for_mask(page, True)
    # A 10 px brush on a 1536 px image shown narrower: the band is thin, its edge stays opaque.
    assert mask(page, [(0.5, 0.2), (0.5, 0.26)])["alpha"] == [0, 255]

    eraser = page.get_by_role("button", name="Eraser")
    eraser.click()
    expect(eraser).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("button", name="Brush")).to_have_attribute("aria-pressed", "false")
    size.fill("120")
    stroke(page, (0.05, 0.2), (0.95, 0.2))
    wait_for_mask(page, False)


def test_a_pen_and_a_finger_paint_too(browser, server, landscape):
    problems: list[str] = []
    page = new_page(
        browser, problems, base_url=server, has_touch=True, viewport={"width": 800, "height": 900}
    )
    open_painter(page, landscape)
    canvas = page.locator(".mask-canvas")
    assert canvas.evaluate("c => getComputedStyle(c).touchAction") == "none"
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()

    # A pen: pointer events as a stylus sends them.
    canvas.evaluate(
        """(c, [x, y, w]) => {
          const options = (px) => ({pointerId: 7, pointerType: 'pen', isPrimary: true, bubbles: true,
                                    clientX: px, clientY: y, button: 0, buttons: 1, pressure: 0.5});
          c.dispatchEvent(new PointerEvent('pointerdown', options(x)));
          for (let i = 1; i <= 10; i++) c.dispatchEvent(new PointerEvent('pointermove', options(x + w * i / 10)));
          c.dispatchEvent(new PointerEvent('pointerup', {...options(x + w), buttons: 0}));
        }""",
        [box["x"] + 0.2 * box["width"], box["y"] + 0.2 * box["height"], 0.6 * box["width"]],
    )
    wait_for_mask(page, True)
    assert mask(page)["alpha"] == [0, 255]
    page.get_by_role("button", name="Clear").click()
    wait_for_mask(page, False)

    # A finger: real touch input through the DevTools protocol (Chromium makes pointer events).
    canvas.scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    box = canvas.bounding_box()
    session = page.context.new_cdp_session(page)
    y = box["y"] + 0.2 * box["height"]
    xs = [box["x"] + box["width"] * (0.2 + 0.06 * i) for i in range(11)]
    session.send(
        "Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": xs[0], "y": y}]}
    )
    for x in xs[1:]:
        session.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    session.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    wait_for_mask(page, True)
    assert mask(page)["alpha"] == [0, 255]
    assert page.evaluate("window.scrollY") == scrolled  # the finger painted instead of scrolling
    page.context.close()
    assert problems == []


def test_painter_controls_are_labelled_and_work_from_the_keyboard(page, landscape):
    open_painter(page, landscape)
    expect(page.get_by_role("toolbar", name="Mask tools")).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("^The mask"))).to_be_visible()
    page.get_by_role("button", name="Brush").focus()
    reached = []
    for _ in range(5):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
        )
    # Undo is disabled while there is nothing to undo, the upload hidden while the painter runs.
    assert reached == ["Eraser", "mask-size", "Clear", "Invert", "mask-prompt"]

    stroke(page)
    wait_for_mask(page, True)
    page.get_by_role("button", name="Invert").focus()
    page.keyboard.press("Enter")
    wait_for_alpha(page, [255, 0])
    page.get_by_label("Size").focus()
    page.keyboard.press("Control+z")
    wait_for_alpha(page, [0, 255])
