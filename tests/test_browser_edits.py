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

from tests.browser import app_server, checked_page, finished_job, new_page, submit_job, wait_for_js

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
  const alpha = points.map(([x, y]) => context.getImageData(
    Math.floor(x * bitmap.width), Math.floor(y * bitmap.height), 1, 1).data[3]);
  return {type: file.type, name: file.name, width: bitmap.width, height: bitmap.height, alpha};
}"""
# A point in the painted band (top, middle) and one far from it (bottom).
PAINTED, UNPAINTED = (0.5, 0.2), (0.5, 0.85)


server = app_server("browser-edits-data", ATELIER_EMULATOR_LATENCY_SECONDS="0.3")


@pytest.fixture(scope="module")
def landscape(server: str) -> dict:
    """A finished gallery image to edit (1536×1024, so the mask's size is not a square's)."""
    job = finished_job(
        server,
        submit_job(server, "a wide landscape under a calm sky", provider=EDITS, size="1536x1024"),
    )
    assert job["status"] == "succeeded", job
    return job["images"][0]


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with checked_page(browser, base_url=server, viewport={"width": 1280, "height": 900}) as page:
        yield page


def open_painter(page: Page, image: dict) -> None:
    page.goto(f"/images/{image['id']}")
    expect(page.locator(".mask-painter")).to_be_hidden()  # folded until asked for
    page.get_by_text("Paint the area to change").click()
    expect(page.locator(".mask-painter")).to_be_visible()
    wait_for_js(page, "() => document.querySelector('.mask-stage img').complete")


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
    """Wait until the mask in the input has these alphas at PAINTED and UNPAINTED (a loaded
    machine may take seconds to encode a 1536x1024 PNG; 20 s is only the give-up point)."""
    deadline = time.monotonic() + 20
    while (found := mask(page)) is None or found["alpha"] != expected:
        assert time.monotonic() < deadline, f"the mask is not {expected}: {found}"
        time.sleep(0.05)


def wait_for_mask(page: Page, present: bool) -> None:
    count = int(present)
    wait_for_js(
        page,
        f"() => document.querySelector('#mask-form input[name=mask]').files.length === {count}",
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
          const options = (px) => ({pointerId: 7, pointerType: 'pen', isPrimary: true,
                                    bubbles: true, clientX: px, clientY: y, button: 0,
                                    buttons: 1, pressure: 0.5});
          c.dispatchEvent(new PointerEvent('pointerdown', options(x)));
          for (let i = 1; i <= 10; i++) {
            c.dispatchEvent(new PointerEvent('pointermove', options(x + w * i / 10)));
          }
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


# --- reference images on the prompt form --------------------------------------------------------

# A small PNG made in the page, as a File (what a drop or a paste hands the page).
MAKE_FILE = """async ([name, colour]) => {
  const canvas = document.createElement('canvas');
  canvas.width = 40;
  canvas.height = 30;
  const context = canvas.getContext('2d');
  context.fillStyle = colour;
  context.fillRect(0, 0, 40, 30);
  const blob = await new Promise(resolve => canvas.toBlob(resolve, 'image/png'));
  return new File([blob], name, {type: 'image/png'});
}"""
DROP = (
    "async ([name, colour]) => { const file = await (" + MAKE_FILE + ")([name, colour]);"
    " const transfer = new DataTransfer(); transfer.items.add(file);"
    " const target = document.querySelector('#prompt');"
    " const init = {dataTransfer: transfer, bubbles: true, cancelable: true};"
    " target.dispatchEvent(new DragEvent('dragover', init));"
    " target.dispatchEvent(new DragEvent('drop', init)); }"
)
PASTE = (
    "async ([name, colour]) => { const file = await (" + MAKE_FILE + ")([name, colour]);"
    " const transfer = new DataTransfer(); transfer.items.add(file);"
    " document.querySelector('#prompt').dispatchEvent(new ClipboardEvent('paste',"
    " {clipboardData: transfer, bubbles: true, cancelable: true})); }"
)
FILE_NAMES = "() => Array.from(document.querySelector('#image-upload').files).map(f => f.name)"


def test_dropped_and_pasted_images_become_removable_thumbnails(page, landscape):
    page.goto(f"/?edit={landscape['id']}")
    items = page.locator(".reference-item")
    expect(items).to_have_count(1)  # the gallery image
    expect(page.locator(".drop-hint")).to_be_visible()

    page.evaluate(DROP, ["dropped.png", "#c33"])
    expect(items).to_have_count(2)
    page.evaluate(PASTE, ["pasted.png", "#3c3"])
    expect(items).to_have_count(3)

    uploads = page.locator(".reference-item.is-upload")
    expect(uploads.locator("img")).to_have_count(2)
    for index in range(2):
        expect(uploads.locator("img").nth(index)).to_have_attribute(
            "src", re.compile("^data:image/png")
        )
    assert page.evaluate(FILE_NAMES) == ["dropped.png", "pasted.png"]
    expect(page.locator(".reference-status")).to_have_text("Added 1 image.")
    shoot_form(page)

    page.get_by_role("button", name="Remove dropped.png").click()
    expect(uploads).to_have_count(1)
    assert page.evaluate(FILE_NAMES) == ["pasted.png"]
    page.get_by_role("link", name=f"Remove gallery image {landscape['id']}").click()
    expect(items).to_have_count(1)
    expect(page).to_have_url(re.compile(rf"/\?edit={landscape['id']}$"))  # removed in place
    expect(page.locator("input[name=reference_image]")).to_have_count(0)


def test_a_file_that_is_not_an_image_is_not_added(page):
    page.goto("/")
    page.evaluate(
        "async () => { const transfer = new DataTransfer();"
        " transfer.items.add(new File(['hello'], 'notes.txt', {type: 'text/plain'}));"
        " document.querySelector('#prompt').dispatchEvent(new DragEvent('drop',"
        " {dataTransfer: transfer, bubbles: true, cancelable: true})); }"
    )
    expect(page.locator(".reference-status")).to_contain_text("notes.txt")
    expect(page.locator(".reference-item")).to_have_count(0)
    assert page.evaluate(FILE_NAMES) == []


def test_the_form_says_when_the_chosen_model_cannot_take_references(page, landscape):
    page.goto(f"/?edit={landscape['id']}")
    note = page.locator(".edits-unsupported")
    expect(note).to_have_count(0)
    page.get_by_label("Provider").select_option("emulator-azure:dall-e-3")
    expect(note).to_be_visible()
    expect(note).to_contain_text("dall-e-3 makes images from the prompt alone")
    page.get_by_label("Provider").select_option(EDITS)
    expect(note).to_have_count(0)


def test_a_refused_form_keeps_the_chosen_files(page):
    page.goto("/")
    page.evaluate(DROP, ["kept.png", "#33c"])
    expect(page.locator(".reference-item")).to_have_count(1)
    page.get_by_label("Provider").select_option("emulator-azure:dall-e-3")
    expect(page.get_by_label("Style")).to_be_visible()  # dall-e-3's fields are in
    wait_for_js(page, "() => !document.querySelector('.htmx-request, .htmx-added, .htmx-settling')")
    page.get_by_label("Prompt").fill("a boat")
    page.get_by_role("button", name="Generate").click()  # dall-e-3 cannot edit: 422

    expect(page.locator("#image-error")).to_be_visible()
    expect(page.locator(".reference-item.is-upload")).to_have_count(1)
    assert page.evaluate(FILE_NAMES) == ["kept.png"]
    expect(page.locator(".files-lost")).to_be_hidden()


def shoot_form(page: Page) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#prompt-form").screenshot(path=str(SHOTS / "form-with-references.png"))


# --- the "done when" --------------------------------------------------------------------


def test_paint_a_mask_on_a_gallery_image_and_get_the_edit_with_its_inputs_and_lineage(page, server):
    source = finished_job(
        server, submit_job(server, "a quiet valley under a clear sky", provider=EDITS)
    )["images"][0]
    page.goto("/gallery")
    page.locator(f"#image-{source['id']} a.thumb").click()  # pick it in the gallery: the viewer
    page.locator("dialog.viewer").get_by_role("link", name="Open image page").click()
    expect(page).to_have_url(re.compile(rf"/images/{source['id']}$"))
    page.get_by_text("Paint the area to change").click()
    expect(page.locator(".mask-painter")).to_be_visible()
    wait_for_js(page, "() => document.querySelector('.mask-stage img').complete")
    # One column (the painter as wide as the page) for the README's screenshot.
    page.set_viewport_size({"width": 760, "height": 1000})
    page.locator(".mask-section").scroll_into_view_if_needed()
    page.get_by_label("Size").fill("80")
    stroke(page, (0.1, 0.15), (0.9, 0.15))
    stroke(page, (0.1, 0.3), (0.9, 0.3))
    wait_for_mask(page, True)
    page.get_by_label("What should change?").fill("make the sky stormy")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator(".mask-section").screenshot(path=str(SHOTS / "mask-painter.png"))

    page.locator("#mask-form").get_by_role("button", name="Generate").click()

    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    card = page.locator(".job-card")
    expect(card.locator(".thumbs img")).to_have_count(1, timeout=30_000)
    expect(page.locator(".job-inputs .input-item")).to_have_count(2)
    card.locator(".thumbs img").click()

    expect(page.locator("#prompt-text")).to_have_text("make the sky stormy")
    inputs = page.locator(".job-inputs .input-item")
    expect(inputs).to_have_count(2)
    expect(inputs.nth(0)).to_contain_text("Image 1")
    expect(inputs.nth(1)).to_contain_text("Mask")
    for index in range(2):
        expect(inputs.nth(index).locator("img")).to_have_js_property("naturalWidth", 256)
    edited_from = page.locator(".lineage-edits")
    expect(edited_from).to_contain_text("Edited from")
    expect(edited_from).to_contain_text("a quiet valley under a clear sky")
    link = edited_from.get_by_role("link")
    expect(link).to_have_attribute("href", f"/images/{source['id']}")
    expect(link.locator("img")).to_have_js_property("complete", True)
    page.screenshot(path=str(SHOTS / "edited-image-page.png"), full_page=True)
    # The input image is the gallery image's own file, the mask the PNG the painter made.
    job = requests.get(f"{server}/api/jobs/{job_id_of(page)}", timeout=5).json()
    assert job["kind"] == "edit"
    assert job["inputs"][0]["sha256"] == source["sha256"]
    assert (job["inputs"][1]["width"], job["inputs"][1]["content_type"]) == (
        source["width"],
        "image/png",
    )
    link.click()
    expect(page).to_have_url(re.compile(rf"/images/{source['id']}$"))


def test_a_streamed_edit_shows_live_previews_on_its_card_then_the_image(page, landscape):
    open_painter(page, landscape)
    stroke(page)
    wait_for_mask(page, True)
    # [stream-slow]: the emulator pauses between the streamed partial images.
    page.get_by_label("What should change?").fill("an evening sky [stream-slow]")
    expect(page.get_by_label("Show live previews while it is made")).to_be_checked()

    page.locator("#mask-form").get_by_role("button", name="Generate").click()

    expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
    preview = page.locator(".job-card .job-preview")
    expect(preview).to_be_visible(timeout=30_000)
    expect(preview.locator(".preview-label")).to_have_text("preview")
    expect(preview.locator("img")).to_have_js_property("complete", True)
    expect(page.locator(".job-card .thumbs img")).to_have_count(1, timeout=60_000)
    expect(preview).to_have_count(0)  # the finished card shows the image, not the preview


def job_id_of(page: Page) -> int:
    href = page.locator(".image-info h1 a").get_attribute("href")
    return int(href.rsplit("/", 1)[1])


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_edit_pages_fit_a_phone_without_sideways_scrolling(browser, server, landscape, scheme):
    problems: list[str] = []
    page = new_page(
        browser,
        problems,
        base_url=server,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        color_scheme=scheme,
    )
    for url, shot in (
        (f"/images/{landscape['id']}", "image-page"),
        (f"/?edit={landscape['id']}", "form"),
        ("/gallery", "gallery"),
    ):
        page.goto(url)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, url
        page.screenshot(path=str(SHOTS / f"phone-{shot}-{scheme}.png"), full_page=True)
    page.context.close()
    assert problems == []
