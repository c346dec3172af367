"""HTML pages and htmx partials: forms without JavaScript, polling markup, image files.

The gallery's own tests are in test_gallery.py."""

from __future__ import annotations

import re

import pytest

from app.models import utcnow
from tests.helpers import csrf_token, emulator_counts, make_app, wait_for_job


def create(client, **fields):
    data = {"csrf_token": csrf_token(client), "prompt": "a paper boat", "size": "256x256", "n": "1"}
    data.update(fields)
    return client.post("/jobs", data=data)


def job_id_of(response) -> int:
    """The id of the job a form POST created, from its 303 Location."""
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_home_page_has_the_prompt_form(idle_app):
    page = idle_app.test_client().get("/").get_data(as_text=True)

    assert '<form id="prompt-form"' in page
    assert 'name="prompt"' in page
    assert 'name="size"' in page
    assert 'name="n"' in page
    assert 'name="csrf_token"' in page
    assert 'name="idempotency_key"' in page
    assert "htmx-2.0.11.min.js" in page


def test_emulator_mode_is_said_plainly(tmp_path):
    app = make_app(tmp_path, ATELIER_WORKER_THREADS=0)

    page = app.test_client().get("/").get_data(as_text=True)

    assert "built-in Azure emulator" in page


def test_azure_mode_shows_no_emulator_banner(idle_app):
    assert "built-in Azure emulator" not in idle_app.test_client().get("/").get_data(as_text=True)


def test_form_post_without_javascript_redirects_to_the_job(client):
    response = create(client)

    assert response.status_code == 303
    assert re.fullmatch(r"/jobs/\d+", response.headers["Location"])
    job_page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "a paper boat" in job_page


def test_job_page_refreshes_itself_without_javascript_until_final(client):
    job_url = create(client, prompt="slow [hang]").headers["Location"]

    page = client.get(job_url).get_data(as_text=True)

    assert '<noscript><meta http-equiv="refresh"' in page


def test_form_post_without_csrf_token_is_refused(idle_app):
    client = idle_app.test_client()

    response = client.post("/jobs", data={"prompt": "no token"})

    assert response.status_code == 400
    assert "Reload the page" in response.get_data(as_text=True)
    assert client.get("/api/jobs").get_json()["items"] == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "  "}, "Enter a prompt."),
        ({"prompt": "x" * 1001}, "the limit for dall-e-2 is 1000"),
        ({"n": "0"}, "between 1 and 10"),
        ({"n": "three"}, "whole number"),
        ({"size": "2048x2048"}, "The size for dall-e-2 must be one of"),
    ],
)
def test_invalid_form_shows_the_error_and_creates_nothing(idle_app, fields, message):
    client = idle_app.test_client()

    response = create(client, **fields)

    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert client.get("/api/jobs").get_json()["items"] == []


def test_double_submitted_form_creates_one_job(idle_app):
    client = idle_app.test_client()
    key = "form-render-1"

    first = create(client, idempotency_key=key)
    second = create(client, idempotency_key=key)

    assert first.headers["Location"] == second.headers["Location"]
    assert len(client.get("/api/jobs").get_json()["items"]) == 1


def test_htmx_submit_returns_the_new_card_and_a_form_keeping_the_prompt(idle_app):
    client = idle_app.test_client()
    token = csrf_token(client)

    response = client.post(
        "/partials/jobs",
        data={
            "csrf_token": token,
            "prompt": "a comet",
            "size": "512x512",
            "n": "2",
            "idempotency_key": "a" * 32,
        },
        headers={"HX-Request": "true"},
    )

    body = response.get_data(as_text=True)
    assert response.status_code == 201
    assert 'class="job-card status-queued"' in body
    assert 'hx-swap-oob="true"' in body
    form = body[body.index('<form id="prompt-form"') :]
    # The next try is an edit away: the prompt and the model's fields are kept...
    assert re.search(r">\s*a comet</textarea>", form), form
    assert re.search(r'<option[^>]*value="512x512"[^>]*selected', form), form
    assert re.search(r'name="n"[^>]*value="2"', form) or re.search(
        r'<option[^>]*value="2"[^>]*selected', form
    ), form
    # ...but the form has a new idempotency key, so sending it again makes a new job.
    key = re.search(r'name="idempotency_key"[^>]*value="([0-9a-f]+)"', form)
    assert key is not None and key.group(1) != "a" * 32


