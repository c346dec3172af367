"""What every provider returns and raises, and the one HTTP helper they all use.

`send()` applies the policy every upstream call follows: explicit connect/read timeouts,
bounded retries with capped full-jitter backoff that honours `retry-after-ms`/`retry-after`,
and no retry of client errors other than 408/409/429. Errors become `ProviderError` with a
message a person can act on; secrets never appear in one.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
BACKOFF_BASE, BACKOFF_CAP = 0.5, 8.0
MAX_RETRY_AFTER = 60.0


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
        self.retry_after: float | None = None


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
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def backoff_delay(attempt: int, retry_after: float | None) -> float:
    """Honour the server's hint (capped), else capped exponential backoff with full jitter."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def error_body(response: requests.Response) -> tuple[str | None, str | None]:
    """(code, message) from an Azure or OpenAI error envelope, tolerating other bodies."""
    try:
        body = response.json()
    except ValueError:
        return None, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    code = error.get("code")
    message = error.get("message")
    return (str(code) if code is not None else None), (str(message) if message else None)


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
            last_error = describe(response)
            last_error.retry_after = retry_after = parse_retry_after(response.headers)
            if response.status_code not in RETRYABLE_STATUS:
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
