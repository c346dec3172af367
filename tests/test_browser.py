"""A person's path through Atelier in real headless Chromium, against `python -m app` with its
built-in emulator: submit a prompt, watch it finish without a reload, find it in the gallery."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import app_server, watch_problems

server = app_server("browser-data", ATELIER_EMULATOR_LATENCY_SECONDS="1.5")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    errors = watch_problems(page)
    yield page
    context.close()
    assert errors == [], f"the page reported errors: {errors}"


def test_prompt_to_image_without_a_reload_then_in_the_gallery(server, page, tmp_path):
    page.goto(server + "/")
    page.evaluate("window.atelierSameDocument = true")

    page.get_by_label("Prompt").fill("a brass telescope on a windowsill")
    page.get_by_label("Size").select_option("1536x1024")
    page.get_by_role("spinbutton", name="Images").fill("2")
    page.get_by_role("button", name="Generate").click()

    card = page.locator(".job-card").filter(has_text="a brass telescope on a windowsill")
    expect(card).to_have_count(1)
    expect(card.locator("img")).to_have_count(2, timeout=20_000)
    expect(card.locator(".badge")).to_have_text("Done")
    assert page.evaluate("window.atelierSameDocument") is True, "the page reloaded"
    # The form for the next try keeps the prompt (issue #18): a small change away.
    expect(page.get_by_label("Prompt")).to_have_value("a brass telescope on a windowsill")
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)

    page.get_by_role("link", name="Gallery").click()
    gallery_images = page.locator(".gallery-grid img[alt*='brass telescope']")
    expect(gallery_images).to_have_count(2)
    gallery_images.first.click()  # the viewer, then the image's page
    page.locator("dialog.viewer").get_by_role("link", name="Open image page").click()
    expect(page.locator(".image-info")).to_contain_text("a brass telescope on a windowsill")
    expect(page.locator(".full-image img")).to_have_js_property("naturalWidth", 1536)


def test_empty_prompt_shows_the_error_beside_the_form(server, page):
    page.goto(server + "/")
    page.evaluate("window.atelierSameDocument = true")

    page.get_by_role("button", name="Generate").click()

    expect(page.locator("#prompt-form .field-error")).to_have_text("Enter a prompt.")
    assert page.evaluate("window.atelierSameDocument") is True


def test_refused_prompt_is_shown_with_the_reason(server, page):
    page.goto(server + "/")

    page.get_by_label("Prompt").fill("please refuse this [refuse]")
    page.get_by_role("button", name="Generate").click()

    card = page.locator(".job-card").filter(has_text="please refuse this")
    expect(card.locator(".job-error")).to_contain_text("safety system", timeout=20_000)
    expect(card.get_by_role("button", name="Retry")).to_be_visible()


def test_choosing_another_provider_swaps_its_options_and_uses_them(server, page):
    page.goto(server + "/")
    expect(page.get_by_label("Background")).to_be_visible()  # gpt-image-1 is the default

    page.get_by_label("Provider").select_option(
        label="dall-e-3 · Azure deployment dall-e-3 (retired) (emulator)"
    )

    expect(page.get_by_label("Style")).to_be_visible()
    expect(page.get_by_label("Background")).to_have_count(0)
    expect(page.get_by_role("spinbutton", name="Images")).to_have_attribute("readonly", "")
    page.get_by_label("Style").select_option("natural")
    page.get_by_label("Prompt").fill("a heron at the edge of a lake")
    page.get_by_role("button", name="Generate").click()

    card = page.locator(".job-card").filter(has_text="a heron at the edge of a lake")
    expect(card.locator("img")).to_have_count(1, timeout=20_000)
    expect(page.get_by_label("Provider")).to_have_value("emulator-azure:dall-e-3")
    card.locator("img").click()
    info = page.locator(".image-info")
    expect(info).to_contain_text("dall-e-3 · Azure deployment dall-e-3")
    expect(info).to_contain_text("Revised prompt")
    expect(info).to_contain_text("natural")
