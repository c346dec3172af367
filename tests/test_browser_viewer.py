"""The gallery's full-window viewer and Compare (static/viewer.js, issue #18 point 3), and the
image page's siblings strip, in real headless Chromium against `python -m app` with its built-in
emulator. Every page here must report no script error and no CSP violation.

Screenshots go to /tmp (viewer*.png, compare*.png) for a human look."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import app_server, checked_page, finished_job, new_page, submit_job, wait_for_js

SCREENSHOTS = Path("/tmp")

server = app_server("browser-viewer-data", ATELIER_EMULATOR_LATENCY_SECONDS="0.2")


@pytest.fixture(scope="module")
def images(server: str) -> list[int]:
    """Image ids in gallery order (newest first): a 1024 px image, a job of four 256 px images
    and four one-image jobs, enough for the grid to scroll in a short window."""
    # One job after the other, so the ids grow with time as the gallery's order does.
    bodies = [{"prompt": f"viewer single {number}"} for number in range(4)]
    bodies.append({"prompt": "viewer family of four", "n": 4})
    bodies.append({"prompt": "viewer large lighthouse", "size": "1024x1024"})
    ids = []
    for body in bodies:
        job = finished_job(server, submit_job(server, **body))
        ids.extend(image["id"] for image in job["images"])
    return sorted(ids, reverse=True)


def open_gallery(page: Page, query: str = "") -> None:
    """The gallery, which loads static/viewer.js and viewer.css itself."""
    page.goto("/gallery" + query)
    expect(page.locator("script[src='/static/viewer.js']")).to_have_count(1)


@pytest.fixture
def page(browser: Browser, server: str, images: list[int]) -> Iterator[Page]:
    with checked_page(browser, base_url=server, viewport={"width": 1200, "height": 900}) as page:
        yield page


def viewer(page: Page):
    return page.get_by_role("dialog")


def thumb(page: Page, image_id: int):
    # By its id attribute: an href prefix would also match /images/10 for image 1.
    return page.locator(f"#gallery-grid a.thumb[data-image-id='{image_id}']")


def shown_src(page: Page) -> str:
    return page.locator(".viewer-image").evaluate("img => new URL(img.src).pathname")


def full_of(page: Page, image_id: int) -> str:
    """The full image's path the cell names (data-full, or the image's own file)."""
    return thumb(page, image_id).evaluate(
        "a => a.dataset.full ? new URL(a.dataset.full, document.baseURI).pathname"
        " : new URL(a.href).pathname.replace(/^\\/images\\//, '/files/images/')"
    )


def image_box(page: Page) -> dict:
    """The shown picture's rendered size (object-fit: contain) and its own pixels."""
    return page.locator(".viewer-image").evaluate(
        """img => {
            const box = img.getBoundingClientRect();
            const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
            return {width: img.naturalWidth * scale, height: img.naturalHeight * scale,
                    natural: img.naturalWidth, boxWidth: box.width, loaded: img.complete};
        }"""
    )


def wait_loaded(page: Page) -> None:
    wait_for_js(
        page,
        "() => { const i = document.querySelector('.viewer-image');"
        " return i && i.complete && i.naturalWidth > 0; }",
    )


# --- the viewer -------------------------------------------------------------------------------


def test_plain_click_opens_the_full_image_fitted_to_the_window(page, images):
    open_gallery(page)
    url = page.url

    thumb(page, images[1]).click()

    dialog = viewer(page)
    expect(dialog).to_be_visible()
    expect(dialog).to_have_attribute("aria-modal", "true")
    expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()
    assert page.url == url, "the click navigated"
    wait_loaded(page)
    assert shown_src(page) == full_of(page, images[1])
    box = image_box(page)
    # 256 px shown as large as the window allows (fitted), inside the window.
    assert box["width"] > 256 and box["height"] <= 900
    expect(dialog.get_by_role("link", name="Open image page")).to_have_attribute(
        "href", re.compile(rf"^/images/{images[1]}\b")
    )


