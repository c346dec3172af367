"""The gallery in real headless Chromium, against `python -m app` with its built-in emulator and
60 images: infinite scroll, starring in place, range selection, delete with undo, and
screenshots in light and dark mode."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import Browser, Page, expect

from tests.browser import FAST_IMAGES, app_server, finished_job, wait_for_js, watch_problems

JOBS = 6
IMAGES_PER_JOB = 10
PAGE_SIZE = 48  # app.views.gallery.DEFAULT_PAGE_SIZE


def _make_images(base: str) -> None:
    job_ids = []
    for number in range(JOBS):
        response = requests.post(
            base + "/api/jobs",
            json={
                "prompt": f"study {number}: a lighthouse in changing weather",
                "provider": "emulator-azure-async",
                "size": "256x256",
                "n": IMAGES_PER_JOB,
            },
            timeout=5,
        )
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["id"])
    for job_id in job_ids:
        job = finished_job(base, job_id)
        assert job["status"] == "succeeded", job


server = app_server("gallery-browser-data", populate=_make_images, **FAST_IMAGES)


def _open(browser: Browser, **context_options) -> tuple[Page, list[str], object]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, **context_options)
    page = context.new_page()
    return page, watch_problems(page), context


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page, errors, context = _open(browser)
    yield page
    context.close()
    assert errors == [], f"the page reported errors: {errors}"


def cells(page: Page):
    return page.locator("#gallery-grid > li.cell")


def open_gallery(page: Page, server: str) -> None:
    page.goto(server + "/gallery")
    expect(cells(page)).to_have_count(PAGE_SIZE)
    page.evaluate("window.atelierSameDocument = true")


def test_scrolling_to_the_bottom_loads_the_older_images(server, page):
    open_gallery(page, server)

    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")

    expect(cells(page)).to_have_count(JOBS * IMAGES_PER_JOB)
    expect(page.locator("li.sentinel")).to_have_count(0)  # the last page ends the scrolling
    assert "after=" in page.url  # a reload comes back to the same place
    assert page.evaluate("window.atelierSameDocument") is True


def test_starring_keeps_the_scroll_position(server, page):
    open_gallery(page, server)
    cell = cells(page).nth(27)
    star = cell.get_by_role("button", name="Favourite")
    star.scroll_into_view_if_needed()
    before = page.evaluate("window.scrollY")
    assert before > 300

    star.click()

    expect(star).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.scrollY") == before
    assert page.evaluate("window.atelierSameDocument") is True

    cell.get_by_role("link").focus()  # focusing may scroll the link into view by itself
    before_key = page.evaluate("window.scrollY")
    page.keyboard.press("f")  # the keyboard toggles the focused cell's star
    expect(star).to_have_attribute("aria-pressed", "false")
    assert page.evaluate("window.scrollY") == before_key
    assert page.evaluate("window.atelierSameDocument") is True  # no plain-form reload


def test_f_right_after_a_star_swap_still_stays_on_the_page(server, page):
    """The swapped-in star form is wired by htmx only when it settles (20 ms later); "f"
    pressed before that must wait for it, not post the plain form and reload the page."""
    open_gallery(page, server)
    cell = cells(page).nth(3)
    star = cell.get_by_role("button", name="Favourite")
    cell.get_by_role("link").focus()

    # Press "f" in the very task that swaps the form in, so it is certainly not yet settled.
    page.evaluate(
        """() => new Promise((resolve) => {
            document.addEventListener("htmx:afterSwap", () => {
                document.activeElement.dispatchEvent(
                    new KeyboardEvent("keydown", {key: "f", bubbles: true}));
                resolve();
            }, {once: true});
            document.activeElement.dispatchEvent(
                new KeyboardEvent("keydown", {key: "f", bubbles: true}));
        })"""
    )

    busy = ".htmx-request, .htmx-added, .htmx-settling"
    wait_for_js(page, f"() => !document.querySelector('{busy}')")
    expect(star).to_have_attribute("aria-pressed", "false")  # starred, then unstarred
    assert page.evaluate("window.atelierSameDocument") is True


def test_shift_click_selects_a_range_and_the_bar_counts_it(server, page):
    open_gallery(page, server)
    boxes = page.locator("#gallery-grid .cell input.select")

    boxes.nth(2).click()
    boxes.nth(8).click(modifiers=["Shift"])

    expect(page.locator("#gallery-grid .cell input.select:checked")).to_have_count(7)
    expect(page.locator("#selected-count")).to_have_text("7")
    for index in range(2, 9):
        expect(boxes.nth(index)).to_be_checked()
    expect(boxes.nth(1)).not_to_be_checked()
    expect(boxes.nth(9)).not_to_be_checked()


def test_delete_then_undo_without_leaving_the_page(server, page):
    open_gallery(page, server)
    first, second = cells(page).nth(3), cells(page).nth(4)
    ids = [first.get_attribute("id"), second.get_attribute("id")]
    first.locator("input.select").click()
    second.locator("input.select").click()

    page.get_by_role("button", name="Delete", exact=True).click()

    notice = page.locator("#gallery-message .notice")
    expect(notice).to_contain_text("Moved 2 images to the trash.")
    expect(page.locator(f"#{ids[0]}")).to_contain_text("Moved to the trash")
    expect(page.locator("#selected-count")).to_have_text("0")

    notice.get_by_role("button", name="Undo").click()

    expect(notice).to_contain_text("Restored 2 images.")
    for image_id in ids:
        expect(page.locator(f"#{image_id} img")).to_be_visible()
    assert page.evaluate("window.atelierSameDocument") is True


def test_screenshots_in_light_and_dark(server, browser, tmp_path):
    for scheme in ("light", "dark"):
        page, errors, context = _open(browser, color_scheme=scheme)
        page.goto(server + "/gallery")
        expect(cells(page)).to_have_count(PAGE_SIZE)
        cells(page).nth(1).locator("input.select").click()
        cells(page).nth(2).locator("input.select").click()
        wait_for_js(
            page,
            "Array.from(document.querySelectorAll('#gallery-grid img'))"
            ".slice(0, 10).every(img => img.complete && img.naturalWidth > 0)",
        )
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        page.screenshot(path=str(tmp_path / f"gallery-{scheme}.png"))
        page.screenshot(path=f"/tmp/gallery-{scheme}.png")
        context.close()
        assert errors == []
        if scheme == "dark":
            assert background == "rgb(22, 22, 26)"  # --bg in app.css's dark palette
        else:
            assert background == "rgb(246, 245, 242)"


def test_the_grid_fits_a_phone(server, browser, tmp_path):
    page, errors, context = _open(browser, color_scheme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(server + "/gallery")
    expect(cells(page)).to_have_count(PAGE_SIZE)

    overflow = page.evaluate(
        "Array.from(document.querySelectorAll('#main *'))"
        ".filter(el => el.getBoundingClientRect().right > window.innerWidth + 1).length"
    )
    tops = page.evaluate(
        "Array.from(document.querySelectorAll('#gallery-grid > li.cell')).slice(0, 4)"
        ".map(cell => Math.round(cell.getBoundingClientRect().top))"
    )
    page.screenshot(path=str(tmp_path / "gallery-phone.png"))
    page.screenshot(path="/tmp/gallery-phone.png")
    context.close()

    assert overflow == 0  # nothing in the gallery is wider than the screen
    assert tops[0] == tops[1] and tops[2] == tops[3] and tops[2] > tops[0]  # two columns
    assert errors == []