def test_htmx_submit_with_errors_retargets_the_form(idle_app):
    client = idle_app.test_client()

    response = client.post(
        "/partials/jobs",
        data={"csrf_token": csrf_token(client), "prompt": "", "n": "1"},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 422
    assert response.headers["HX-Retarget"] == "#prompt-form"
    assert response.headers["HX-Reswap"] == "outerHTML"
    assert "Enter a prompt." in response.get_data(as_text=True)


def test_active_job_card_polls_and_final_card_does_not(client):
    job_id = job_id_of(create(client))
    active = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)

    wait_for_job(client, job_id)
    final = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)

    assert f'hx-get="/partials/jobs/{job_id}"' in active
    # No history yet: the slow schedule (and the page's watch, app.views.polling).
    assert 'hx-trigger="load delay:1s, atelier-changed"' in active
    assert "hx-trigger" not in final.split("<form")[0]
    assert "hx-get" not in final
    assert "/files/thumbs/" in final


def test_a_card_polls_four_times_a_second_around_the_expected_finish(idle_app):
    """The schedule in the markup: the slow steps by age, and 250 ms polls in the window
    around the median time recent jobs of the same provider and model took."""
    from datetime import timedelta

    from app.models import Job, JobStatus, db

    client = idle_app.test_client()
    history = [job_id_of(create(client, prompt=f"try {n}")) for n in range(3)]
    with idle_app.app_context():
        for job_id in history:  # three earlier jobs that took 2 s from creation to finish
            job = db.session.get(Job, job_id)
            job.status = JobStatus.SUCCEEDED
            job.finished_at = job.created_at + timedelta(seconds=2)
        db.session.commit()
    job_id = job_id_of(create(client, prompt="the next try"))  # stays queued: no worker

    def trigger_at(age: float) -> str:
        with idle_app.app_context():
            job = db.session.get(Job, job_id)
            job.created_at = utcnow() - timedelta(seconds=age)
            db.session.commit()
        card = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)
        found = re.search(r'hx-trigger="load delay:([^",]+), atelier-changed"', card)
        assert found, card
        return found.group(1)

    # Expected at 2 s: the window is 1.5 s to 3 s of age.
    assert trigger_at(0.2) == "1s"  # the slow schedule's first look comes first
    assert trigger_at(0.9) == "500ms"  # then a look about when the window opens
    assert trigger_at(1.6) == "250ms"
    assert trigger_at(2.9) == "250ms"
    assert trigger_at(10) == "5s"  # later than expected: back to the slow schedule
    assert trigger_at(120) == "8s"
    assert trigger_at(600) == "10s"


def test_without_history_a_card_polls_on_the_slow_schedule():
    from app.views.polling import delay_for

    assert [delay_for(age) for age in (0, 0.9, 1, 59, 60, 299, 300, 3600)] == [
        1000, 1000, 5000, 5000, 8000, 8000, 10_000, 10_000,
    ]  # fmt: skip
    # With an expected finish at 1.2 s: look about when the window opens (0.7 s), then 250 ms.
    assert delay_for(0.0, 1.2) == 500  # rounded down to 250 ms steps
    assert delay_for(0.5, 1.2) == 250  # 0.2 s to go: never faster than the fast polls
    assert delay_for(0.7, 1.2) == delay_for(2.1, 1.2) == 250
    assert delay_for(2.2, 1.2) == 5000