def test_modifier_and_middle_clicks_keep_the_links_own_behaviour(page, images):
    open_gallery(page)

    with page.context.expect_page() as opened:
        thumb(page, images[0]).click(modifiers=["Control"])
    new_tab = opened.value
    new_tab.wait_for_load_state()
    assert re.search(rf"/images/{images[0]}\b", new_tab.url)
    new_tab.close()
    expect(viewer(page)).to_be_hidden()

    with page.context.expect_page() as opened:
        thumb(page, images[0]).click(button="middle")
    opened.value.close()
    expect(viewer(page)).to_be_hidden()


def test_without_javascript_a_thumbnail_goes_to_the_image_page(browser, server, images):
    problems: list[str] = []
    page = new_page(browser, problems, base_url=server, java_script_enabled=False)
    page.goto("/gallery")

    thumb(page, images[2]).click()

    expect(page).to_have_url(re.compile(rf"/images/{images[2]}\b"))
    page.context.close()
    assert problems == []


def test_escape_closes_and_returns_focus_to_the_cell_with_the_scroll_unchanged(
    browser, server, images
):
    with checked_page(browser, base_url=server, viewport={"width": 700, "height": 420}) as page:
        open_gallery(page)
        page.evaluate("window.scrollTo(0, 300)")
        wait_for_js(page, "window.scrollY === 300")
        target = thumb(page, images[4])
        target.scroll_into_view_if_needed()
        before = page.evaluate("window.scrollY")
        assert before > 0, "the grid should scroll in this window"

        target.click()
        expect(viewer(page)).to_be_visible()
        page.keyboard.press("Escape")

        expect(viewer(page)).to_be_hidden()
        assert page.evaluate("window.scrollY") == before
        expect(target).to_be_focused()


def test_arrow_keys_and_buttons_move_through_the_cells_in_order(page, images):
    open_gallery(page)
    thumb(page, images[0]).click()
    dialog = viewer(page)
    previous = dialog.get_by_role("button", name="Previous")
    expect(previous).to_be_disabled()

    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()
    assert shown_src(page) == full_of(page, images[1])
    dialog.get_by_role("button", name="Next").click()
    expect(page.get_by_role("dialog", name=f"Image 3 of {len(images)}")).to_be_visible()
    assert shown_src(page) == full_of(page, images[2])
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()

    # At the last loaded cell Next is disabled and → stays put.
    for _ in range(len(images)):
        page.keyboard.press("ArrowRight")
    expect(page.get_by_role("dialog", name=f"Image {len(images)} of {len(images)}")).to_be_visible()
    expect(dialog.get_by_role("button", name="Next")).to_be_disabled()

    # Closing after moving puts focus on the cell of the image shown.
    page.keyboard.press("Escape")
    expect(thumb(page, images[-1])).to_be_focused()


def test_z_toggles_actual_pixels_which_pan_by_dragging(page, images):
    open_gallery(page)
    thumb(page, images[0]).click()  # the 1024 px image
    wait_loaded(page)
    actual = viewer(page).get_by_role("button", name="100%")
    fitted = image_box(page)
    assert fitted["natural"] == 1024 and fitted["height"] < 900

    page.keyboard.press("z")

    expect(actual).to_have_attribute("aria-pressed", "true")
    assert page.locator(".viewer-image").evaluate("i => i.getBoundingClientRect().width") == 1024
    stage = page.locator(".viewer-stage")
    top = stage.evaluate("s => s.scrollTop")
    assert stage.evaluate("s => s.scrollHeight > s.clientHeight"), "1024 px should overflow"
    box = stage.bounding_box()
    page.mouse.move(box["x"] + 400, box["y"] + 300)
    page.mouse.down()
    page.mouse.move(box["x"] + 400, box["y"] + 240, steps=4)
    page.mouse.up()
    assert stage.evaluate("s => s.scrollTop") == pytest.approx(top + 60, abs=2)
    page.mouse.wheel(0, 40)
    wait_for_js(page, "t => document.querySelector('.viewer-stage').scrollTop > t", arg=top + 60)
    assert page.evaluate("window.scrollY") == 0, "the page behind scrolled"

    page.keyboard.press("z")
    expect(actual).to_have_attribute("aria-pressed", "false")
    assert image_box(page)["width"] == pytest.approx(fitted["width"], abs=1)


