"""Cost limits: daily image quotas and monthly budgets refuse a job before it is stored, the
global concurrency cap holds new jobs back, and a rate-limited provider is paused for every
worker. Everything runs against the emulator over loopback; the worker is stepped by hand where
the order of events matters."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import requests
from flask import has_request_context
from sqlalchemy import event, func, select

from app import jobs, limits
from app.auth.accounts import create_user, find_user
from app.auth.tokens import create_token
from app.models import Job, JobStatus, ProviderPause, User, db, utcnow, write_transaction
from app.providers.generations import GENERATE_ATTEMPTS
from app.validation import JobRequest
from tests.helpers import csrf_token, run_until_final, stepper_of, wait_for_job

DEPLOYMENTS = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3"}
GPT_IMAGE = "azure:gpt-image-1"
DALL_E_3 = "azure:dall-e-3"


def job_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(Job.id)))


def post_kite(client, **body):
    return client.post("/api/jobs", json={"prompt": "a red kite", "provider": DALL_E_3, **body})


# --- daily image quota --------------------------------------------------------------------------


def test_job_over_the_daily_quota_is_refused_with_429_and_not_stored(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=3, **DEPLOYMENTS)
    client = app.test_client()
    assert post_kite(client, provider=GPT_IMAGE, n=2).status_code == 202
    assert post_kite(client).status_code == 202

    response = post_kite(client)

    assert response.status_code == 429
    assert response.get_json()["error"] == {
        "code": "daily_quota_reached",
        "message": "You have requested 3 of your 3 images today; the limit resets at 00:00 UTC.",
    }
    assert 0 < int(response.headers["Retry-After"]) <= 86400
    assert job_count(app) == 2


def test_job_asking_for_more_than_is_left_says_how_many_it_asks_for(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=3, **DEPLOYMENTS)
    client = app.test_client()
    post_kite(client, provider=GPT_IMAGE, n=2)

    response = post_kite(client, provider=GPT_IMAGE, n=2)

    assert response.status_code == 429
    assert (
        "requested 2 of your 3 images today; this job asks for 2 more"
        in (response.get_json()["error"]["message"])
    )


def test_jobs_canceled_before_they_were_sent_do_not_count(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=2, **DEPLOYMENTS)
    client = app.test_client()
    first = post_kite(client, provider=GPT_IMAGE, n=2).get_json()
    client.post(f"/api/jobs/{first['id']}/cancel")

    assert post_kite(client, provider=GPT_IMAGE, n=2).status_code == 202


def test_quota_of_zero_means_no_limit(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=0, **DEPLOYMENTS)
    client = app.test_client()

    for _ in range(3):
        assert post_kite(client, provider=GPT_IMAGE, n=10).status_code == 202
    assert "images left today" not in client.get("/").get_data(as_text=True)


def test_form_shows_what_is_left_and_the_refusal(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=1, **DEPLOYMENTS)
    client = app.test_client()
    assert "1 of 1 images left today" in client.get("/").get_data(as_text=True)
    post_kite(client)
    form = {"prompt": "one more", "provider": DALL_E_3, "csrf_token": csrf_token(client)}

    response = client.post("/partials/jobs", data=form)

    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert "You have requested 1 of your 1 images today" in body
    assert "0 of 1 images left today" in body
    assert job_count(app) == 1


def test_retry_over_the_quota_is_refused(app_factory):
    app = app_factory(ATELIER_DAILY_IMAGE_QUOTA=1, **DEPLOYMENTS)
    client = app.test_client()
    job = post_kite(client).get_json()
    client.post(f"/api/jobs/{job['id']}/cancel")  # canceled unsent: it no longer counts
    post_kite(client)

    response = client.post(f"/api/jobs/{job['id']}/retry")

    assert response.status_code == 429
    assert job_count(app) == 2


# --- monthly budget -----------------------------------------------------------------------------


def test_job_that_would_exceed_the_monthly_budget_is_refused(app_factory):
    app = app_factory(ATELIER_MONTHLY_BUDGET_USD=0.1, **DEPLOYMENTS)
    client = app.test_client()
    assert post_kite(client).status_code == 202  # $0.04
    assert post_kite(client).status_code == 202  # $0.08
    assert "$0.02 of $0.10 left this month" in client.get("/").get_data(as_text=True)

    response = post_kite(client)

    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "monthly_budget_reached"
    assert error["message"].startswith(
        "This job would take your spending this month to $0.12 of your $0.10 budget"
    )
    assert job_count(app) == 2


def test_budget_counts_what_finished_jobs_cost_not_their_estimate(app_factory):
    app = app_factory(ATELIER_MONTHLY_BUDGET_USD=0.05, **DEPLOYMENTS)
    client = app.test_client()
    refused = wait_for_job(client, post_kite(client, prompt="no [refuse]").get_json()["id"])
    assert refused["cost_usd"] == 0.0

    assert post_kite(client).status_code == 202  # the refused job's $0.04 estimate is gone


# --- per-user limits ----------------------------------------------------------------------------


def test_each_account_has_its_own_quota_and_may_have_its_own_limit(app_factory):
    app = app_factory(ATELIER_AUTH="on", ATELIER_DAILY_IMAGE_QUOTA=2, **DEPLOYMENTS)
    with app.app_context():
        alice = create_user("alice", "correct horse battery")
        create_user("bob", "correct horse battery")
        with write_transaction() as session:
            session.get(User, alice.id).daily_image_quota = 1
        tokens = {name: create_token(find_user(name).id, "tests")[1] for name in ("alice", "bob")}
    client = app.test_client()

    def as_user(name):
        return client.post(
            "/api/jobs",
            json={"prompt": f"{name}'s kite", "provider": DALL_E_3},
            headers={"Authorization": f"Bearer {tokens[name]}"},
        )

    assert as_user("alice").status_code == 202
    refused = as_user("alice")
    assert refused.status_code == 429
    assert "1 of your 1 images today" in refused.get_json()["error"]["message"]
    assert [as_user("bob").status_code, as_user("bob").status_code] == [202, 202]
    assert as_user("bob").status_code == 429


def test_a_job_created_outside_a_request_belongs_to_the_owner_it_is_given(app_factory):
    """The CLI and the worker have no signed-in user: the owner they pass is recorded, and the
    job counts against that owner's quota, not the ownerless bucket's."""
    app = app_factory(ATELIER_AUTH="on", ATELIER_DAILY_IMAGE_QUOTA=1, **DEPLOYMENTS)
    with app.app_context():
        assert not has_request_context()
        alice = create_user("alice", "correct horse battery")
        request = JobRequest(prompt="a kite from the shell", provider=DALL_E_3, size="1024x1024")

        job, created = jobs.create_job(request, owner_id=alice.id)
        ownerless, _ = jobs.create_job(
            dataclasses.replace(request, prompt="nobody's kite"), owner_id=None
        )

        assert created and db.session.get(Job, job.id).owner_id == alice.id
        assert db.session.get(Job, ownerless.id).owner_id is None
        assert limits.limits_for(alice).images_today == 1
        with pytest.raises(jobs.LimitReached):
            jobs.create_job(dataclasses.replace(request, prompt="one too many"), owner_id=alice.id)


# --- concurrency cap ----------------------------------------------------------------------------


@pytest.fixture
def stepped_app(app_factory):
    """Build an idle app with the deployments and these settings; return it and its stepper
    (the test calls run_once() itself)."""

    def build(**settings):
        app = app_factory(**DEPLOYMENTS, **settings)
        return app, stepper_of(app)

    return build


def queue(prompt: str, provider: str = DALL_E_3) -> int:
    job, _ = jobs.create_job(
        JobRequest(prompt=prompt, provider=provider, size="1024x1024"), owner_id=None
    )
    return job.id


def test_at_the_cap_no_new_job_starts_but_running_ones_go_on(stepped_app):
    app, _ = stepped_app(ATELIER_MAX_CONCURRENT_JOBS=1)
    with app.app_context():
        first, second = queue("first"), queue("second")

        claim = jobs.claim_due_job()
        assert claim.job_id == first
        jobs.release_until(claim, utcnow())  # waiting on the provider, due again now

        assert jobs.claim_due_job().job_id == first  # the running job is advanced
        assert jobs.claim_due_job() is None  # the queued one waits
        assert jobs.get_job(second).status == JobStatus.QUEUED
        card = app.test_client().get(f"/partials/jobs/{second}").get_data(as_text=True)
        assert "Waiting: 1 job is already running" in card


def test_the_home_page_finds_why_many_jobs_wait_in_two_queries(stepped_app):
    app, _ = stepped_app(ATELIER_MAX_CONCURRENT_JOBS=1)
    with app.app_context():
        first = queue("running")
        waiting = [queue(f"waiting {number}") for number in range(6)]
        jobs.claim_due_job()  # the first job runs; the cap holds the others back
        limits.pause_provider(GPT_IMAGE, 60, "rate limited in a test")
        paused = queue("paused", GPT_IMAGE)
        listed = [jobs.get_job(job_id) for job_id in (first, *waiting, paused)]
        statements: list[str] = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            reasons = limits.wait_reasons(listed)
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)

    assert len(statements) == 2, statements  # the pauses, and the running count
    assert first not in reasons
    assert [reasons[job_id] for job_id in waiting] == ["Waiting: 1 job is already running"] * 6
    assert reasons[paused].startswith("Paused: Azure is rate limiting; trying again at")
    with app.app_context():
        assert limits.wait_reasons([jobs.get_job(first)]) == {}  # nothing queued: no query


def test_queued_job_past_its_deadline_fails_even_at_the_cap(stepped_app):
    app, worker = stepped_app(ATELIER_MAX_CONCURRENT_JOBS=1, ATELIER_JOB_DEADLINE_SECONDS=1)
    with app.app_context():
        queue("holds the only slot")
        late = queue("waits too long")
        jobs.claim_due_job()
        with write_transaction() as session:
            session.get(Job, late).deadline_at = utcnow()

        assert worker.run_once() is True

        assert jobs.get_job(late).error_code == "deadline"


def test_cap_of_one_runs_jobs_one_at_a_time(app_factory, slow_emulator):
    app = app_factory(
        start_worker=True, ATELIER_MAX_CONCURRENT_JOBS=1, ATELIER_WORKER_THREADS=3, **DEPLOYMENTS
    )
    client = app.test_client()
    ids = [post_kite(client, prompt=f"kite {number}").get_json()["id"] for number in range(3)]

    done = [wait_for_job(client, job_id, timeout=30) for job_id in ids]

    assert [job["status"] for job in done] == ["succeeded"] * 3
    # Three threads, three due jobs, a slow provider: without the cap the runs would overlap.
    # Each job's run (started_at..finished_at) must end before the next one starts.
    runs = sorted((job["started_at"], job["finished_at"]) for job in done)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(runs)), runs


# --- 429 storms ---------------------------------------------------------------------------------


def test_rate_limited_submission_pauses_the_provider_for_every_worker(stepped_app, emulator):
    app, worker = stepped_app()
    with app.app_context():
        storm = [queue(f"busy {number} [ratelimit-always]", GPT_IMAGE) for number in range(3)]

        assert worker.run_once() is True  # the first job's submission is throttled

        pauses = db.session.scalars(select(ProviderPause)).all()
        assert [pause.provider for pause in pauses] == [GPT_IMAGE]
        assert "429" in pauses[0].reason
        assert jobs.get_job(storm[0]).status == JobStatus.QUEUED
        assert jobs.get_job(storm[0]).next_attempt_at >= pauses[0].paused_until
        # Keep the pause on while the test looks (the emulator asked for only 100 ms).
        paused_until = limits.pause_provider(GPT_IMAGE, 60, pauses[0].reason)
        other = queue("another deployment is not paused")

        while worker.run_once():
            pass

        assert [jobs.get_job(job_id).submit_count for job_id in storm] == [1, 0, 0]
        assert jobs.get_job(other).status == JobStatus.SUCCEEDED
        card = app.test_client().get(f"/partials/jobs/{storm[1]}").get_data(as_text=True)
        assert (
            f"Paused: Azure is rate limiting; trying again at {paused_until:%H:%M:%S} UTC" in card
        )
    # Without the pause every job would have been sent, each with its own retries.
    assert requests_to(emulator, "deployments/gpt-image-1/") == GENERATE_ATTEMPTS


def requests_to(emulator, fragment: str) -> int:
    log = requests.get(emulator.url + "_emulator/requests", timeout=5).json()["requests"]
    return sum(1 for entry in log if fragment in entry["path"])


def test_polls_of_submitted_jobs_go_on_while_their_provider_is_paused(app_factory):
    app = app_factory()  # the asynchronous DALL-E 2 API
    worker = stepper_of(app)
    with app.app_context():
        request = JobRequest(prompt="a slow lighthouse", provider="azure-async", size="256x256")
        job, _ = jobs.create_job(request, owner_id=None)
        assert worker.run_once() is True  # submitted; polling from now on
        limits.pause_provider("azure-async", 60, "rate limited in a test")
        waiting, _ = jobs.create_job(
            dataclasses.replace(request, prompt="sent after the pause"), owner_id=None
        )

        assert run_until_final(app, job.id, worker=worker) == JobStatus.SUCCEEDED
        db.session.expire_all()
        assert jobs.get_job(waiting.id).submit_count == 0


def test_storm_on_every_worker_records_one_pause_and_gives_up_readably(app_factory, emulator):
    app = app_factory(start_worker=True, ATELIER_WORKER_THREADS=3, **DEPLOYMENTS)
    client = app.test_client()
    ids = [
        post_kite(client, prompt=f"storm {number} [ratelimit-always]", provider=GPT_IMAGE)
        for number in range(3)
    ]

    finished = [wait_for_job(client, r.get_json()["id"], timeout=60) for r in ids]

    assert [job["error"]["code"] for job in finished] == ["rate_limited"] * 3
    assert all("Gave up after" in job["error"]["message"] for job in finished)
    assert all(job["cost_usd"] == 0.0 for job in finished)
    with app.app_context():
        assert db.session.scalars(select(ProviderPause.provider)).all() == [GPT_IMAGE]