def test_refused_prompt_card_says_which_prompt_and_why(client):
    job_id = job_id_of(create(client, prompt="a forbidden thing [refuse]"))
    wait_for_job(client, job_id)

    card = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)

    assert "a forbidden thing [refuse]" in card
    assert "Refused by the safety system" in card
    assert "safety system" in card
    assert 'role="alert"' in card
    assert ">Retry</button>" in card


def test_cancel_from_the_card_without_javascript(idle_app):
    client = idle_app.test_client()
    job_url = create(client).headers["Location"]

    response = client.post(f"{job_url}/cancel", data={"csrf_token": csrf_token(client)})

    assert response.status_code == 303
    assert "Canceled" in client.get(job_url).get_data(as_text=True)


def test_cancel_through_htmx_returns_the_final_card(idle_app):
    client = idle_app.test_client()
    job_id = create(client).headers["Location"].rsplit("/", 1)[1]

    response = client.post(
        f"/partials/jobs/{job_id}/cancel", data={"csrf_token": csrf_token(client)}
    )

    assert response.status_code == 200
    assert "badge-canceled" in response.get_data(as_text=True)
    assert "hx-trigger" not in response.get_data(as_text=True)


def test_retry_and_delete_from_pages(client, emulator):
    job_url = create(client, prompt="oops [refuse]").headers["Location"]
    wait_for_job(client, int(job_url.rsplit("/", 1)[1]))
    token = csrf_token(client)

    retried = client.post(f"{job_url}/retry", data={"csrf_token": token})
    deleted = client.post(f"{job_url}/delete", data={"csrf_token": token})

    assert retried.status_code == 303 and retried.headers["Location"] != job_url
    assert deleted.status_code == 303
    assert client.get(job_url).status_code == 404


def test_image_page_shows_the_image_prompt_and_details(client):
    job = wait_for_job(client, job_id_of(create(client, prompt="a quiet harbour")))
    image = job["images"][0]

    page = client.get(f"/images/{image['id']}").get_data(as_text=True)

    assert f"/files/images/{image['id']}" in page
    assert "a quiet harbour" in page
    assert image["sha256"] in page
    assert f"/jobs/{job['id']}" in page


def test_missing_pages_are_404(idle_app):
    client = idle_app.test_client()

    for url in ("/jobs/999", "/images/999", "/partials/jobs/999", "/nowhere"):
        assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "/files/images/../../etc/passwd",
        "/files/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/files/images/%252e%252e%252fsecret_key",
        "/files/images/1%2F..%2F..%2Fsecret_key",
        "/files/images/-1",
        "/files/images/1.png",
        "/files/thumbs/..%5c..%5csecret_key",
        "/static/../instance/secret_key",
        "/static/%2e%2e/app/config.py",
    ],
)
def test_file_routes_refuse_path_tricks(client, url):
    create(client)  # an image row exists, so only the trick itself can be refused

    with client.get(url) as response:
        assert response.status_code == 404
        assert b"secret" not in response.data


def test_filtered_slot_has_no_file(client):
    job = wait_for_job(client, job_id_of(create(client, prompt="x [filter]", n="2")))
    filtered = job["images"][1]

    assert filtered["status"] == "filtered"
    assert client.get(f"/files/images/{filtered['id']}").status_code == 404
    assert client.get(f"/images/{filtered['id']}").status_code == 404


def test_image_file_is_served_with_etag_and_revalidates(client):
    job = wait_for_job(client, job_id_of(create(client)))
    url = f"/files/images/{job['images'][0]['id']}"

    with client.get(url) as first:
        etag = first.headers["ETag"]
        assert first.headers["X-Content-Type-Options"] == "nosniff"
    with client.get(url, headers={"If-None-Match": etag}) as second:
        assert second.status_code == 304


def test_emulator_saw_one_submit_per_form_post(client, emulator):
    job_id = job_id_of(create(client))
    wait_for_job(client, job_id)

    assert emulator_counts(emulator)["submit"] == 1
