"""The gallery's grid in real headless Chromium, against `python -m app` with its built-in
emulator: justified rows that keep each image's shape, the density control, the 512 px
thumbnail where a cell is shown larger, captions on hover, the phone layout (filters behind one
button, the selection bar only while something is ticked, a one-line dismissible demo notice),
the keyboard (skip link, one tab stop, arrow keys, `?`), the Undo toast, 24 px checkboxes, image
links that keep the filter, and Back coming to the clicked image after infinite scroll.
Screenshots of the grid go to /work/shots/grid-*.png (or /tmp when that folder is missing).
Also the markup contract with static/viewer.js, rendered without a browser."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from app.views.gallery import aspect_class
from tests.browser import FAST_IMAGES, app_server, finished_job, wait_for_js, watch_problems
from tests.helpers import generate, get

PAGE_SIZE = 48  # app.views.gallery.DEFAULT_PAGE_SIZE
SQUARES = 6 * 10
SHOTS = Path("/work/shots") if Path("/work/shots").is_dir() else Path("/tmp")
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


def _make_images(base: str) -> None:
    jobs = [
        {"prompt": f"study {n}: a harbour at night", "provider": "emulator-azure-async",
         "size": "256x256", "n": 10}
        for n in range(6)
    ]  # fmt: skip
    # The newest (first on the page): a wide and a tall image among the squares.
    for size in ("1792x1024", "1024x1792"):
        jobs.append({"prompt": f"a {size} view", "provider": "emulator-azure:dall-e-3",
                     "size": size})  # fmt: skip
    ids = []
    for body in jobs:
        response = requests.post(base + "/api/jobs", json=body, timeout=5)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
        job = finished_job(base, ids[-1])  # one after the other: a stable order
        assert job["status"] == "succeeded", job


server = app_server("grid-browser-data", populate=_make_images, **FAST_IMAGES)


def _open(browser: Browser, server: str, **options) -> tuple[Page, list[str]]:
    options.setdefault("viewport", DESKTOP)
    context = browser.new_context(base_url=server, **options)
    page = context.new_page()
    problems = watch_problems(page)
    # The full-window viewer (static/viewer.js, another branch) would open a clicked image over
    # the grid; these tests follow the link itself, so it is served empty here.
    page.route(
        "**/static/viewer.js", lambda route: route.fulfill(body="", content_type="text/javascript")
    )
    return page, problems


@pytest.fixture
def desktop(browser: Browser, server: str) -> Iterator[Page]:
    page, problems = _open(browser, server)
    yield page
    page.context.close()
    assert problems == [], f"the page reported errors: {problems}"


@pytest.fixture
def phone(browser: Browser, server: str) -> Iterator[Page]:
    page, problems = _open(browser, server, viewport=PHONE, is_mobile=True, has_touch=True)
    yield page
    page.context.close()
    assert problems == [], f"the page reported errors: {problems}"


def cells(page: Page):
    return page.locator("#gallery-grid > li.cell")


def open_gallery(page: Page, url: str = "/gallery") -> None:
    page.goto(url)
    expect(cells(page)).to_have_count(PAGE_SIZE)
    wait_for_js(
        page,
        "() => Array.from(document.querySelectorAll('#gallery-grid img')).slice(0, 8)"
        ".every(img => img.complete && img.naturalWidth > 0)",
    )


GEOMETRY = """() => Array.from(document.querySelectorAll('#gallery-grid > li.cell')).map(cell => {
    const thumb = cell.querySelector('a.thumb').getBoundingClientRect();
    const link = cell.querySelector('a.thumb');
    return {top: Math.round(thumb.top + window.scrollY), left: thumb.left, right: thumb.right,
            width: thumb.width, height: thumb.height,
            ratio: link.dataset.width / link.dataset.height};
})"""


def rows(page: Page) -> list[list[dict]]:
    by_top: dict[int, list[dict]] = {}
    for cell in page.evaluate(GEOMETRY):
        by_top.setdefault(cell["top"], []).append(cell)
    return [by_top[top] for top in sorted(by_top)]


def test_justified_rows_keep_each_images_shape_and_fill_the_width(desktop):
    open_gallery(desktop)
    grid = desktop.locator("#gallery-grid").bounding_box()
    assert grid["width"] > 1300  # the grid uses the window, not a narrow column
    found = rows(desktop)
    assert len(found) >= 3
    ratios = {round(cell["ratio"], 2) for row in found for cell in row}
    assert {1.0, 1.75, 0.57} <= ratios  # squares, a wide and a tall image
    for row in found:
        for cell in row:  # shown in its own shape, within the aspect classes' 2%
            assert cell["width"] / cell["height"] == pytest.approx(cell["ratio"], rel=0.03)
        assert max(c["height"] for c in row) - min(c["height"] for c in row) <= 1.5
    for row in found[:-1]:  # full rows run from edge to edge
        assert row[0]["left"] == pytest.approx(grid["x"], abs=1.5)
        assert row[-1]["right"] == pytest.approx(grid["x"] + grid["width"], abs=1.5)
    desktop.screenshot(path=str(SHOTS / "grid-desktop.png"))


def test_density_changes_the_row_height_and_is_remembered(desktop):
    open_gallery(desktop)
    medium = rows(desktop)[1][0]["height"]

    desktop.get_by_text("L", exact=True).click()
    large = rows(desktop)[1][0]["height"]
    assert large > medium * 1.3
    desktop.reload()
    expect(cells(desktop)).to_have_count(PAGE_SIZE)
    expect(desktop.get_by_role("radio", name="Large")).to_be_checked()
    assert rows(desktop)[1][0]["height"] == pytest.approx(large, abs=1)
    # Shown larger than 256 px, a cell loads the 512 px thumbnail from its srcset.
    square = desktop.locator("#gallery-grid li.cell.ar-0 img").first
    assert "512w" in square.get_attribute("srcset")
    assert square.get_attribute("sizes").startswith("auto")
    wait_for_js(
        desktop,
        "img => img.complete && img.currentSrc.endsWith('-512.webp')",
        arg=square.element_handle(),
    )
    desktop.screenshot(path=str(SHOTS / "grid-desktop-large.png"))

    desktop.get_by_text("S", exact=True).click()
    assert rows(desktop)[1][0]["height"] < medium * 0.8
    desktop.reload()
    expect(desktop.get_by_role("radio", name="Small")).to_be_checked()


def test_captions_show_on_hover_only(desktop):
    open_gallery(desktop)
    caption = cells(desktop).nth(3).locator(".caption")
    desktop.mouse.move(1, 1)
    expect(caption).to_have_css("opacity", "0")
    cells(desktop).nth(3).hover()
    expect(caption).to_have_css("opacity", "1")


def test_grouping_by_job_starts_each_job_on_a_row_under_its_heading(desktop):
    open_gallery(desktop)
    heading = desktop.locator(".job-group").first
    expect(heading).to_be_hidden()
    desktop.get_by_label("Group by job").check()
    expect(heading).to_be_visible()
    expect(heading).to_contain_text("Job #")
    first_of = desktop.evaluate(
        """() => Array.from(document.querySelectorAll('.job-group')).map(h => {
            let next = h.nextElementSibling;
            return next.getBoundingClientRect().left - h.getBoundingClientRect().left;
        })"""
    )
    assert all(abs(offset) < 1.5 for offset in first_of)  # each job starts a row
    desktop.reload()
    expect(desktop.get_by_label("Group by job")).to_be_checked()
    expect(desktop.locator(".job-group").first).to_be_visible()
    desktop.get_by_label("Group by job").uncheck()


def test_phone_shows_images_above_the_fold(phone):
    open_gallery(phone)
    # The demo notice is one line; the filters fold under one button; no selection bar yet.
    banner = phone.locator("#demo-banner")
    assert banner.bounding_box()["height"] < 44
    expect(phone.get_by_label("Collection", exact=True)).to_be_hidden()
    expect(phone.locator("#bulk-form")).to_be_hidden()
    first = cells(phone).first.bounding_box()
    assert first["y"] + first["height"] / 2 < PHONE["height"]  # an image in the first screen
    phone.screenshot(path=str(SHOTS / "grid-phone.png"))

    phone.get_by_text("Filters", exact=True).click()
    expect(phone.get_by_label("Collection", exact=True)).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_selection_bar_shows_only_while_something_is_ticked(phone):
    open_gallery(phone)
    bar = phone.locator("#bulk-form")
    expect(bar).to_be_hidden()
    box = cells(phone).nth(2).locator("input.select")
    box.check()
    expect(bar).to_be_visible()
    expect(bar).to_have_css("position", "fixed")
    placed = bar.bounding_box()
    assert placed["y"] + placed["height"] <= PHONE["height"] and placed["x"] >= 0
    assert placed["x"] + placed["width"] <= PHONE["width"]
    phone.screenshot(path=str(SHOTS / "grid-phone-selected.png"))
    box.uncheck()
    expect(bar).to_be_hidden()


def test_the_demo_notice_can_be_dismissed_for_good(phone):
    open_gallery(phone)
    banner = phone.locator("#demo-banner")
    expect(banner).to_be_visible()
    phone.get_by_role("button", name="Dismiss the demo mode notice").click()
    expect(banner).to_be_hidden()
    phone.goto("/history")
    expect(phone.locator("#demo-banner")).to_be_hidden()
    phone.evaluate("localStorage.clear()")
    phone.reload()
    expect(phone.locator("#demo-banner")).to_be_visible()


def test_skip_link_then_one_tab_stop_and_arrow_keys(desktop):
    open_gallery(desktop)
    desktop.keyboard.press("Tab")
    skip = desktop.locator(":focus")
    expect(skip).to_have_text("Skip to the images")
    desktop.keyboard.press("Enter")
    focused = desktop.locator(":focus")
    expect(focused).to_have_attribute(
        "data-image-id", cells(desktop).first.locator("a.thumb").get_attribute("data-image-id")
    )

    # One tab stop for the whole grid: its links but one, checkboxes and stars are out of the order.
    expect(desktop.locator("#gallery-grid a.thumb[tabindex='0']")).to_have_count(1)
    expect(desktop.locator("#gallery-grid input.select:not([tabindex='-1'])")).to_have_count(0)
    expect(desktop.locator("#gallery-grid .star:not([tabindex='-1'])")).to_have_count(0)

    def focused_index() -> int:
        return desktop.evaluate(
            "Array.from(document.querySelectorAll('#gallery-grid a.thumb'))"
            ".indexOf(document.activeElement)"
        )

    desktop.keyboard.press("ArrowRight")
    assert focused_index() == 1
    desktop.keyboard.press("ArrowLeft")
    assert focused_index() == 0
    found = rows(desktop)
    desktop.keyboard.press("ArrowDown")
    assert focused_index() == len(found[0])  # the first cell of the second row
    desktop.keyboard.press("ArrowUp")
    assert focused_index() == 0
    desktop.keyboard.press("End")
    assert focused_index() == PAGE_SIZE - 1
    desktop.keyboard.press("Home")
    desktop.keyboard.press("x")
    expect(cells(desktop).first.locator("input.select")).to_be_checked()
    desktop.keyboard.press("x")
    expect(cells(desktop).first.locator("input.select")).not_to_be_checked()

    desktop.keyboard.press("Tab")  # leaves the grid at once
    assert desktop.evaluate("!!document.activeElement.closest('#gallery-grid .cell')") is False
    desktop.keyboard.press("Shift+Tab")  # and comes back to the same cell
    assert focused_index() == 0


def test_question_mark_shows_the_shortcuts_in_the_grid(desktop):
    open_gallery(desktop)
    cells(desktop).nth(2).locator("a.thumb").focus()
    dialog = desktop.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_hidden()
    desktop.keyboard.press("?")
    expect(dialog).to_be_visible()
    for key in ("←", "→", "↑", "↓", "x", "f", "?", "Esc"):
        expect(dialog.locator("kbd", has_text=re.compile(f"^{re.escape(key)}$"))).to_have_count(1)
    desktop.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_undo_toast_is_fixed_to_the_window_after_a_bulk_delete(desktop):
    open_gallery(desktop)
    cell = cells(desktop).nth(30)
    cell.scroll_into_view_if_needed()
    cell_id = cell.get_attribute("id")
    cell.locator("input.select").check()
    desktop.get_by_role("button", name="Delete", exact=True).click()

    notice = desktop.locator("#gallery-message .notice")
    expect(notice).to_contain_text("Moved 1 image to the trash.")
    expect(desktop.locator("#gallery-message")).to_have_css("position", "fixed")
    placed = notice.bounding_box()  # in the window, wherever the page is scrolled
    assert placed["y"] >= 0 and placed["y"] + placed["height"] <= DESKTOP["height"]
    desktop.screenshot(path=str(SHOTS / "grid-undo-toast.png"))
    notice.get_by_role("button", name="Undo").click()
    expect(notice).to_contain_text("Restored 1 image.")
    expect(desktop.locator(f"#{cell_id} img")).to_be_visible()
    notice.get_by_role("button", name="Dismiss this message").click()
    expect(desktop.locator("#gallery-message .notice")).to_have_count(0)


def test_checkboxes_are_targets_of_at_least_24_px(desktop):
    open_gallery(desktop)
    desktop.get_by_text("Filters", exact=True).click()
    for box in [
        cells(desktop).first.locator("input.select"),
        desktop.get_by_label("Favourites only"),
        desktop.get_by_label("Group by job"),
    ]:
        size = box.bounding_box()
        assert size["width"] >= 24 and size["height"] >= 24, size


def test_image_links_keep_the_filter_without_the_cursor(desktop):
    open_gallery(desktop, "/gallery?q=study&size=256x256")
    desktop.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    expect(cells(desktop)).to_have_count(SQUARES)  # the second page came in
    for index in (0, SQUARES - 1):
        href = cells(desktop).nth(index).locator("a.thumb").get_attribute("href")
        parts = urlsplit(href)
        assert re.fullmatch(r"/images/\d+", parts.path)
        assert parse_qs(parts.query) == {"q": ["study"], "size": ["256x256"]}


def test_back_after_infinite_scroll_comes_to_the_clicked_image(desktop):
    open_gallery(desktop)
    desktop.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    expect(cells(desktop)).to_have_count(SQUARES + 2)
    assert "after=" in desktop.url  # the address bar followed the scrolling

    cell = cells(desktop).nth(20)  # on the first page, above where the scrolling ended
    cell_id = cell.get_attribute("id")
    cell.scroll_into_view_if_needed()
    cell.locator("a.thumb").click()
    desktop.wait_for_url(re.compile(r"/images/\d+"))
    desktop.go_back()

    expect(desktop.locator(f"#{cell_id}")).to_be_in_viewport()
    expect(desktop.locator(f"#{cell_id} a.thumb")).to_be_focused()
    assert "after=" not in desktop.url  # the page that holds it


# --- without a browser ----------------------------------------------------------------------


class Shape:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(1024, 1024, "ar-0"), (1792, 1024, "ar-14"), (1024, 1792, "ar-m14"), (1536, 1024, "ar-10"),
     (4000, 100, "ar-28"), (100, 4000, "ar-m28"), (0, 0, "ar-0")],
)  # fmt: skip
def test_aspect_class_is_the_nearest_step_and_clamped(width, height, expected):
    assert aspect_class(Shape(width, height)) == expected
    css = (Path(__file__).parent.parent / "static" / "gallery.css").read_text()
    assert f".{expected} {{ --ar:" in css


def test_viewer_contract_markup(app_factory, tmp_path):
    app = app_factory()
    client = app.test_client()
    job = generate(client, size="256x256", prompt="a contract", n=2)
    _, page, _ = get(client, "/gallery?q=contract")
    image = job["images"][0]
    link = re.search(
        rf'<a class="thumb [^"]*" href="[^"]*"[^>]*data-image-id="{image["id"]}"[^>]*>', page
    )
    assert link, page
    tag = link.group(0)
    assert f'href="/images/{image["id"]}?q=contract"' in tag
    assert f'data-full="/files/{image["sha256"]}.png"' in tag
    assert 'data-width="256"' in tag and 'data-height="256"' in tag
    assert 'id="gallery-grid"' in page
    # With static/viewer.js (it is there) the page loads the viewer and offers Compare.
    assert '<script src="/static/viewer.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/static/viewer.css">' in page
    assert re.search(r'<button type="button"[^>]*data-compare[^>]*>Compare</button>', page)

    # Without it nothing asks for it (and there is nothing to compare with).
    static = tmp_path / "static"
    static.mkdir()
    app.static_folder = str(static)
    _, page, _ = get(client, "/gallery?q=contract&favorites=")
    assert "viewer.js" not in page and "viewer.css" not in page and "data-compare" not in page
