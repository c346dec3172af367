"""No page scrolls sideways: every page, signed in, in real headless Chromium at a phone's
390 px and a desktop's 1440 px (and the phone in dark mode), is no wider than the window.

The library holds what made pages too wide before: a long prompt with a word that cannot
break, a prompt reused with changes (the image page's family lines), a refusal, a collection
with a long name and its share link, a long provider label on the prompt form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import serve_app, wait_for_js, watch_problems

PASSWORD = "a long layout password"
LONG_WORD = "supercalifragilisticexpialidocious" * 3
LONG_PROMPT = (
    "a lighthouse on a cliff at dusk, storm clouds gathering over a restless sea, "
    f"gulls circling the lantern room, {LONG_WORD}, painted in thick impasto strokes"
)
WIDTHS = (390, 1440)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, browser: Browser) -> Iterator[dict]:
    """A signed-in browser context on a server with auth on, and the URL of every page."""
    data = tmp_path_factory.mktemp("layout-data")
    with serve_app(data, ATELIER_AUTH="on", ATELIER_EMULATOR_LATENCY_SECONDS="0.05") as base:
        log = (data / "server.log").read_text()
        setup = re.search(r"(http://\S+/setup\?token=\S+)", log)
        assert setup, log
        context = browser.new_context(base_url=base, viewport={"width": 1440, "height": 900})
        page = context.new_page()
        problems = watch_problems(page)
        urls = _make_library(page, setup.group(1))
        assert problems == []
        yield {"context": context, "urls": urls}
        context.close()


def _make_library(page: Page, setup_url: str) -> dict[str, str]:
    page.goto(setup_url)
    page.get_by_label("Username").fill("owner")
    page.locator("#password").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account and sign in").click()
    expect(page.get_by_role("link", name="owner")).to_be_visible()
    token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRFToken']")

    def submit(prompt: str, **body) -> int:
        response = page.request.post(
            "/api/jobs", data={"prompt": prompt, **body}, headers={"X-CSRFToken": token}
        )
        assert response.status == 202, response.text()
        return response.json()["id"]

    def finished(job_id: int) -> dict:
        wait_for_js(
            page,
            f"""async () => {{
                const job = await (await fetch("/api/jobs/{job_id}")).json();
                return ["succeeded", "failed", "canceled"].includes(job.status);
            }}""",
            timeout=20_000,
        )
        return page.request.get(f"/api/jobs/{job_id}").json()

    finished(submit("a forbidden thing [refuse]"))
    parent = finished(submit(LONG_PROMPT, n=2))
    # A prompt reused with changes: the child's image page shows the family with a diff.
    page.goto(f"/?reuse={parent['id']}")
    page.get_by_label("Prompt").fill(LONG_PROMPT.replace("dusk", "dawn, in fog,"))
    page.get_by_role("button", name="Generate").click()
    card = page.locator(".job-card").filter(has_text="dawn, in fog")
    expect(card.locator("img")).to_have_count(2, timeout=20_000)
    child_job = int(re.search(r"\d+", card.locator(".job-link").first.inner_text()).group())
    child = finished(child_job)

    page.goto("/collections")
    page.get_by_label("New collection").fill("Lighthouses and other coastal studies " * 2)
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator(".collection-list li")).to_have_count(1)
    collection = page.locator(".collection-list a").first.get_attribute("href")
    page.locator(".collection-list").get_by_role("button", name="Share link").click()
    share_url = page.locator("#share-url").inner_text()

    return {
        "create": "/",
        "gallery": "/gallery",
        "collection": collection,
        "image page": f"/images/{child['images'][0]['id']}",
        "history": "/history",
        "refusals": "/refusals",
        "collections": "/collections",
        "account": "/account",
        "job page": f"/jobs/{parent['id']}",
        "shared page": share_url,
    }


# A page without <link rel="icon"> (shares/shared.html) makes Chromium ask for /favicon.ico,
# which 404s; Playwright reports that request to no listener, only its console line. Other
# failed requests are caught by their responses (`watch`).
FAVICON_404 = "the server responded with a status of 404"


def watch(page: Page) -> list[str]:
    """The page's script errors, CSP violations and failed requests (with their URLs)."""
    problems = watch_problems(page)
    page.on(
        "response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
    )
    return problems


def real(problems: list[str]) -> list[str]:
    return [problem for problem in problems if FAVICON_404 not in problem]


def _widths(page: Page) -> tuple[int, int, list[str]]:
    """The document's scroll width, the window's width, and what sticks out (for the message)."""
    return page.evaluate(
        """() => {
            const inner = window.innerWidth;
            const wide = Array.from(document.querySelectorAll("body *"))
                .filter(el => el.getBoundingClientRect().right > inner + 1)
                .slice(0, 8)
                .map(el => el.tagName.toLowerCase() + (el.id ? "#" + el.id : "")
                     + (el.className && typeof el.className === "string"
                        ? "." + el.className.trim().split(/\\s+/).join(".") : "")
                     + " " + Math.round(el.getBoundingClientRect().right));
            return [document.documentElement.scrollWidth, inner, wide];
        }"""
    )


@pytest.mark.parametrize(
    ("width", "scheme"), [(390, "light"), (1440, "light"), (390, "dark")], ids=str
)
def test_no_page_is_wider_than_the_window(site, browser, width, scheme):
    page = site["context"].new_page()
    problems = watch(page)
    page.set_viewport_size({"width": width, "height": 844 if width < 500 else 900})
    page.emulate_media(color_scheme=scheme)
    too_wide = {}
    for name, url in site["urls"].items():
        page.goto(url)
        page.wait_for_load_state()
        scroll_width, inner, wide = _widths(page)
        if scroll_width > inner:
            too_wide[name] = (scroll_width, wide)
    page.close()
    assert too_wide == {}, f"pages wider than {width} px: {too_wide}"
    assert real(problems) == []


def test_signed_out_pages_fit_360_and_1920(site, browser):
    """Signed out: the sign-in page and a share link, at the narrowest and widest sizes."""
    signed_out = browser.new_context(viewport={"width": 360, "height": 740})
    page = signed_out.new_page()
    problems = watch(page)
    base = re.match(r"https?://[^/]+", site["urls"]["shared page"]).group()
    for width in (360, 1920):
        page.set_viewport_size({"width": width, "height": 800})
        for url in (base + "/login", site["urls"]["shared page"]):
            page.goto(url)
            scroll_width, inner, wide = _widths(page)
            assert scroll_width <= inner, f"{url} at {width} px: {scroll_width} px, {wide}"
    signed_out.close()
    assert real(problems) == []
