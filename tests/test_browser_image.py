"""The image page and the jobs panel in real headless Chromium, against `python -m app` with its
built-in emulator: arrow keys, the shortcuts dialog, `f` to star, copy prompt, and the panel's
cancel. Screenshots go to /tmp (image-page*.png, history*.png, refusals.png) for a human look."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import app_server, checked_page, finished_job, submit_job, wait_for_js
from tests.browser import new_page as browser_page

SCREENSHOTS = Path("/tmp")


server = app_server("browser-image-data", ATELIER_EMULATOR_LATENCY_SECONDS="0.3")


@pytest.fixture(scope="module")
def frames(server: str) -> list[dict]:
    """Three finished jobs, one image each, made one after the other (oldest first)."""
    return [
        finished_job(server, submit_job(server, f"frame {word}"))
        for word in ("one", "two", "three")
    ]


CLIPBOARD = ["clipboard-read", "clipboard-write"]


def new_page(browser: Browser, errors: list[str], **options) -> Page:
    """A page that may use the clipboard (Copy prompt writes it; a test reads it back)."""
    return browser_page(browser, errors, permissions=CLIPBOARD, **options)


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    with checked_page(browser, base_url=server, permissions=CLIPBOARD) as page:
        yield page


def image_url(job: dict) -> str:
    return f"/images/{job['images'][0]['id']}"


def test_arrow_keys_move_to_older_and_newer_images(page, frames):
    one, two, three = frames
    page.goto(image_url(two))

    def press_and_arrive(key: str, job: dict) -> None:
        page.keyboard.press(key)
        expect(page).to_have_url(re.compile(re.escape(image_url(job)) + "$"))
        page.wait_for_load_state()  # the next page's script listens from its load on

    press_and_arrive("ArrowRight", one)
    expect(page.locator("#prompt-text")).to_have_text("frame one")
    press_and_arrive("ArrowLeft", two)
    press_and_arrive("ArrowLeft", three)
    expect(page.locator("#prompt-text")).to_have_text("frame three")


def test_question_mark_shows_the_shortcuts_and_escape_closes_them(page, frames):
    page.goto(image_url(frames[1]))
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_hidden()

    page.keyboard.press("?")
    expect(dialog).to_be_visible()
    for key in ("←", "→", "f", "?", "Esc"):
        expect(dialog.locator("kbd", has_text=re.compile(f"^{re.escape(key)}$"))).to_have_count(1)

    page.keyboard.press("ArrowRight")  # the dialog is open: no navigation
    expect(page).to_have_url(re.compile(re.escape(image_url(frames[1])) + "$"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_f_stars_and_unstars_the_image_without_a_reload(page, frames):
    page.goto(image_url(frames[0]))
    page.evaluate("window.atelierSameDocument = true")
    star = page.locator("#star-button")
    expect(star).to_have_attribute("aria-pressed", "false")

    page.keyboard.press("f")
    expect(star).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.atelierSameDocument") is True, "the page reloaded"

    page.reload()
    expect(page.locator("#star-button")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("f")
    expect(page.locator("#star-button")).to_have_attribute("aria-pressed", "false")


def test_copy_prompt_puts_the_prompt_on_the_clipboard(page, frames):
    page.goto(image_url(frames[2]))
    button = page.get_by_role("button", name="Copy prompt")

    button.click()

    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "frame three"


def test_without_javascript_the_copy_and_shortcut_buttons_stay_hidden(browser, server, frames):
    errors: list[str] = []
    page = new_page(browser, errors, base_url=server, java_script_enabled=False)
    page.goto(image_url(frames[1]))

    expect(page.get_by_role("button", name="Copy prompt")).to_be_hidden()
    expect(page.get_by_role("button", name=re.compile("^Shortcuts"))).to_be_hidden()
    expect(page.get_by_role("link", name="Older")).to_be_visible()
    page.context.close()


def test_image_page_with_its_family_screenshots(browser, server, frames):
    """A prompt reused with changes (through the form), then the child's page, in light,
    dark and phone sizes."""
    parent = finished_job(
        server, submit_job(server, "a lighthouse at dusk", provider="emulator-azure:dall-e-3")
    )
    errors: list[str] = []
    page = new_page(browser, errors, base_url=server)
    page.goto(f"/?reuse={parent['id']}")
    expect(page.get_by_label("Prompt")).to_have_value("a lighthouse at dusk")
    # dall-e-3 is retired: the form offers the current model, and says so; this test keeps the
    # retired one on purpose (its revised prompt is what the family shows).
    expect(page.locator(".replaced-model")).to_contain_text("dall-e-3 is retired")
    page.get_by_label("Provider").select_option("emulator-azure:dall-e-3")
    expect(page.get_by_label("Style")).to_be_visible()
    wait_for_js(page, "() => !document.querySelector('.htmx-added, .htmx-settling')")
    page.get_by_label("Prompt").fill("a red lighthouse at dusk, in fog")
    page.get_by_role("button", name="Generate").click()
    card = page.locator(".job-card").filter(has_text="a red lighthouse at dusk, in fog")
    expect(card.locator("img")).to_have_count(1, timeout=20_000)
    card.locator("img").click()

    family = page.locator(".lineage")
    expect(family).to_contain_text("Prompt reused · this image")
    expect(family.locator("ins")).to_contain_text(["red"])
    page.get_by_text("What the model changed").click()
    page.screenshot(path=str(SCREENSHOTS / "image-page.png"), full_page=True)
    child_url = page.url
    page.context.close()

    for name, options in {
        "image-page-dark.png": {"color_scheme": "dark"},
        "image-page-phone.png": {"viewport": {"width": 390, "height": 844}, "is_mobile": True},
    }.items():
        other = new_page(browser, errors, **options)
        other.goto(child_url)
        other.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        other.context.close()
    assert errors == []


def test_jobs_panel_counts_up_and_cancels_without_a_reload(page, browser, server, frames):
    finished_job(server, submit_job(server, "a forbidden thing [refuse]"))
    finished_job(
        server, submit_job(server, "two moons [filter]", provider="emulator-azure-async", n=2)
    )
    waiting = submit_job(server, "a slow sunrise [hang]", provider="emulator-azure-async")
    page.goto("/history")
    page.evaluate("window.atelierSameDocument = true")
    panel = page.locator("#active-jobs")
    expect(panel).to_contain_text("a slow sunrise")
    before = panel.locator(".elapsed").inner_text()
    expect(panel.locator(".elapsed")).not_to_have_text(before, timeout=5_000)  # it refreshed
    page.screenshot(path=str(SCREENSHOTS / "history.png"), full_page=True)
    phone = new_page(browser, errors := [], viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{server}/history")
    phone.screenshot(path=str(SCREENSHOTS / "history-phone.png"), full_page=True)
    phone.context.close()
    assert errors == []

    panel.get_by_role("button", name=f"Cancel job {waiting}").click()

    expect(panel).to_contain_text("Nothing is queued or running.")
    expect(page.locator(f"#history-job-{waiting} .badge")).to_have_text("Canceled")
    expect(page.locator(f"#history-job-{waiting}")).to_contain_text("Canceled by you.")
    assert page.evaluate("window.atelierSameDocument") is True, "the page reloaded"
    page.goto("/refusals")
    expect(page.locator(".refusal-list > li")).to_have_count(2)
    page.screenshot(path=str(SCREENSHOTS / "refusals.png"), full_page=True)
