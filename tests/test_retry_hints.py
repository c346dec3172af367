"""Retry hints never hold a worker thread: `send()` sleeps at most MAX_RETRY_AFTER on one hint and
hands a longer wait back; the worker requeues the job for that long when it fits in the job's
deadline and fails it at once when it does not; `x-should-retry` overrides the status rules.

`send()` is driven against a tiny scripted HTTP server on loopback (the emulator cannot be made
to ask for a day's wait or send `x-should-retry`), with an injected `sleep` that records what it
was asked to wait, so nothing here really sleeps. The worker's side is checked in the app's
database, as the other worker tests do; the emulator covers the short hints it does send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from sqlalchemy import select

from app import jobs
from app.models import Job, JobPhase, JobStatus, ProviderPause, db, utcnow, write_transaction
from app.providers import build_clients
from app.providers.auth import AzureCredential
from app.providers.azure_async import AzureAsyncProvider
from app.providers.azure_deployment import AzureDeploymentProvider
from app.providers.base import MAX_RETRY_AFTER, ProviderError, describe_error, send
from app.validation import JobRequest
from app.worker import MAX_PAUSE_SECONDS, Worker
from tests.helpers import serving

RATE_LIMITED = {"error": {"code": "429", "message": "Requests have exceeded the rate limit."}}
UNAVAILABLE = {"error": {"code": "503", "message": "The service is busy."}}
BAD_REQUEST = {"error": {"code": "invalidPayload", "message": "Try again, it was us."}}
ATTEMPTS = 3


class ScriptedServer(ThreadingHTTPServer):
    """Answers each request with the next scripted (status, headers, body); the last repeats.
    `{url}` in a header value becomes the server's own base URL."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        self.answers: list[tuple[int, dict[str, str], Any]] = [(200, {}, {})]
        self.seen: list[tuple[str, str]] = []

    def script(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = list(answers)


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.seen.append((self.command, self.path))
        answers = self.server.answers
        status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value.format(url=self.server.url))
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    with serving(scripted):
        yield scripted


