"""What every provider returns and raises, and the one HTTP helper they all use.

`send()` applies the policy every upstream call follows: explicit connect/read timeouts,
bounded retries with capped full-jitter backoff that honours `retry-after-ms`/`retry-after`,
and no retry of client errors other than 408/409/429. `x-should-retry: true|false` overrides
the status rules, as openai-python does (azure-image-apis.md §4.5). A thread never sleeps longer
than MAX_RETRY_AFTER on one hint: when the server asks for longer, `send()` stops and raises the
error with its `retry_after`, and the worker requeues the job for later (or fails it when the
wait outlasts the job's deadline) instead of holding a thread. Errors become `ProviderError`
with a message a person can act on; secrets never appear in one.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0
# The longest a thread sleeps between two attempts of one call when the server asks it to wait.
# openai-python sleeps up to 60 s (v1) or 120 s (v2); a worker thread serves many jobs, so a
# longer wait is handed back to the worker, which requeues the job instead of sleeping.
MAX_RETRY_AFTER = 4.0


class ProviderError(Exception):
    """An upstream call failed. `retryable`: trying the same step later may succeed."""

    def __init__(
        self, code: str, message: str, *, retryable: bool = False, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.status = status
        # Seconds the server asked us to wait before trying again (retry-after-ms/retry-after).
        self.retry_after: float | None = None
        # Who answered ("Azure", "OpenAI"), for messages written after the fact.
        self.service: str | None = None


@dataclass(frozen=True)
class Submitted:
    operation_url: str
    retry_after: float | None


@dataclass(frozen=True)
class ImageSlot:
    """One entry of a result: a URL or base64 data to fetch, or an error instead of an image."""

    index: int
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # Azure's per-image content_filter_results and prompt_filter_results, kept as sent.
    filter_results: dict[str, Any] | None = None


IMAGE_ROLE, MASK_ROLE = "image", "mask"


@dataclass(frozen=True)
class InputImage:
    """One file an edit sends: the stored bytes exactly as they are on disk."""

    role: str  # IMAGE_ROLE or MASK_ROLE
    data: bytes
    content_type: str  # "image/png" | "image/jpeg" | "image/webp"


@dataclass(frozen=True)
class GenerationRequest:
    """What a synchronous image API is asked for. `options`: the model's options as the job
    holds them (providers send only those the model takes); `end_user`: the hashed account id
    the request carries for abuse reports, or None; `inputs`: the images to edit, in order,
    then at most one mask (none: a generation); `on_partial`: called with
    (partial_image_index, image bytes) for each partial image a streamed answer carries. What
    it raises leaves `generate()` unchanged (a worker that lost its lease stops that way)."""

    prompt: str
    size: str
    n: int
    options: Mapping[str, Any]
    end_user: str | None = None
    inputs: tuple[InputImage, ...] = ()
    on_partial: Callable[[int, bytes], None] | None = None


@dataclass(frozen=True)
class Generation:
    """The answer of a synchronous image API: the images and the token usage, if reported."""

    slots: list[ImageSlot]
    usage: dict[str, Any] | None = None


@dataclass(frozen=True)
class PollResult:
    state: str  # "pending" or one of the final states below
    retry_after: float | None = None
    slots: list[ImageSlot] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def json_object(response: requests.Response, service: str) -> dict[str, Any]:
    """The JSON object in a 2xx answer; anything else is a (retryable) protocol error."""
    try:
        body = response.json()
    except ValueError:
        raise ProviderError(
            "protocol_error", f"{service}'s answer was not valid JSON.", retryable=True
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(
            "protocol_error", f"{service}'s answer was not a JSON object.", retryable=True
        )
    return body


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value else None


def parse_slots(data: Any) -> list[ImageSlot]:
    """Result entries in order: an image (url or b64_json) or an error in its place."""
    slots = []
    for index, item in enumerate(data if isinstance(data, list) else []):
        item = item if isinstance(item, dict) else {}
        error = item.get("error")
        annotations = {
            key: item[key]
            for key in ("content_filter_results", "prompt_filter_results")
            if isinstance(item.get(key), dict)
        }
        if isinstance(error, dict) or not (_text(item, "url") or _text(item, "b64_json")):
            error = error if isinstance(error, dict) else {}
            slots.append(
                ImageSlot(
                    index=index,
                    error_code=str(error.get("code") or "missing"),
                    error_message=str(
                        error.get("message") or "The result has no image in this slot."
                    ),
                    filter_results=annotations or None,
                )
            )
            continue
        slots.append(
            ImageSlot(
                index=index,
                url=_text(item, "url"),
                b64_json=_text(item, "b64_json"),
                revised_prompt=_text(item, "revised_prompt"),
                filter_results=annotations or None,
            )
        )
    return slots


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None  # unreadable: the caller falls back to its own backoff
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return max(0.0, parsed.timestamp() - time.time())


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Honour the server's hint (capped), else capped exponential backoff with full jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def should_retry_header(headers: Any) -> bool | None:
    """`x-should-retry: true|false` (the server overrides the status rules), else None."""
    value = str(headers.get("x-should-retry") or "").strip().lower()
    return {"true": True, "false": False}.get(value)


def error_object(response: requests.Response) -> dict[str, Any]:
    """The `error` object of an Azure or OpenAI error envelope ({} for any other body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def error_body(response: requests.Response) -> tuple[str | None, str | None]:
    """(code, message) from an Azure or OpenAI error envelope, tolerating other bodies."""
    error = error_object(response)
    code = error.get("code")
    message = error.get("message")
    return (str(code) if code is not None else None), (str(message) if message else None)


# Both image refusal shapes (azure-image-apis.md §3.4): the older `contentFilter` code, and
# OpenAI's `content_policy_violation` with Azure's `inner_error` ResponsibleAIPolicyViolation.
REFUSAL_CODES = {"contentFilter", "content_policy_violation", "content_filter"}


def refusal(error: dict[str, Any], service: str) -> ProviderError | None:
    """One clear refusal for every content-filter error shape, naming flagged categories."""
    inner = error.get("inner_error") or error.get("innererror")
    inner = inner if isinstance(inner, dict) else {}
    if error.get("code") not in REFUSAL_CODES and inner.get("code") != (
        "ResponsibleAIPolicyViolation"
    ):
        return None
    results = inner.get("content_filter_results")
    flagged = [
        name
        for name, verdict in (results.items() if isinstance(results, dict) else ())
        if isinstance(verdict, dict) and verdict.get("filtered")
    ]
    message = str(error.get("message") or "The safety system rejected it.")
    if flagged:
        message += f" (flagged: {', '.join(sorted(flagged))})"
    return ProviderError("contentFilter", f"{service} refused this prompt: {message}")


def stream_interrupted(service: str, reason: str) -> ProviderError:
    """A streamed answer that broke after the 200 began: final, since the image may have been
    made and billed, and sending the request again could bill it twice."""
    return ProviderError(
        "stream_interrupted",
        f"{service}'s image stream broke off after it had started: {reason}. The image may "
        "already have been billed, so it was not requested again; use Retry to try once more.",
        retryable=False,
    )


def stream_error(error: dict[str, Any], service: str) -> ProviderError:
    """An `error` event inside a streamed answer, explained like an error answer: a refusal as
    `refusal()` says it, anything else with the service's code and message. Never retried by
    itself: the stream had begun, so the work may have been billed."""
    refused = refusal(error, service)
    if refused is not None:
        return _answered_by(refused, service)
    code, message = error.get("code"), error.get("message")
    return _answered_by(
        ProviderError(
            str(code) if code else "stream_error",
            f"{service} stopped making the image: {message or 'an error it did not describe'}",
        ),
        service,
    )


def _answered_by(error: ProviderError, service: str) -> ProviderError:
    """`error`, marked as said by `service` (for messages written after the fact)."""
    error.service = service
    return error


def describe_error(
    response: requests.Response,
    service: str,
    *,
    credentials_hint: str,
    not_found_hint: str,
    unauthorized_message: str | None = None,
) -> ProviderError:
    """A readable ProviderError for a non-2xx answer; retryable for 408, 429 and 5xx.

    `unauthorized_message` replaces the generic advice for 401/403 when the credential knows
    better (an expired Entra ID token is not a wrong key)."""
    return _answered_by(
        _describe_status(response, service, credentials_hint, not_found_hint, unauthorized_message),
        service,
    )


def _describe_status(
    response: requests.Response,
    service: str,
    credentials_hint: str,
    not_found_hint: str,
    unauthorized_message: str | None,
) -> ProviderError:
    error = error_object(response)
    code, message = error_body(response)
    status = response.status_code
    said = f" {service} said: {message}" if message else ""
    if status in (401, 403):
        advice = unauthorized_message or (
            f"{service} rejected the credentials (HTTP {status}). Check {credentials_hint}."
        )
        return ProviderError("unauthorized", advice + said, status=status)
    if status == 404:
        return ProviderError(
            "not_found",
            f"{service} answered 404 ({message or 'Resource not found'}). {not_found_hint}",
            status=status,
        )
    if status == 429:
        return ProviderError(
            "rate_limited",
            f"{service} is rate-limiting requests (HTTP 429)." + (f" {message}" if message else ""),
            retryable=True,
            status=status,
        )
    if status >= 500 or status == 408:
        return ProviderError(
            "upstream_unavailable",
            f"{service} had a problem (HTTP {status})." + (f" {message}" if message else ""),
            retryable=True,
            status=status,
        )
    refused = refusal(error, service)
    if refused is not None:
        refused.status = status
        return refused
    return ProviderError(
        code or f"http_{status}",
        f"{service} refused the request (HTTP {status}): {message or response.reason}",
        status=status,
    )


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    read_timeout: float,
    attempts: int,
    describe: Callable[[requests.Response], ProviderError],
    idempotent: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> requests.Response:
    """Send one request with bounded retries; return a 2xx response or raise ProviderError.

    `describe` turns a non-2xx response into the ProviderError to raise. A transport failure
    after the request may have been sent (read timeout, reset) is retried only when the call is
    `idempotent`; otherwise it raises ProviderError with code "unknown_outcome".
    """
    last_error: ProviderError | None = None
    for attempt in range(attempts):
        retry_after: float | None = None
        try:
            response = session.request(
                method,
                url,
                timeout=(CONNECT_TIMEOUT, read_timeout),
                allow_redirects=False,
                **kwargs,
            )
        except requests.RequestException as error:
            last_error, sent = _transport_error(error, url, read_timeout)
            if sent and not idempotent:
                # The request may have reached the server: repeating it could run (and bill)
                # the same work twice, so the caller decides what an unknown outcome means.
                last_error.code = "unknown_outcome"
                last_error.retryable = False
                raise last_error from None
        else:
            if 200 <= response.status_code < 300:
                return response
            with response:  # a streamed answer keeps its connection until closed
                last_error = describe(response)
                last_error.retry_after = retry_after = parse_retry_after(response.headers)
                should_retry = should_retry_header(response.headers)
            if should_retry is False:
                # The server's word is final, here and for the worker's requeue (§4.5).
                last_error.retryable = False
                raise last_error
            if should_retry is True:
                # Guess (§4.5 describes openai-python, not Azure): honoured for any status. A
                # non-2xx answer generated nothing, so repeating even a POST cannot bill twice.
                last_error.retryable = True
            elif response.status_code not in RETRYABLE_STATUS:
                raise last_error
            if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                # Too long to hold a thread: the caller (the worker) decides when to try again.
                raise last_error
        if attempt + 1 < attempts:
            delay = backoff_delay(attempt, retry_after)
            log.info("retrying %s %s in %.2f s (%s)", method, _host(url), delay, last_error.code)
            sleep(delay)
    assert last_error is not None
    raise last_error


def _transport_error(
    error: requests.RequestException, url: str, read_timeout: float
) -> tuple[ProviderError, bool]:
    """(error, whether the request may have been sent) for a failure below HTTP."""
    host = _host(url)
    if isinstance(error, requests.ConnectTimeout):
        return ProviderError(
            "connection_error",
            f"Could not connect to {host} within {CONNECT_TIMEOUT:g} s.",
            retryable=True,
        ), False
    if isinstance(error, requests.ReadTimeout) or "Read timed out" in str(error):
        return ProviderError(
            "timeout", f"No answer from {host} within {read_timeout:g} s.", retryable=True
        ), True
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        if isinstance(reason, urllib3.exceptions.NewConnectionError):
            return ProviderError(
                "connection_error", f"Could not connect to {host}.", retryable=True
            ), False
        return ProviderError(
            "connection_error", f"The connection to {host} broke off.", retryable=True
        ), True
    return ProviderError(
        "http_error", f"The request to {host} failed ({type(error).__name__})."
    ), True


def _host(url: str) -> str:
    return requests.utils.urlparse(url).netloc or url
