"""Iterating in real headless Chromium (issue #18, point 7 and the share page of point 9): the
prompt is kept after Generate and keeps the focus, Ctrl+Enter sends the form, finished cards
offer Again and Edit, a refused card offers "Edit prompt", and the share page's Copy link
button copies the link."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from tests.browser import app_server, new_page

server = app_server("flow", ATELIER_EMULATOR_LATENCY_SECONDS="0.3")
PASSWORD = "a long admin password"
signed_in_server = app_server(
    "flow-auth",
    ATELIER_AUTH="on",
    ATELIER_ADMIN_USERNAME="ada",
    ATELIER_ADMIN_PASSWORD=PASSWORD,
    ATELIER_EMULATOR_LATENCY_SECONDS="0.3",
)


def test_ctrl_enter_sends_the_prompt_which_stays_with_the_focus(browser: Browser, server: str):
    problems: list[str] = []
    page = new_page(browser, problems)
    try:
        page.goto(server + "/")
        prompt = page.locator("#prompt")
        prompt.fill("a paper crane on a windowsill")
        prompt.press("Control+Enter")

        card = page.locator("#job-list .job-card", has_text="a paper crane on a windowsill")
        expect(card).to_have_count(1)
        expect(card.locator(".thumbs img")).to_be_visible(timeout=20_000)
        # The form came back with the prompt kept, and the caret in it, at the end.
        expect(page.locator("#prompt")).to_have_value("a paper crane on a windowsill")
        expect(page.locator("#prompt")).to_be_focused()
        caret = page.evaluate("() => document.getElementById('prompt').selectionStart")
        assert caret == len("a paper crane on a windowsill")

        # The kept prompt, changed a little, goes as a new job (a new idempotency key).
        page.locator("#prompt").press("End")
        page.keyboard.type(", at dawn")
        page.locator("#prompt").press("Meta+Enter")
        cranes = page.locator("#job-list .job-card", has_text="a paper crane on a windowsill")
        expect(cranes.first).to_contain_text("a paper crane on a windowsill, at dawn")
        expect(cranes).to_have_count(2)
        expect(page.locator("#prompt")).to_be_focused()

        # Plain Enter is a new line, not a submit.
        page.locator("#prompt").press("Enter")
        page.wait_for_timeout(300)
        expect(cranes).to_have_count(2)
    finally:
        page.context.close()
    assert problems == []


def test_a_finished_card_offers_again_and_edit(browser: Browser, server: str):
    problems: list[str] = []
    page = new_page(browser, problems)
    try:
        page.goto(server + "/")
        page.locator("#prompt").fill("a teapot shaped like a snail")
        page.get_by_role("button", name="Generate").click()
        card = page.locator("#job-list .job-card", has_text="a teapot shaped like a snail")
        image = card.locator(".thumbs a").first
        expect(image).to_be_visible(timeout=20_000)
        image_id = re.search(r"/images/(\d+)", image.get_attribute("href")).group(1)
        job_id = card.get_attribute("id").removeprefix("job-")

        card.get_by_role("link", name=re.compile(r"^Edit image")).click()
        expect(page).to_have_url(re.compile(rf"/\?edit={image_id}$"))
        expect(page.locator("#prompt")).to_have_value("a teapot shaped like a snail")
        expect(page.locator(f'input[name=reference_image][value="{image_id}"]')).to_have_count(1)

        page.go_back()
        card = page.locator(f"#job-{job_id}")
        card.get_by_role("button", name=re.compile(r"^Again")).click()
        expect(page).to_have_url(re.compile(r"/jobs/\d+$"))
        assert not page.url.endswith(f"/jobs/{job_id}")  # a new job
        expect(page.locator(".job-card .prompt")).to_have_text("a teapot shaped like a snail")
    finally:
        page.context.close()
    assert problems == []


def test_a_refused_card_offers_edit_prompt_first(browser: Browser, server: str):
    problems: list[str] = []
    page = new_page(browser, problems)
    try:
        page.goto(server + "/")
        page.locator("#prompt").fill("something forbidden [refuse]")
        page.locator("#prompt").press("Control+Enter")
        card = page.locator("#job-list .job-card", has_text="something forbidden [refuse]")
        expect(card).to_contain_text("Refused by the safety system", timeout=20_000)
        job_id = card.get_attribute("id").removeprefix("job-")
        actions = card.locator(".job-actions")
        # "Edit prompt" comes before Retry (which would likely be refused again).
        expect(actions.locator("a, button").first).to_have_text(re.compile(r"^Edit prompt"))

        actions.get_by_role("link", name=re.compile(r"^Edit prompt")).click()
        expect(page).to_have_url(re.compile(rf"/\?reuse={job_id}$"))
        expect(page.locator("#prompt")).to_have_value("something forbidden [refuse]")
    finally:
        page.context.close()
    assert problems == []


def test_the_share_page_copy_button_copies_the_link(browser: Browser, signed_in_server: str):
    problems: list[str] = []
    page = new_page(browser, problems, permissions=["clipboard-read", "clipboard-write"])
    try:
        page.goto(signed_in_server + "/login")
        page.locator("#username").fill("ada")
        page.locator("#password").fill(PASSWORD)
        page.locator("#password").press("Enter")
        expect(page.locator("#prompt")).to_be_visible()
        # Visible comes before the page's scripts have run: Ctrl+Enter is theirs to handle.
        page.wait_for_load_state("load")
        page.locator("#prompt").fill("a harbour in fog")
        page.locator("#prompt").press("Control+Enter")
        image = page.locator("#job-list .job-card .thumbs a").first
        expect(image).to_be_visible(timeout=20_000)
        image.click()
        page.get_by_role("button", name="Share link").click()

        expect(page.locator("h1")).to_have_text("Share link ready")
        link = page.locator("#share-url").inner_text().strip()
        assert "/s/" in link or "share" in link, link
        button = page.get_by_role("button", name="Copy link")
        expect(button).to_be_visible()
        button.click()
        expect(page.locator(".copy-status")).to_have_text("Link copied to the clipboard.")
        assert page.evaluate("() => navigator.clipboard.readText()") == link
    finally:
        page.context.close()
    assert problems == []
