"""The jobs panel and history (/history) and the refusal ledger (/refusals)."""

from __future__ import annotations

import re

import pytest
from markupsafe import escape

from app import curation
from tests.helpers import csrf_token, generate, submit

DEPLOYMENTS = {
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3",
    "AZURE_OPENAI_ASYNC_DALLE2": "on",
}
POLLING = 'hx-trigger="load delay:2s"'


@pytest.fixture
def app_settings():
    return DEPLOYMENTS


@pytest.fixture
def idle_client(idle_app):
    """Jobs stay queued: no worker runs."""
    return idle_app.test_client()


def queue(client, prompt: str = "a paper boat", **body) -> int:
    return submit(client, prompt=prompt, **body)["id"]


def run(client, prompt: str, **body) -> dict:
    return generate(client, prompt=prompt, **body)


def page_of(client, url: str) -> str:
    with client.get(url) as response:
        assert response.status_code == 200, url
        return response.get_data(as_text=True)


def row_of(page: str, job_id: int) -> str:
    match = re.search(rf'<li id="history-job-{job_id}".*?\n</li>', page, re.S)
    assert match, f"no history row for job {job_id}"
    return match.group(0)


def shown_jobs(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="history-job-(\d+)"', page)]


def cancel(client, job_id: int) -> None:
    with client.post(f"/api/jobs/{job_id}/cancel") as response:
        assert response.status_code == 200


# --- the jobs panel -----------------------------------------------------------------------------


def test_active_jobs_show_their_elapsed_time_and_a_polling_trigger(idle_client):
    job_id = queue(idle_client, "waiting in line")

    page = page_of(idle_client, "/history")

    panel = page.split('<section id="active-jobs"', 1)[1].split("</section>", 1)[0]
    assert f'hx-get="/partials/history/active?rows={job_id}"' in panel
    assert POLLING in panel
    assert 'hx-target="this" hx-swap="outerHTML"' in panel
    assert re.search(r"queued for \d+\.\d s", panel)
    assert "waiting in line" in panel


def test_the_panel_partial_keeps_polling_while_a_job_is_active(idle_client):
    queue(idle_client)

    panel = page_of(idle_client, "/partials/history/active")

    assert POLLING in panel
    assert "queued for" in panel


def test_page_with_only_finished_jobs_has_no_polling_trigger(client):
    run(client, "already done")

    page = page_of(client, "/history")

    assert "hx-trigger" not in page
    assert "Nothing is queued or running." in page


def test_the_panel_stops_polling_and_updates_rows_of_jobs_that_finished(idle_client):
    job_id = queue(idle_client)
    cancel(idle_client, job_id)

    panel = page_of(idle_client, f"/partials/history/active?rows={job_id}")

    assert "hx-trigger" not in panel.split("</section>")[0]
    row = row_of(panel, job_id)
    assert 'hx-swap-oob="true"' in row
    assert "badge-canceled" in row


def test_active_jobs_have_a_cancel_button_that_works_without_javascript(idle_client):
    job_id = queue(idle_client)

    page = page_of(idle_client, "/history")
    with idle_client.post(
        f"/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(idle_client)}
    ) as response:
        assert response.status_code == 303

    assert f'action="/jobs/{job_id}/cancel"' in page
    assert f'hx-post="/partials/history/jobs/{job_id}/cancel?rows={job_id}"' in page
    assert idle_client.get(f"/api/jobs/{job_id}").get_json()["status"] == "canceled"


def test_cancel_through_htmx_answers_with_the_panel_without_the_job(idle_client):
    job_id = queue(idle_client)

    with idle_client.post(
        f"/partials/history/jobs/{job_id}/cancel?rows={job_id}",
        data={"csrf_token": csrf_token(idle_client)},
    ) as response:
        panel = response.get_data(as_text=True)

    assert response.status_code == 200
    assert panel.lstrip().startswith('<section id="active-jobs"')
    assert "Nothing is queued or running." in panel
    assert "hx-trigger" not in panel
    assert "badge-canceled" in row_of(panel, job_id)


def test_retry_is_offered_for_failed_and_canceled_jobs_only(app, client):
    failed = run(client, "nope [refuse]")
    done = run(client, "a fine day")
    canceled = queue(client, "never mind [hang]", provider="azure-async")
    cancel(client, canceled)

    page = page_of(client, "/history")

    assert f'action="/jobs/{failed["id"]}/retry"' in row_of(page, failed["id"])
    assert f'action="/jobs/{canceled}/retry"' in row_of(page, canceled)
    assert "/retry" not in row_of(page, done["id"])
    assert "/cancel" not in page


# --- the history --------------------------------------------------------------------------------


def test_history_lists_jobs_newest_first_with_provider_status_and_thumbnails(client):
    older = run(client, "first light")
    newer = run(client, "second light", provider="azure:dall-e-3")

    page = page_of(client, "/history")

    assert shown_jobs(page)[:2] == [newer["id"], older["id"]]
    row = row_of(page, newer["id"])
    assert "second light" in row
    assert "dall-e-3 · Azure deployment dall-e-3 (retired) · 1024x1024 · 1 image" in row
    assert '<span class="badge badge-succeeded">Done</span>' in row
    assert f'<img src="/files/thumbs/{newer["images"][0]["id"]}"' in row
    # Its accessible name starts with the words shown (WCAG 2.5.3), then says which job.
    assert (
        f'href="/?reuse={newer["id"]}">Use this prompt'
        f'<span class="visually-hidden"> of job {newer["id"]}</span></a>'
    ) in row


def test_failed_row_keeps_the_exact_refusal_message(client):
    failed = run(client, "forbidden fruit [refuse]")

    row = row_of(page_of(client, "/history"), failed["id"])

    assert "Refused by the safety system" in row
    assert failed["error"]["message"] in row
    assert "(flagged: sexual)" in row


def test_search_finds_a_prompt_after_its_images_went_to_the_trash(app, client):
    job = run(client, "a marmalade cat on a windowsill")
    run(client, "something else")
    with app.app_context():
        curation.trash([image["id"] for image in job["images"]])

    page = page_of(client, "/history?q=marmalade")

    assert shown_jobs(page) == [job["id"]]
    row = row_of(page, job["id"])
    assert "1 in the trash" in row
    assert "/files/thumbs/" not in row
    assert 'value="marmalade"' in page


def test_status_filter_shows_only_that_status(idle_client):
    kept = queue(idle_client, "keep me")
    dropped = queue(idle_client, "drop me")
    cancel(idle_client, dropped)

    canceled_page = page_of(idle_client, "/history?status=canceled")
    queued_page = page_of(idle_client, "/history?status=queued")

    assert shown_jobs(canceled_page) == [dropped]
    assert shown_jobs(queued_page) == [kept]
    assert '<option value="canceled" selected>' in canceled_page


def test_unknown_status_is_refused(idle_client):
    with idle_client.get("/history?status=lost") as response:
        assert response.status_code == 400
        assert "The status must be one of" in response.get_data(as_text=True)


def test_history_pages_forward_and_back_keeping_the_filters(idle_client):
    ids = [queue(idle_client, f"boat {n}") for n in range(5)]

    first = page_of(idle_client, "/history?q=boat&limit=2")
    older_url = re.search(r'<a rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = page_of(idle_client, older_url)
    newer_url = re.search(r'<a rel="prev" href="([^"]+)"', second).group(1).replace("&amp;", "&")
    back = page_of(idle_client, newer_url)

    assert "q=boat" in older_url and "limit=2" in older_url
    assert shown_jobs(first) == [ids[4], ids[3]]
    assert shown_jobs(second) == [ids[2], ids[1]]
    assert shown_jobs(back) == shown_jobs(first)
    assert '<a rel="prev"' not in first


def test_bad_cursor_is_refused(idle_client):
    with idle_client.get("/history?after=%%%") as response:
        assert response.status_code == 400


# --- the refusal ledger -------------------------------------------------------------------------


@pytest.fixture
def refusals(client):
    """A refused prompt, a job with one of its two images filtered, and a clean job."""
    return {
        "prompt": run(client, "a forbidden garden [refuse]"),
        "image": run(client, "two moons [filter]", provider="azure-async", n=2),
        "clean": run(client, "a clean garden"),
    }


def entries_of(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="refusal-(\d+)"', page)]


def entry_of(page: str, job_id: int) -> str:
    match = re.search(rf'<li id="refusal-{job_id}".*?\n</li>', page, re.S)
    assert match, f"no ledger entry for job {job_id}"
    return match.group(0)


def test_ledger_lists_both_verdicts_with_the_exact_reasons(client, refusals):
    page = page_of(client, "/refusals")

    assert entries_of(page) == [refusals["image"]["id"], refusals["prompt"]["id"]]
    refused = entry_of(page, refusals["prompt"]["id"])
    assert "Prompt refused" in refused
    assert "a forbidden garden [refuse]" in refused
    assert refusals["prompt"]["error"]["message"] in refused
    assert '<span class="category">sexual</span>' in refused
    assert f'action="/jobs/{refusals["prompt"]["id"]}/retry"' in refused
    assert f'href="/?reuse={refusals["prompt"]["id"]}"' in refused
    filtered = entry_of(page, refusals["image"]["id"])
    assert "1 of 2 images filtered" in filtered
    assert "Generated image was filtered as a result of our safety system." in filtered
    assert "gpt-image-1" in refused and "dall-e-2" in filtered


def test_ledger_filters_by_verdict(client, refusals):
    prompt_page = page_of(client, "/refusals?verdict=prompt")
    image_page = page_of(client, "/refusals?verdict=image")

    assert entries_of(prompt_page) == [refusals["prompt"]["id"]]
    assert entries_of(image_page) == [refusals["image"]["id"]]
    assert '<option value="image" selected>' in image_page


def test_ledger_search_finds_refused_prompts(client, refusals):
    assert entries_of(page_of(client, "/refusals?q=forbidden")) == [refusals["prompt"]["id"]]
    assert entries_of(page_of(client, "/refusals?q=moons")) == [refusals["image"]["id"]]
    assert entries_of(page_of(client, "/refusals?q=clean")) == []


def test_ledger_says_when_every_image_was_filtered(client):
    job = run(client, "one moon [filter]", provider="azure-async", n=1)

    entry = entry_of(page_of(client, "/refusals"), job["id"])

    assert "1 of 1 image filtered" in entry
    assert str(escape(job["error"]["message"])) in entry  # the job failed too, in its own words


def test_ledger_pages_with_cursors(client):
    ids = [run(client, f"no {n} [refuse]")["id"] for n in range(3)]

    first = page_of(client, "/refusals?limit=2")
    older_url = re.search(r'<a rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    second = page_of(client, older_url)

    assert entries_of(first) == [ids[2], ids[1]]
    assert entries_of(second) == [ids[0]]


def test_unknown_verdict_is_refused(client):
    with client.get("/refusals?verdict=maybe") as response:
        assert response.status_code == 400
