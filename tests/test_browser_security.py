"""The signed-in product in real headless Chromium, with the strict Content-Security-Policy on:
first-account setup from the printed link, generate, gallery, image page, star, share, tokens,
sign out and in again. Any CSP violation, script error or failed request fails the test."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import serve_app, watch_problems

PASSWORD = "a long browser password"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("secure-browser-data")
    with serve_app(data, ATELIER_AUTH="on", ATELIER_EMULATOR_LATENCY_SECONDS="1") as base:
        yield base, (data / "server.log").read_text()


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, list[str]]]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    problems = watch_problems(page)
    yield page, problems
    context.close()


def test_main_flows_signed_in_without_csp_violations(server, page):
    base, startup_output = server
    page, problems = page
    setup_url = re.search(r"(http://\S+/setup\?token=\S+)", startup_output)
    assert setup_url, startup_output

    # Anonymous visitors are sent to sign-in, which explains how to create the first account.
    page.goto(base + "/gallery")
    assert "/login" in page.url
    expect(page.get_by_text("No account exists yet")).to_be_visible()

    page.goto(setup_url.group(1))
    page.get_by_label("Username").fill("owner")
    page.locator("#password").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()
    expect(page.get_by_role("link", name="owner")).to_be_visible()

    page.get_by_label("Prompt").fill("a lantern on a snowy path")
    page.get_by_role("button", name="Generate").click()
    card = page.locator(".job-card").first
    expect(card.get_by_text("Done")).to_be_visible(timeout=20_000)
    expect(card.locator("img").first).to_be_visible()

    page.goto(base + "/gallery")
    page.locator(".cell a.thumb").first.click()  # the viewer, then the image's page
    page.locator("dialog.viewer").get_by_role("link", name="Open image page").click()
    expect(page.get_by_text("a lantern on a snowy path").first).to_be_visible()
    page.locator("#star-button").click()
    expect(page.locator("#star-button")).to_have_attribute("aria-pressed", "true")
    page.get_by_role("button", name="Share link").click()
    share_url = page.locator("#share-url").inner_text()
    assert "/s/" in share_url

    page.goto(base + "/account")
    page.get_by_label("New token named").fill("browser")
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_role("button", name="Create token").click()
    expect(page.locator("#new-token")).to_contain_text("atl_")

    page.get_by_role("button", name="Sign out").click()
    assert "/login" in page.url
    # The share link still works for someone not signed in.
    page.goto(share_url)
    expect(page.get_by_role("heading", name="A shared image")).to_be_visible()
    expect(page.locator(".shared-single img")).to_be_visible()

    page.goto(base + "/login")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("link", name="owner")).to_be_visible()

    assert problems == [], f"the page reported errors: {problems}"
