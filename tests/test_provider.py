"""AzureAsyncProvider against an independent, scripted stand-in for Azure over real loopback HTTP.

`FakeAzure` is deliberately not our emulator: it answers each request with whatever the test
scripted, so a test can reproduce what the reference says real servers do (capitalised statuses,
a top-level `data[]`, `retry-after-ms`, slow answers, redirects, chunked bodies) and check that
the provider tolerates it. Nothing below the provider is mocked.
"""

from __future__ import annotations

import base64
import email.utils
import gc
import io
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image
from werkzeug.wrappers import Request, Response

from app.providers import base
from app.providers.auth import AzureCredential
from app.providers.azure_async import POLL_ATTEMPTS, SUBMIT_ATTEMPTS, AzureAsyncProvider
from app.providers.base import ImageSlot, PollResult, ProviderError
from app.providers.download import (
    AZURE_BLOB_SUFFIX,
    DOWNLOAD_ATTEMPTS,
    is_trusted,
    origin,
)
from tests.helpers import free_port, serving_wsgi

API_KEY = "sk-test-" + "5ecret" * 4
API_VERSION = "2023-06-01-preview"
AZURE_ENDPOINT = "https://res.openai.azure.com/"  # for checks that must refuse before sending
OPERATION_PATH = "/openai/operations/images/op-1?api-version=2023-06-01-preview"
SUBMIT_PATH = "/openai/images/generations:submit"
SLOW = 1.0  # seconds a slow answer takes; longer than the short read timeout below
SHORT_READ_TIMEOUT = 0.3
ACCESS_DENIED = {
    "error": {
        "code": "401",
        "message": "Access denied due to invalid subscription key or wrong API endpoint.",
    }
}
REFUSED = {
    "created": 1589478378,
    "error": {
        "code": "contentFilter",
        "message": "Your task failed as a result of our safety system.",
    },
    "id": "9484f239-9a05-41ba-997b-78252fec4b34",
    "status": "failed",
}


# --- an independent "quirky Azure" ------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    raw_url: str
    headers: dict[str, str]
    body: bytes


Answer = Callable[[Request], Response]


def reply(
    status: int = 200,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | Iterable[bytes] | None = None,
    content_type: str = "application/json",
) -> Answer:
    """An answer: JSON `body`, or `raw` bytes (a generator of chunks is sent without a length)."""

    def answer(request: Request) -> Response:
        if raw is not None:
            data = raw
        elif body is not None:
            data = json.dumps(body).encode()
        else:
            data = b""
        return Response(data, status=status, headers=headers or {}, content_type=content_type)

    return answer


def slow(answer: Answer, seconds: float = SLOW) -> Answer:
    """The same answer after `seconds` (cut short when the test ends)."""

    def delayed(request: Request) -> Response:
        request.environ["fake_azure.release"].wait(seconds)
        return answer(request)

    return delayed


def operation(status: str, retry_after: str | None = "1", **fields: Any) -> Answer:
    """A 200 poll answer with the given status (and `retry-after` unless None)."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return reply(
        200, {"id": "op-1", "created": 1686676595, "status": status, **fields}, headers=headers
    )


def accepted(location: str = OPERATION_PATH, **headers: str) -> Answer:
    """Azure's 202 to a submit; a relative `location` is made absolute by the server's URL."""

    def answer(request: Request) -> Response:
        absolute = location if "://" in location else request.host_url.rstrip("/") + location
        return reply(
            202,
            {"id": "op-1", "status": "notRunning"},
            headers={"operation-location": absolute, **headers},
        )(request)

    return answer


class FakeAzure:
    """Answers requests from a script: each request takes the next answer; the last repeats."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[Seen] = []
        self.release = threading.Event()  # set at teardown so slow answers finish at once
        self._answers: list[Answer] = [reply(404, {"error": {"code": "404", "message": "x"}})]
        self._lock = threading.Lock()

    def script(self, *answers: Answer) -> None:
        self._answers = list(answers)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        environ["fake_azure.release"] = self.release
        with self._lock:
            self.requests.append(
                Seen(
                    method=request.method,
                    path=request.path,
                    query=parse_qs(request.query_string.decode()),
                    raw_url=request.full_path,
                    headers={key.lower(): value for key, value in request.headers.items()},
                    body=request.get_data(),
                )
            )
            answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        return answer(request)(environ, start_response)

    def seen(self, method: str | None = None) -> list[Seen]:
        return [seen for seen in self.requests if method is None or seen.method == method]


