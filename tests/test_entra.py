"""Microsoft Entra ID: Atelier caches tokens and renews them before they expire, one renewal at
a time; a token that cannot be had, or a static token Azure refuses, fails or requeues the job
with a message that says what to do.

The token source is a plain fake with azure-identity's `get_token(*scopes)` shape (azure-identity
is optional and not needed here). Everything over HTTP is real: the emulator over loopback, and
for the refused token a small gateway in front of it that answers Azure's 401 (the emulator
itself accepts any bearer token, azure-image-apis.md §1.2).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
import requests
from werkzeug.wrappers import Request, Response

from app import jobs
from app import worker as worker_module
from app.emulator.errors import ACCESS_DENIED_BODY
from app.models import Job, JobStatus, utcnow, write_transaction
from app.providers.auth import (
    COGNITIVE_SERVICES_SCOPE,
    ENTRA_ID,
    STATIC_TOKEN,
    AzureCredential,
)
from app.providers.azure_async import AzureAsyncProvider
from app.providers.base import ProviderError
from app.validation import JobRequest
from app.worker import Worker
from tests.helpers import emulator_counts, generate, run_until_final, serving_wsgi, wait_for_job

try:  # the real type when azure-core happens to be installed, else the same shape
    from azure.core.credentials import AccessToken
except ImportError:

    class AccessToken(NamedTuple):  # type: ignore[no-redef]
        token: str
        expires_on: int


class Clock:
    """A settable time.time()."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeCredential:
    """Hands out numbered tokens valid for `lifetime` seconds, counting the requests."""

    def __init__(
        self,
        clock: Any = time.time,
        lifetime: float = 3600,
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        expired_first: int = 0,
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.delay = delay
        self.error = error
        self.expired_first = expired_first
        self.calls = 0
        self.scopes: list[tuple[str, ...]] = []
        self.release = threading.Event()
        self.release.set()
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        with self._lock:
            self.calls += 1
            number = self.calls
            self.scopes.append(scopes)
        self.release.wait(5)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if number <= self.expired_first:
            return AccessToken(f"token-{number}", int(self.clock() - 10))
        return AccessToken(f"token-{number}", int(self.clock() + self.lifetime))


def bearer(credential: AzureCredential) -> str:
    scheme, _, token = credential.headers()["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def jwt(exp: float) -> str:
    """An unsigned JWT-shaped token with an `exp` claim (Atelier reads it, never verifies)."""

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': int(exp), 'aud': 'cognitive'})}.sig"


# --- caching and renewal -------------------------------------------------------------------------


def test_token_is_fetched_once_and_renewed_five_minutes_before_it_expires():
    clock = Clock()
    fake = FakeCredential(clock, lifetime=3600)
    credential = AzureCredential(token_credential=fake, clock=clock)
    start = clock.now

    for _ in range(1000):  # a request every 10 s for 10,000 s
        token = bearer(credential)
        number = int(token.removeprefix("token-"))
        expires_on = start + (number - 1) * 3300 + 3600
        assert expires_on - clock.now > 290, "a token with under five minutes left was used"
        clock.now += 10

    assert fake.calls == 4  # at 0 s, 3300 s, 6600 s and 9900 s
    assert fake.scopes == [(COGNITIVE_SERVICES_SCOPE,)] * 4


def test_short_lived_tokens_are_renewed_at_half_their_lifetime():
    clock = Clock()
    fake = FakeCredential(clock, lifetime=60)
    credential = AzureCredential(token_credential=fake, clock=clock)

    seen = []
    for _ in range(120):
        seen.append(bearer(credential))
        clock.now += 1

    assert fake.calls == 4  # at 0, 30, 60 and 90 s: never a token with under 30 s left
    assert seen[29] == "token-1" and seen[30] == "token-2"


def test_an_expired_cached_token_is_never_sent():
    clock = Clock()
    fake = FakeCredential(clock, lifetime=600)
    credential = AzureCredential(token_credential=fake, clock=clock)
    assert bearer(credential) == "token-1"

    clock.now += 601  # the process slept (a laptop lid, a paused container)

    assert bearer(credential) == "token-2"


def test_a_token_that_arrives_already_expired_is_fetched_again():
    clock = Clock()
    fake = FakeCredential(clock, expired_first=1)
    credential = AzureCredential(token_credential=fake, clock=clock)

    assert bearer(credential) == "token-2"
    assert bearer(credential) == "token-2"
    assert fake.calls == 2


def test_a_credential_that_only_hands_out_expired_tokens_is_a_readable_error():
    clock = Clock()
    credential = AzureCredential(
        token_credential=FakeCredential(clock, expired_first=99), clock=clock
    )

    with pytest.raises(ProviderError) as caught:
        credential.headers()

    assert caught.value.code == "entra_id_error"
    assert "already expired" in caught.value.message
    assert "clock" in caught.value.message


def test_threads_starting_together_share_one_token_request():
    fake = FakeCredential(delay=0.1)
    credential = AzureCredential(token_credential=fake)
    start = threading.Barrier(16)
    tokens: list[str] = []

    def use() -> None:
        start.wait()
        tokens.append(bearer(credential))

    threads = [threading.Thread(target=use) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert tokens == ["token-1"] * 16
    assert fake.calls == 1


def test_other_threads_keep_the_valid_token_while_one_renews_it():
    clock = Clock()
    fake = FakeCredential(clock, lifetime=3600)
    credential = AzureCredential(token_credential=fake, clock=clock)
    assert bearer(credential) == "token-1"
    clock.now += 3400  # due for renewal, still valid for 200 s
    fake.release.clear()  # the renewal will hang until released
    renewed: list[str] = []
    renewing = threading.Thread(target=lambda: renewed.append(bearer(credential)))
    renewing.start()
    while fake.calls < 2:
        time.sleep(0.005)

    started = time.monotonic()
    others = [bearer(credential) for _ in range(5)]
    waited = time.monotonic() - started
    fake.release.set()
    renewing.join(5)

    assert others == ["token-1"] * 5
    assert waited < 1.0
    assert renewed == ["token-2"]
    assert fake.calls == 2
    assert bearer(credential) == "token-2"


# --- when no token can be had --------------------------------------------------------------------


def test_a_failed_token_request_is_a_readable_retryable_provider_error():
    failing = FakeCredential(error=RuntimeError("login.example unreachable\nTraceback: secret"))
    credential = AzureCredential(token_credential=failing)

    with pytest.raises(ProviderError) as caught:
        credential.headers()

    assert caught.value.code == "entra_id_error"
    assert caught.value.retryable is True
    assert caught.value.message.startswith("Could not get a Microsoft Entra ID token")
    assert "RuntimeError: login.example unreachable" in caught.value.message
    assert "Traceback" not in caught.value.message
    assert "AZURE_OPENAI_API_KEY" in caught.value.message


class CredentialUnavailableError(Exception):
    """Named like azure-identity's: no credential in the chain could even try."""


def test_no_credential_available_is_final_not_retried():
    unavailable = FakeCredential(error=CredentialUnavailableError("not signed in (az login)"))

    with pytest.raises(ProviderError) as caught:
        AzureCredential(token_credential=unavailable).headers()

    assert caught.value.retryable is False
    assert "az login" in caught.value.message


def test_a_failed_renewal_keeps_using_the_still_valid_token():
    clock = Clock()
    fake = FakeCredential(clock, lifetime=3600)
    credential = AzureCredential(token_credential=fake, clock=clock)
    assert bearer(credential) == "token-1"
    clock.now += 3400
    fake.error = RuntimeError("token endpoint throttled")

    assert bearer(credential) == "token-1"
    clock.now += 201  # now it has expired: nothing left to send
    with pytest.raises(ProviderError):
        credential.headers()


def test_neither_repr_nor_kind_shows_a_token():
    static = AzureCredential(ad_token="eyJ.secret.token")
    renewed = AzureCredential(token_credential=FakeCredential())
    bearer(renewed)

    assert (static.kind, renewed.kind) == (STATIC_TOKEN, ENTRA_ID)
    assert "secret" not in repr(static)
    assert "token-1" not in repr(renewed)


# --- what a refused token means ------------------------------------------------------------------


def test_a_refused_static_token_that_has_expired_says_so_and_what_to_do():
    credential = AzureCredential(ad_token=jwt(time.time() - 60))

    message = credential.unauthorized_message(401)

    assert message.startswith("The Entra ID token has expired (at ")
    assert "set a fresh AZURE_OPENAI_AD_TOKEN" in message
    assert "AZURE_OPENAI_API_KEY" in message
    assert "pip install -r requirements-azure.txt" in message


def test_a_refused_static_token_that_is_still_valid_is_not_called_expired():
    credential = AzureCredential(ad_token=jwt(time.time() + 3600))

    message = credential.unauthorized_message(401)

    assert "expired" not in message
    assert "valid until" in message
    assert "another tenant" in message


def test_an_api_key_keeps_the_generic_message():
    assert AzureCredential(api_key="k").unauthorized_message(401) is None
    assert AzureCredential(ad_token="t").unauthorized_message(500) is None


# --- through the worker and the emulator ---------------------------------------------------------


def queue_async(prompt: str) -> int:
    job, _ = jobs.create_job(
        JobRequest(prompt=prompt, provider="azure-async", size="256x256", n=1), owner_id=None
    )
    return job.id


def entra_worker(app: Any, emulator: Any, credential: FakeCredential, threads: int = 0) -> Worker:
    """A worker whose asynchronous-API client signs in with `credential` (build_clients would
    use azure-identity's DefaultAzureCredential, which the tests do not install)."""
    client = AzureAsyncProvider(
        emulator.url,
        AzureCredential(token_credential=credential),
        app.config["AZURE_OPENAI_API_VERSION"],
    )
    return Worker(app, {"azure-async": client}, threads=threads)


def test_one_token_serves_every_request_of_a_job(idle_app, emulator):
    fake = FakeCredential()
    worker = entra_worker(idle_app, emulator, fake)
    with idle_app.app_context():
        job_id = queue_async("signed in with Entra ID")

        assert run_until_final(idle_app, job_id, worker=worker) == JobStatus.SUCCEEDED
    counts = emulator_counts(emulator)
    assert counts["submit"] == 1 and counts["poll"] >= 1
    assert fake.calls == 1


def test_a_failed_token_request_requeues_the_job_then_fails_it_readably(
    idle_app, emulator, monkeypatch
):
    monkeypatch.setattr(worker_module, "MAX_SUBMIT_ATTEMPTS", 2)
    worker = entra_worker(idle_app, emulator, FakeCredential(error=OSError("no route to host")))
    with idle_app.app_context():
        job_id = queue_async("cannot sign in for now")

        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.phase, job.submit_count) == (JobStatus.QUEUED, None, 1)
        assert job.next_attempt_at > utcnow()
        with write_transaction() as session:
            session.get(Job, job_id).next_attempt_at = utcnow()
        assert worker.run_once() is True

        job = jobs.get_job(job_id)
        assert (job.status, job.error_code) == (JobStatus.FAILED, "entra_id_error")
        assert job.error_message.startswith(
            "Could not get a Microsoft Entra ID token for Azure OpenAI (OSError: no route"
        )
        assert job.error_message.endswith("Gave up after 2 attempts.")
    assert emulator_counts(emulator).get("submit", 0) == 0


def test_no_credential_at_all_fails_the_job_and_the_worker_thread_goes_on(idle_app, emulator):
    unavailable = FakeCredential(error=CredentialUnavailableError("EnvironmentCredential: unset"))
    worker = entra_worker(idle_app, emulator, unavailable, threads=1)
    client = idle_app.test_client()
    with idle_app.app_context():
        first, second = queue_async("nobody signed in"), queue_async("still nobody")
    worker.start()
    try:
        # Only this worker's thread may run them (the app's own stepper has the emulator's key).
        finished = [
            wait_for_job(client, job_id, timeout=10, drive=False) for job_id in (first, second)
        ]
        assert worker.alive
    finally:
        worker.stop()

    assert [job["status"] for job in finished] == ["failed", "failed"]
    assert finished[0]["error"]["code"] == "entra_id_error"
    assert (
        "CredentialUnavailableError: EnvironmentCredential: unset"
        in (finished[0]["error"]["message"])
    )


class EntraGateway:
    """Azure's front door as far as Entra ID goes: a refused bearer token gets Azure's 401
    (azure-image-apis.md §1.3), everything else is passed on to the emulator as sent."""

    HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

    def __init__(self, upstream: str, refused: set[str]) -> None:
        self.upstream = upstream
        self.refused = refused
        self.url = ""
        self.refusals = 0

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        if token in self.refused:
            self.refusals += 1
            response = Response(ACCESS_DENIED_BODY, status=401, mimetype="application/json")
            return response(environ, start_response)
        query = request.query_string.decode()
        upstream = requests.request(
            request.method,
            self.upstream + request.path.lstrip("/") + (f"?{query}" if query else ""),
            headers={k: v for k, v in request.headers.items() if k.lower() not in self.HOP_BY_HOP},
            data=request.get_data(),
            timeout=10,
            allow_redirects=False,
        )
        headers = [(k, v) for k, v in upstream.headers.items() if k.lower() not in self.HOP_BY_HOP]
        return Response(upstream.content, upstream.status_code, headers)(environ, start_response)


@pytest.fixture
def gateway(emulator) -> Iterator[EntraGateway]:
    gate = EntraGateway(emulator.url, refused=set())
    with serving_wsgi(gate) as gate.url:
        yield gate


ROUTES = {
    "deployment": ({"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1"}, "1024x1024"),
    "async": ({}, "256x256"),
}


@pytest.mark.parametrize("route", ROUTES)
def test_an_expired_static_token_fails_the_job_with_the_entra_message(
    app_factory, emulator, gateway, route
):
    token = jwt(time.time() - 120)
    gateway.refused.add(token)
    settings, size = ROUTES[route]
    client = app_factory(
        AZURE_OPENAI_ENDPOINT=gateway.url,
        AZURE_OPENAI_API_KEY="",
        AZURE_OPENAI_AD_TOKEN=token,
        **settings,
    ).test_client()

    job = generate(client, prompt="an expired pass", size=size)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "unauthorized"
    message = job["error"]["message"]
    assert message.startswith("The Entra ID token has expired")
    assert "set a fresh AZURE_OPENAI_AD_TOKEN" in message
    assert "pip install -r requirements-azure.txt" in message
    assert token not in message
    assert gateway.refusals == 1  # not retried
    assert (
        emulator_counts(emulator).get("submit", 0) + emulator_counts(emulator).get("generate", 0)
        == 0
    )


def test_the_gateway_passes_an_accepted_token_on_to_the_emulator(app_factory, emulator, gateway):
    gateway.refused.add("some other token")
    client = app_factory(
        AZURE_OPENAI_ENDPOINT=gateway.url,
        AZURE_OPENAI_API_KEY="",
        AZURE_OPENAI_AD_TOKEN=jwt(time.time() + 3600),
        AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1",
    ).test_client()

    job = generate(client, prompt="an expired pass", size="1024x1024")

    assert job["status"] == "succeeded", job["error"]
    assert emulator_counts(emulator)["generate"] == 1