def swipe(page: Page, dx: int) -> None:
    """A one-finger horizontal swipe across the middle of the viewer (real touch events)."""
    cdp = page.context.new_cdp_session(page)
    x, y = 180, 400
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 6):
        point = {"x": x + dx * step / 5, "y": y}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def test_swipe_moves_on_a_touch_screen(browser, server, images):
    phone = {"viewport": {"width": 390, "height": 800}, "has_touch": True, "is_mobile": True}
    with checked_page(browser, base_url=server, **phone) as page:
        open_gallery(page)
        thumb(page, images[1]).tap()
        expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()

        swipe(page, -150)  # finger to the left: the next image
        expect(page.get_by_role("dialog", name=f"Image 3 of {len(images)}")).to_be_visible()
        swipe(page, 150)
        expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()
        swipe(page, 20)  # too short to be a swipe
        expect(page.get_by_role("dialog", name=f"Image 2 of {len(images)}")).to_be_visible()

        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        tools = page.locator(".viewer-bar").evaluate("b => b.scrollWidth <= b.clientWidth")
        assert tools, "the viewer's bar is wider than the phone"
        wait_loaded(page)
        page.screenshot(path=str(SCREENSHOTS / "viewer-phone.png"))


def test_focus_stays_in_the_viewer(page, images):
    open_gallery(page)
    thumb(page, images[1]).click()
    dialog = viewer(page)
    expect(dialog).to_be_visible()

    for key in ["Tab"] * 9 + ["Shift+Tab"] * 9:
        page.keyboard.press(key)
        assert dialog.evaluate("d => d.contains(document.activeElement)"), key


def test_viewer_screenshots_light_and_dark(browser, server, images):
    for name, scheme in (("viewer.png", "light"), ("viewer-dark.png", "dark")):
        with checked_page(browser, base_url=server, color_scheme=scheme) as page:
            open_gallery(page)
            thumb(page, images[0]).click()
            wait_loaded(page)
            page.screenshot(path=str(SCREENSHOTS / name))


# --- compare ----------------------------------------------------------------------------------


def tick(page: Page, *image_ids: int) -> None:
    for image_id in image_ids:
        page.locator(f"#select-{image_id}").check()


def test_compare_shows_three_ticked_images_side_by_side(page, images):
    open_gallery(page)
    tick(page, images[0], images[2], images[5])
    compare = page.locator("[data-compare]")

    compare.click()

    expect(page.get_by_role("dialog", name="Comparing 3 images")).to_be_visible()
    figures = page.locator(".compare-item")
    expect(figures).to_have_count(3)
    boxes = [figures.nth(index).bounding_box() for index in range(3)]
    assert boxes[0]["y"] == boxes[1]["y"] == boxes[2]["y"], "not side by side"
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    sources = page.locator(".compare-image").evaluate_all(
        "images => images.map(i => new URL(i.src).pathname)"
    )
    assert sources == [full_of(page, image_id) for image_id in (images[0], images[2], images[5])]
    # Only two images have a slider mode.
    expect(viewer(page).get_by_role("button", name="Slider")).to_be_hidden()
    expect(viewer(page).get_by_role("button", name="Side by side")).to_be_hidden()
    wait_for_js(
        page, "() => [...document.querySelectorAll('.compare-image')].every(i => i.complete)"
    )
    page.screenshot(path=str(SCREENSHOTS / "compare.png"))

    page.keyboard.press("Escape")
    expect(viewer(page)).to_be_hidden()
    expect(compare).to_be_focused()