@pytest.fixture
def azure() -> Iterator[FakeAzure]:
    fake = FakeAzure()
    with serving_wsgi(fake) as fake.url:
        yield fake
        fake.release.set()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def make_provider(azure: FakeAzure, session: requests.Session) -> Callable[..., AzureAsyncProvider]:
    def make(endpoint: str | None = None, **options: Any) -> AzureAsyncProvider:
        options.setdefault("read_timeout", 5.0)
        return AzureAsyncProvider(
            endpoint or azure.url,
            AzureCredential(api_key=API_KEY),
            API_VERSION,
            session=session,
            **options,
        )

    return make


@pytest.fixture
def provider(make_provider: Callable[..., AzureAsyncProvider]) -> AzureAsyncProvider:
    return make_provider()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without a server hint wait (almost) nothing, so retry tests stay fast."""
    monkeypatch.setattr(base, "BACKOFF_BASE", 0.001)


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "PNG")
    return out.getvalue()


def op_url(azure: FakeAzure) -> str:
    return azure.url.rstrip("/") + OPERATION_PATH


# --- submit -----------------------------------------------------------------------------------


def test_submit_sends_the_key_only_in_the_api_key_header(azure, provider):
    azure.script(accepted())

    provider.submit("an avocado chair", "512x512", 3)

    (seen,) = azure.requests
    assert seen.headers["api-key"] == API_KEY
    assert API_KEY not in seen.raw_url
    assert API_KEY.encode() not in seen.body
    assert "authorization" not in seen.headers


def test_submit_posts_prompt_size_and_n_as_json_with_the_api_version(azure, provider):
    azure.script(accepted())

    provider.submit("an avocado chair", "512x512", 3)

    (seen,) = azure.requests
    assert (seen.method, seen.path) == ("POST", SUBMIT_PATH)
    assert seen.query == {"api-version": [API_VERSION]}
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"prompt": "an avocado chair", "size": "512x512", "n": 3}


def test_submit_returns_the_absolute_operation_location(azure, provider):
    azure.script(accepted())

    submitted = provider.submit("a fox", "256x256", 1)

    assert submitted.operation_url == op_url(azure)


def test_submit_resolves_a_relative_operation_location_against_the_endpoint(azure, provider):
    def relative(request: Request) -> Response:
        return Response(status=202, headers={"operation-location": OPERATION_PATH})

    azure.script(relative)

    submitted = provider.submit("a fox", "256x256", 1)

    assert submitted.operation_url == op_url(azure)


def test_submit_passes_on_the_retry_after_of_the_202(azure, provider):
    azure.script(accepted(**{"retry-after": "3"}))

    assert provider.submit("a fox", "256x256", 1).retry_after == 3.0


def test_submit_answered_without_operation_location_is_a_protocol_error(azure, provider):
    azure.script(reply(200, {"id": "op-1", "status": "notRunning"}))

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "256x256", 1)

    assert caught.value.code == "protocol_error"
    assert "operation-location" in caught.value.message


# --- poll: pending states and retry hints ----------------------------------------------------


@pytest.mark.parametrize("status", ["notRunning", "running"])
def test_poll_of_a_queued_or_running_operation_is_pending_with_its_retry_after(
    azure, provider, status
):
    azure.script(operation(status, retry_after="2"))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.PENDING
    assert result.retry_after == 2.0


def test_poll_gets_the_operation_url_exactly_as_given_with_the_api_key(azure, provider):
    url = azure.url.rstrip("/") + "/openai/operations/images/op-9?api-version=2023-09-01-preview"
    azure.script(operation("running"))

    provider.poll(url)

    (seen,) = azure.requests
    assert seen.method == "GET"
    assert seen.raw_url == "/openai/operations/images/op-9?api-version=2023-09-01-preview"
    assert seen.headers["api-key"] == API_KEY


def test_poll_prefers_retry_after_ms_over_retry_after(azure, provider):
    azure.script(
        reply(200, {"status": "running"}, headers={"retry-after": "5", "retry-after-ms": "250"})
    )

    assert provider.poll(op_url(azure)).retry_after == 0.25


def test_poll_without_a_retry_hint_leaves_the_interval_to_the_caller(azure, provider):
    azure.script(operation("running", retry_after=None))

    assert provider.poll(op_url(azure)).retry_after is None


def test_poll_reads_an_http_date_retry_after(azure, provider):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    azure.script(operation("running", retry_after=when))

    retry_after = provider.poll(op_url(azure)).retry_after

    assert retry_after is not None
    assert 25 <= retry_after <= 31


def test_poll_ignores_a_retry_after_it_cannot_read(azure, provider):
    azure.script(operation("running", retry_after="soon"))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.PENDING
    assert result.retry_after is None


def test_poll_treats_an_unknown_status_as_still_pending(azure, provider):
    azure.script(operation("warmingUp", retry_after="4"))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.PENDING
    assert result.retry_after == 4.0


# --- poll: success shapes --------------------------------------------------------------------


def test_poll_reads_images_under_result_data(azure, provider):
    data = [{"url": "https://dalleproduse.blob.core.windows.net/private/images/a/generated_00.png"}]
    azure.script(operation("succeeded", result={"created": 1686676595, "data": data}))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.SUCCEEDED
    assert result.slots == [ImageSlot(index=0, url=data[0]["url"])]


def test_poll_reads_images_under_a_top_level_data_as_in_the_docs_example(azure, provider):
    # azure-docs how-to/dall-e.md: `data` at the top level, plus `lastActionDateTime`.
    azure.script(
        operation(
            "succeeded",
            expires=1589478399,
            lastActionDateTime=1589478378,
            data=[
                {"url": "https://dalleproduse.blob.core.windows.net/x/generated_00.png"},
                {"url": "https://dalleproduse.blob.core.windows.net/x/generated_01.png"},
            ],
        )
    )

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.SUCCEEDED
    assert [slot.url.rsplit("/", 1)[1] for slot in result.slots] == [
        "generated_00.png",
        "generated_01.png",
    ]
    assert [slot.index for slot in result.slots] == [0, 1]


def test_poll_accepts_a_capitalised_succeeded(azure, provider):
    azure.script(
        operation("Succeeded", result={"data": [{"url": "https://x.blob.core.windows.net/a.png"}]})
    )

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.SUCCEEDED
    assert len(result.slots) == 1


def test_poll_gives_a_filtered_image_slot_its_error(azure, provider):
    filtered = {
        "code": "contentFilter",
        "message": "Generated image was filtered as a result of our safety system.",
    }
    azure.script(
        operation(
            "succeeded",
            result={
                "data": [{"url": "https://x.blob.core.windows.net/a.png"}, {"error": filtered}]
            },
        )
    )

    first, second = provider.poll(op_url(azure)).slots

    assert first.url and first.error_code is None
    assert (second.index, second.url) == (1, None)
    assert second.error_code == "contentFilter"
    assert second.error_message == filtered["message"]


def test_poll_turns_a_slot_with_neither_url_nor_data_into_an_error_slot(azure, provider):
    azure.script(operation("succeeded", result={"data": [{"revised_prompt": "a fox"}]}))

    (slot,) = provider.poll(op_url(azure)).slots

    assert slot.url is None and slot.b64_json is None
    assert slot.error_code
    assert slot.error_message


def test_poll_reads_b64_json_slots(azure, provider):
    encoded = base64.b64encode(png_bytes()).decode()
    azure.script(operation("succeeded", result={"data": [{"b64_json": encoded}]}))

    (slot,) = provider.poll(op_url(azure)).slots

    assert slot.b64_json == encoded
    assert slot.url is None and slot.error_code is None


# --- poll: failure shapes --------------------------------------------------------------------


def test_poll_of_a_refused_prompt_fails_with_content_filter_and_says_so(azure, provider):
    azure.script(reply(200, REFUSED))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.FAILED
    assert result.error_code == "contentFilter"
    assert "refused" in result.error_message
    assert "safety system" in result.error_message


def test_poll_of_a_failed_operation_keeps_azures_code_and_message(azure, provider):
    error = {"code": "internalFailure", "message": "The image could not be generated."}
    azure.script(operation("failed", error=error))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.FAILED
    assert result.error_code == "internalFailure"
    assert result.error_message == "The image could not be generated."


def test_poll_of_a_failed_operation_without_an_error_still_explains(azure, provider):
    azure.script(operation("failed"))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.FAILED
    assert result.error_code == "failed"
    assert result.error_message and "None" not in result.error_message


@pytest.mark.parametrize("status", ["canceled", "cancelled"])
def test_poll_of_a_canceled_operation_fails_as_timed_out(azure, provider, status):
    azure.script(operation(status))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.FAILED
    assert result.error_code == "canceled"
    assert "timed out" in result.error_message


def test_poll_of_a_deleted_operation_fails(azure, provider):
    azure.script(operation("deleted"))

    result = provider.poll(op_url(azure))

    assert result.state == PollResult.FAILED
    assert result.error_code == "deleted"


# --- HTTP errors and retries -----------------------------------------------------------------


def test_rejected_key_is_unauthorized_names_the_setting_and_is_not_retried(azure, provider):
    azure.script(reply(401, ACCESS_DENIED))

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "256x256", 1)

    assert caught.value.code == "unauthorized"
    assert caught.value.retryable is False
    assert "AZURE_OPENAI_API_KEY" in caught.value.message
    assert API_KEY not in caught.value.message
    assert len(azure.requests) == 1


def test_provider_repr_never_shows_the_key(provider):
    assert API_KEY not in repr(provider)


def test_unknown_operation_is_not_found_and_is_not_retried(azure, provider):
    azure.script(reply(404, {"error": {"code": "404", "message": "Resource not found"}}))

    with pytest.raises(ProviderError) as caught:
        provider.poll(op_url(azure))

    assert caught.value.code == "operation_gone"
    assert "Retry" in caught.value.message
    assert caught.value.retryable is False
    assert len(azure.requests) == 1


def test_bad_request_takes_its_code_from_the_azure_envelope_and_is_not_retried(azure, provider):
    error = {"code": "invalidPayload", "message": "The size 300x300 is not supported."}
    azure.script(reply(400, {"error": error}))

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "300x300", 1)

    assert caught.value.code == "invalidPayload"
    assert "300x300 is not supported" in caught.value.message
    assert caught.value.retryable is False
    assert len(azure.requests) == 1


def test_rate_limited_submit_waits_retry_after_ms_then_succeeds(azure, provider):
    azure.script(
        reply(
            429, {"error": {"code": "429", "message": "Too many"}}, headers={"retry-after-ms": "10"}
        ),
        accepted(),
    )

    submitted = provider.submit("a fox", "256x256", 1)

    assert submitted.operation_url == op_url(azure)
    assert len(azure.requests) == 2


def test_rate_limited_forever_gives_up_after_the_bounded_attempts(azure, provider):
    azure.script(
        reply(
            429,
            {"error": {"code": "429", "message": "Please retry after 1 second."}},
            headers={"retry-after-ms": "10", "retry-after": "1"},
        )
    )

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "256x256", 1)

    assert caught.value.code == "rate_limited"
    assert caught.value.retryable is True
    assert caught.value.retry_after == 0.01
    assert len(azure.requests) == SUBMIT_ATTEMPTS == 3


def test_poll_retries_a_server_error_then_succeeds(azure, provider, no_backoff):
    azure.script(reply(500, {"error": {"code": "500", "message": "oops"}}), operation("running"))

    assert provider.poll(op_url(azure)).state == PollResult.PENDING
    assert len(azure.requests) == 2


def test_poll_gives_up_on_a_lasting_server_error_as_retryable(azure, provider, no_backoff):
    azure.script(reply(503, raw=b"<html>Service Unavailable</html>", content_type="text/html"))

    with pytest.raises(ProviderError) as caught:
        provider.poll(op_url(azure))

    assert caught.value.code == "upstream_unavailable"
    assert caught.value.retryable is True
    assert len(azure.requests) == POLL_ATTEMPTS


def test_poll_answer_that_is_not_json_is_a_retryable_protocol_error(azure, provider):
    azure.script(reply(200, raw=b'{"status": "runn', content_type="application/json"))

    with pytest.raises(ProviderError) as caught:
        provider.poll(op_url(azure))

    assert caught.value.code == "protocol_error"
    assert caught.value.retryable is True


def test_poll_answer_that_is_json_but_not_an_object_is_a_protocol_error(azure, provider):
    azure.script(reply(200, ["succeeded"]))

    with pytest.raises(ProviderError) as caught:
        provider.poll(op_url(azure))

    assert caught.value.code == "protocol_error"


# --- timeouts and connection failures --------------------------------------------------------


def test_submit_is_not_repeated_after_a_read_timeout(azure, make_provider):
    provider = make_provider(read_timeout=SHORT_READ_TIMEOUT)
    azure.script(slow(accepted()), accepted())

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "256x256", 1)

    assert caught.value.code == "unknown_outcome"
    assert caught.value.retryable is False
    assert len(azure.seen("POST")) == 1


def test_poll_is_retried_after_a_read_timeout(azure, make_provider, no_backoff):
    provider = make_provider(read_timeout=SHORT_READ_TIMEOUT)
    azure.script(slow(operation("running")), operation("running"))

    assert provider.poll(op_url(azure)).state == PollResult.PENDING
    assert len(azure.requests) == 2


def test_submit_to_a_closed_port_is_a_retryable_connection_error(make_provider, no_backoff):
    provider = make_provider(f"http://127.0.0.1:{free_port()}/")

    with pytest.raises(ProviderError) as caught:
        provider.submit("a fox", "256x256", 1)

    assert caught.value.code == "connection_error"
    assert caught.value.retryable is True


# --- where the key may be sent ---------------------------------------------------------------


def test_poll_refuses_an_operation_url_on_another_host(make_provider):
    provider = make_provider(AZURE_ENDPOINT)

    with pytest.raises(ProviderError) as caught:
        provider.poll("https://evil.example/openai/operations/images/op-1?api-version=x")

    # Sending would have failed with a connection error; this code means nothing was sent.
    assert caught.value.code == "untrusted_url"
    assert "evil.example" in caught.value.message


def test_poll_refuses_a_plain_http_operation_url_for_an_https_endpoint(make_provider):
    provider = make_provider(AZURE_ENDPOINT)

    with pytest.raises(ProviderError) as caught:
        provider.poll("http://res.openai.azure.com/openai/operations/images/op-1")

    assert caught.value.code == "untrusted_url"


def test_delete_refuses_an_operation_url_on_another_host(make_provider):
    provider = make_provider(AZURE_ENDPOINT)

    with pytest.raises(ProviderError) as caught:
        provider.delete("https://evil.example/openai/operations/images/op-1")

    assert caught.value.code == "untrusted_url"


def test_poll_follows_a_localhost_operation_url_from_a_loopback_endpoint(azure, provider):
    # A local server may name itself "localhost" while we call it 127.0.0.1.
    port = urlsplit(azure.url).port
    azure.script(operation("running"))

    result = provider.poll(f"http://localhost:{port}{OPERATION_PATH}")

    assert result.state == PollResult.PENDING
    assert azure.requests[0].headers["api-key"] == API_KEY


def test_poll_refuses_a_host_name_that_only_looks_like_loopback(azure, provider, no_backoff):
    with pytest.raises(ProviderError) as caught:
        provider.poll("http://127.attacker.example/openai/operations/images/op-1")

    assert caught.value.code == "untrusted_url"


# --- fetch_image -----------------------------------------------------------------------------


def test_fetch_image_downloads_from_the_endpoint_without_the_api_key(azure, provider):
    image = png_bytes()
    azure.script(reply(200, raw=image, content_type="image/png"))

    data = provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/generated_00.png"))

    assert data == image
    (seen,) = azure.requests
    assert seen.path == "/blobs/generated_00.png"
    assert "api-key" not in seen.headers


def test_fetch_image_refuses_a_host_that_is_not_azure_storage(make_provider):
    provider = make_provider(AZURE_ENDPOINT)

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url="https://evil.example/x.png"))

    assert caught.value.code == "untrusted_url"


def test_fetch_image_refuses_azure_storage_over_plain_http(make_provider):
    provider = make_provider(AZURE_ENDPOINT)
    url = "http://dalleprodsec.blob.core.windows.net/private/images/a/generated_00.png"

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=url))

    assert caught.value.code == "untrusted_url"


def test_download_check_allows_azures_blob_storage_over_https(make_provider):
    # Checked without fetching: the real host is on the internet.
    url = "https://dalleprodsec.blob.core.windows.net/private/images/a/generated_00.png?se=x&sig=y"

    assert is_trusted(url, origin(AZURE_ENDPOINT), (AZURE_BLOB_SUFFIX,))


def test_fetch_image_does_not_follow_a_redirect(azure, provider):
    azure.script(
        reply(302, raw=b"", headers={"location": azure.url + "elsewhere.png"}),
        reply(200, raw=png_bytes(), content_type="image/png"),
    )

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.code == "bad_image"
    assert "redirect" in caught.value.message
    assert [seen.path for seen in azure.requests] == ["/blobs/a.png"]


def test_fetch_image_refuses_a_page_that_is_not_an_image(azure, provider):
    azure.script(reply(200, raw=b"<html>Sign in</html>", content_type="text/html"))

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.code == "bad_image"
    assert "text/html" in caught.value.message


def test_fetch_image_refuses_a_declared_length_over_the_limit_before_reading(azure, make_provider):
    provider = make_provider(max_image_bytes=1000)
    # Only the header is over the limit: reading the short body would end in a broken read.
    azure.script(
        reply(200, raw=[b"\0" * 20], content_type="image/png", headers={"content-length": "5000"})
    )

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.code == "image_too_large"


def test_fetch_image_counts_bytes_when_no_length_is_declared(azure, make_provider):
    provider = make_provider(max_image_bytes=1000)

    def chunks() -> Iterator[bytes]:  # a generator body is sent chunked, without Content-Length
        for _ in range(10):
            yield b"\0" * 400

    azure.script(reply(200, raw=chunks(), content_type="image/png"))

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.code == "image_too_large"


@pytest.mark.parametrize("status", [403, 404])
def test_fetch_image_from_an_expired_url_is_image_expired(azure, provider, status):
    azure.script(reply(status, raw=b"<Error><Code>AuthenticationFailed</Code></Error>"))

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.code == "image_expired"
    assert caught.value.retryable is False


def test_refused_download_closes_its_connection(azure, provider):
    azure.script(reply(404, raw=b"<Error><Code>BlobNotFound</Code></Error>"))

    with warnings.catch_warnings(record=True) as seen_warnings:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ProviderError):
            provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))
        gc.collect()

    assert [str(w.message) for w in seen_warnings if w.category is ResourceWarning] == []


def test_download_that_stalls_mid_body_is_a_retryable_provider_error(azure, make_provider):
    provider = make_provider(read_timeout=SHORT_READ_TIMEOUT)

    def stalling(request: Request) -> Response:
        def body() -> Iterator[bytes]:
            yield png_bytes()[:20]
            request.environ["fake_azure.release"].wait(SLOW)
            yield png_bytes()[20:]

        return Response(body(), content_type="image/png")

    azure.script(stalling)

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.retryable is True


def test_download_that_breaks_off_mid_body_is_a_retryable_provider_error(azure, provider):
    image = png_bytes()
    # The server promises more bytes than it sends, then closes the connection.
    azure.script(
        reply(200, raw=[image[:20]], content_type="image/png", headers={"content-length": "5000"})
    )

    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png"))

    assert caught.value.retryable is True
    assert len(azure.requests) == DOWNLOAD_ATTEMPTS  # fetched again, a bounded number of times


def test_download_that_broke_off_once_is_fetched_again(azure, provider, no_backoff):
    image = png_bytes()
    azure.script(
        reply(200, raw=[image[:20]], content_type="image/png", headers={"content-length": "5000"}),
        reply(200, raw=image, content_type="image/png"),
    )

    assert provider.fetch_image(ImageSlot(index=0, url=azure.url + "blobs/a.png")) == image
    assert len(azure.requests) == 2


def test_fetch_image_decodes_b64_json(provider):
    image = png_bytes()

    data = provider.fetch_image(ImageSlot(index=0, b64_json=base64.b64encode(image).decode()))

    assert data == image


def test_fetch_image_refuses_invalid_base64(provider):
    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0, b64_json="not base64!"))

    assert caught.value.code == "bad_image"


def test_fetch_image_of_a_slot_without_url_or_data_is_bad_image(provider):
    with pytest.raises(ProviderError) as caught:
        provider.fetch_image(ImageSlot(index=0))

    assert caught.value.code == "bad_image"


# --- delete ----------------------------------------------------------------------------------


def test_delete_sends_delete_to_the_operation_url_with_the_api_key(azure, provider):
    azure.script(reply(204))

    provider.delete(op_url(azure))

    (seen,) = azure.requests
    assert (seen.method, seen.raw_url) == ("DELETE", OPERATION_PATH)
    assert seen.headers["api-key"] == API_KEY