class Sleeps(list):
    """An injected sleep: records each requested wait instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def call(server: ScriptedServer, sleeps: Sleeps, method: str = "POST") -> requests.Response:
    with requests.Session() as session:
        return send(
            session,
            method,
            server.url + "openai/images/generations",
            read_timeout=5,
            attempts=ATTEMPTS,
            describe=lambda response: describe_error(
                response, "Azure", credentials_hint="the key", not_found_hint="the route"
            ),
            idempotent=method != "POST",
            sleep=sleeps,
        )


def failed_call(server: ScriptedServer, sleeps: Sleeps, method: str = "POST") -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call(server, sleeps, method)
    return caught.value


# --- send(): how long a thread may wait ----------------------------------------------------------


def test_a_day_long_retry_after_is_handed_back_not_slept(server):
    server.script((429, {"retry-after": "86400"}, RATE_LIMITED))
    sleeps = Sleeps()

    error = failed_call(server, sleeps)

    assert (error.code, error.retryable, error.retry_after) == ("rate_limited", True, 86400.0)
    assert sleeps == []
    assert len(server.seen) == 1


def test_a_short_retry_after_is_slept_exactly_then_the_call_goes_on(server):
    server.script(
        (429, {"retry-after-ms": "1500", "retry-after": "2"}, RATE_LIMITED), (200, {}, {})
    )
    sleeps = Sleeps()

    assert call(server, sleeps).status_code == 200
    assert sleeps == [1.5]


def test_a_wait_just_over_the_cap_is_not_slept_either(server):
    server.script((503, {"retry-after": str(int(MAX_RETRY_AFTER) + 1)}, UNAVAILABLE))
    sleeps = Sleeps()

    error = failed_call(server, sleeps, "GET")

    assert error.retry_after == MAX_RETRY_AFTER + 1
    assert sleeps == []


def test_no_in_call_sleep_exceeds_the_cap_whatever_the_server_says(server):
    server.script(
        (503, {}, UNAVAILABLE),
        (429, {"retry-after": str(MAX_RETRY_AFTER)}, RATE_LIMITED),
        (500, {"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}, UNAVAILABLE),
    )
    sleeps = Sleeps()

    error = failed_call(server, sleeps, "GET")

    assert error.retry_after > 86400  # the date, handed back to the caller
    assert len(sleeps) == 2 and max(sleeps) <= MAX_RETRY_AFTER <= 5
    assert len(server.seen) == 3


# --- send(): x-should-retry ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_should_retry_false_is_final_even_for_a_retryable_status(server, status):
    server.script((status, {"x-should-retry": "false", "retry-after": "1"}, RATE_LIMITED))
    sleeps = Sleeps()

    error = failed_call(server, sleeps, "GET")

    assert error.retryable is False
    assert sleeps == []
    assert len(server.seen) == 1


def test_should_retry_true_retries_a_status_that_would_not_be(server):
    server.script(
        (400, {"X-Should-Retry": "True", "retry-after-ms": "10"}, BAD_REQUEST), (200, {}, {})
    )
    sleeps = Sleeps()

    assert call(server, sleeps).status_code == 200
    assert sleeps == [0.01]
    assert len(server.seen) == 2


def test_should_retry_true_makes_a_lasting_client_error_retryable_for_the_worker(server):
    server.script((400, {"x-should-retry": "true", "retry-after-ms": "10"}, BAD_REQUEST))

    error = failed_call(server, Sleeps())

    assert (error.code, error.retryable) == ("invalidPayload", True)
    assert len(server.seen) == ATTEMPTS


def test_without_the_header_a_client_error_is_still_not_retried(server):
    server.script((400, {}, BAD_REQUEST))

    error = failed_call(server, Sleeps())

    assert error.retryable is False
    assert len(server.seen) == 1


# --- the worker: requeue within the deadline, or fail now ----------------------------------------

GPT_IMAGE = "azure:gpt-image-1"


def worker_for(app: Any, server: ScriptedServer) -> Worker:
    """The app's worker, its gpt-image-1 and async clients pointed at the scripted server."""
    targets = {target.id: target for target in app.config["ATELIER_TARGETS"]}
    clients = build_clients(app.config)
    credential = AzureCredential(api_key="scripted-key")
    if GPT_IMAGE in targets:
        clients[GPT_IMAGE] = AzureDeploymentProvider(
            server.url,
            "gpt-image-1",
            targets[GPT_IMAGE].model,
            credential,
            app.config["AZURE_OPENAI_DEPLOYMENT_API_VERSION"],
        )
    if "azure-async" in targets:
        clients["azure-async"] = AzureAsyncProvider(
            server.url, credential, app.config["AZURE_OPENAI_API_VERSION"]
        )
    return Worker(app, clients, threads=0)


@pytest.fixture
def sync_app(app_factory):
    return app_factory(AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1")


def queue(provider: str = GPT_IMAGE, size: str = "1024x1024") -> int:
    job, _ = jobs.create_job(
        JobRequest(prompt="a busy day", provider=provider, size=size), owner_id=None
    )
    return job.id


def pauses() -> list[ProviderPause]:
    return list(db.session.scalars(select(ProviderPause)))


def test_a_wait_beyond_the_deadline_fails_the_job_at_once_and_says_so(sync_app, server):
    server.script((429, {"retry-after": "86400"}, RATE_LIMITED))
    worker = worker_for(sync_app, server)
    with sync_app.app_context():
        job_id = queue()

        started = time.monotonic()
        assert worker.run_once() is True
        took = time.monotonic() - started

        job = jobs.get_job(job_id)
        assert (job.status, job.error_code) == (JobStatus.FAILED, "rate_limited")
        assert "Azure asks to wait 86400 s before retrying, longer than this job's remaining" in (
            job.error_message
        )
        assert job.error_message.endswith("s (ATELIER_JOB_DEADLINE_SECONDS).")
        assert job.cost_usd == 0.0  # refused before anything was generated
        # Other jobs wait too, but no longer than the pause's cap.
        (pause,) = pauses()
        assert pause.paused_until <= utcnow() + timedelta(seconds=MAX_PAUSE_SECONDS)
    assert took < 2.0
    assert len(server.seen) == 1


def test_a_wait_within_the_deadline_requeues_the_job_for_that_long(sync_app, server):
    server.script((429, {"retry-after": "120"}, RATE_LIMITED))
    worker = worker_for(sync_app, server)
    with sync_app.app_context():
        job_id = queue()

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.phase, job.lease_token) == (JobStatus.QUEUED, None, None)
        expected = utcnow() + timedelta(seconds=120)
        assert abs((job.next_attempt_at - expected).total_seconds()) < 5
        assert job.next_attempt_at < job.deadline_at
        (pause,) = pauses()
        assert pause.paused_until <= utcnow() + timedelta(seconds=MAX_PAUSE_SECONDS)
    assert len(server.seen) == 1