def test_compare_slider_by_mouse_and_keyboard(page, images):
    open_gallery(page)
    tick(page, images[1], images[2])
    page.locator("[data-compare]").click()
    dialog = viewer(page)
    dialog.get_by_role("button", name="Slider").click()
    expect(dialog.get_by_role("button", name="Slider")).to_have_attribute("aria-pressed", "true")

    divider = page.get_by_role("slider")
    expect(divider).to_have_attribute("aria-valuenow", "50")
    divider.focus()
    page.keyboard.press("ArrowRight")
    expect(divider).to_have_attribute("aria-valuenow", "55")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    expect(divider).to_have_attribute("aria-valuenow", "45")
    page.keyboard.press("End")
    expect(divider).to_have_attribute("aria-valuenow", "100")
    page.keyboard.press("Home")
    expect(divider).to_have_attribute("aria-valuenow", "0")
    expect(dialog).to_be_visible()  # the arrows moved the divider, nothing else

    frame = page.locator(".compare-slider").bounding_box()
    y = frame["y"] + frame["height"] / 2
    page.mouse.move(frame["x"] + frame["width"] * 0.5, y)
    page.mouse.down()
    page.mouse.move(frame["x"] + frame["width"] * 0.25, y, steps=3)
    expect(divider).to_have_attribute("aria-valuenow", "25")
    page.mouse.move(frame["x"] + frame["width"] * 0.75, y, steps=3)
    page.mouse.up()
    expect(divider).to_have_attribute("aria-valuenow", "75")
    clip = page.locator(".compare-after").evaluate("i => getComputedStyle(i).clipPath")
    assert clip == "inset(0px 0px 0px 75%)"
    wait_for_js(
        page, "() => [...document.querySelectorAll('.compare-image')].every(i => i.complete)"
    )
    page.screenshot(path=str(SCREENSHOTS / "compare-slider.png"))

    dialog.get_by_role("button", name="Side by side").click()
    expect(page.locator(".compare-item")).to_have_count(2)


def test_compare_does_not_open_for_one_image(page, images):
    open_gallery(page)
    tick(page, images[0])
    page.locator("[data-compare]").evaluate("b => { b.disabled = false; b.click(); }")
    expect(viewer(page)).to_be_hidden()


# --- the image page ---------------------------------------------------------------------------


def test_siblings_strip_on_the_image_page(page, images):
    family = sorted(images[1:5])  # the job of four, oldest (index 0) first
    page.goto(f"/images/{family[1]}?q=viewer")
    strip = page.get_by_role("navigation", name="Image 2 of 4 in this job")
    expect(strip).to_be_visible()
    expect(strip.locator("[aria-current='page']")).to_have_count(1)
    links = strip.get_by_role("link")
    expect(links).to_have_count(3)

    strip.get_by_role("link", name="Image 4").click()

    expect(page).to_have_url(re.compile(rf"/images/{family[3]}\?q=viewer$"))
    expect(page.get_by_role("navigation", name="Image 4 of 4 in this job")).to_be_visible()
    # ← and → stay inside the search the page was opened from.
    page.keyboard.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"/images/\d+\?q=viewer$"))


CONTRAST = """el => {
    // WCAG contrast of the element's text on its own background over the diff box's.
    const rgb = text => text.match(/[\\d.]+/g).map(Number);
    const lum = ([r, g, b]) => {
        const ch = c => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        };
        return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b);
    };
    const over = (top, bottom) => {
        const a = top.length > 3 ? top[3] : 1;
        return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a));
    };
    const box = rgb(getComputedStyle(el.closest('.diff')).backgroundColor);
    const back = over(rgb(getComputedStyle(el).backgroundColor), box);
    const [hi, lo] = [lum(rgb(getComputedStyle(el).color)), lum(back)].sort((a, b) => b - a);
    return (hi + 0.05) / (lo + 0.05);
}"""


def test_the_diffs_added_words_have_at_least_4_5_to_1_contrast(browser, server):
    job = finished_job(
        server, submit_job(server, "a lighthouse at dusk", provider="emulator-azure:dall-e-3")
    )
    for scheme in ("light", "dark"):
        with checked_page(browser, base_url=server, color_scheme=scheme) as page:
            page.goto(f"/images/{job['images'][0]['id']}")
            page.get_by_text("What the model changed").click()
            added = page.locator(".diff ins").first
            expect(added).to_be_visible()
            assert added.evaluate(CONTRAST) >= 4.5, scheme
            removed = page.locator(".diff del")
            if removed.count():
                assert removed.first.evaluate(CONTRAST) >= 4.5, scheme