def test_should_retry_false_fails_the_job_without_a_requeue_or_a_pause(sync_app, server):
    server.script((429, {"x-should-retry": "false", "retry-after": "1"}, RATE_LIMITED))
    worker = worker_for(sync_app, server)
    with sync_app.app_context():
        job_id = queue()

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.error_code, job.submit_count) == (
            JobStatus.FAILED,
            "rate_limited",
            1,
        )
        assert "Gave up" not in job.error_message
        assert pauses() == []
    assert len(server.seen) == 1


def test_should_retry_true_requeues_a_refused_submission(sync_app, server):
    server.script((400, {"x-should-retry": "true", "retry-after": "30"}, BAD_REQUEST))
    worker = worker_for(sync_app, server)
    with sync_app.app_context():
        job_id = queue()

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert job.status == JobStatus.QUEUED
        assert job.next_attempt_at > utcnow() + timedelta(seconds=25)
        assert pauses() == []  # not a rate limit
    assert len(server.seen) == 1  # 30 s is over the in-call cap: handed to the worker at once


# --- the worker: polls of a submitted job --------------------------------------------------------


def submitted_job(app: Any, server: ScriptedServer, poll_answer: tuple) -> tuple[Worker, int]:
    server.script(
        (202, {"operation-location": "{url}openai/operations/images/op-1"}, {"id": "op-1"}),
        poll_answer,
    )
    worker = worker_for(app, server)
    job_id = queue("azure-async", "256x256")
    assert worker.run_once() is True  # submitted
    with write_transaction() as session:
        session.get(Job, job_id).next_attempt_at = utcnow()
    return worker, job_id


def test_a_poll_told_to_wait_releases_the_job_for_that_long(idle_app, server):
    with idle_app.app_context():
        worker, job_id = submitted_job(idle_app, server, (429, {"retry-after": "90"}, RATE_LIMITED))

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.phase, job.lease_token) == (
            JobStatus.RUNNING,
            JobPhase.POLLING,
            None,
        )
        expected = utcnow() + timedelta(seconds=90)
        assert abs((job.next_attempt_at - expected).total_seconds()) < 5
    assert [method for method, _ in server.seen] == ["POST", "GET"]


def test_a_poll_told_to_wait_past_the_deadline_fails_as_a_deadline(idle_app, server):
    with idle_app.app_context():
        worker, job_id = submitted_job(
            idle_app, server, (503, {"retry-after": "86400"}, UNAVAILABLE)
        )

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.error_code) == (JobStatus.FAILED, "deadline")
        assert "Azure asks to wait 86400 s before polling" in job.error_message
    assert [method for method, _ in server.seen] == ["POST", "GET"]


# --- the emulator's own short hints --------------------------------------------------------------


def test_an_always_rate_limited_emulator_never_holds_the_worker_long(app_factory, emulator):
    app = app_factory(AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1")
    worker = Worker(app, build_clients(app.config), threads=0)
    with app.app_context():
        job, _ = jobs.create_job(
            JobRequest(prompt="busy [ratelimit-always]", provider=GPT_IMAGE, size="1024x1024"),
            owner_id=None,
        )

        started = time.monotonic()
        assert worker.run_once() is True
        took = time.monotonic() - started

        requeued = jobs.get_job(job.id)
        assert requeued.status == JobStatus.QUEUED
        assert utcnow() < requeued.next_attempt_at <= requeued.deadline_at
        (pause,) = pauses()
        assert pause.paused_until <= utcnow() + timedelta(seconds=MAX_PAUSE_SECONDS)
    # Three attempts, 100 ms apart (the emulator's retry-after-ms), plus its answers.
    assert took < 2.0
