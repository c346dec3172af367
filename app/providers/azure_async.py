"""Azure OpenAI's asynchronous image API (DALL-E 2, `images/generations:submit`).

Protocol (../shared/reference/azure-image-apis.md §2): POST the prompt, get 202 with an absolute
`operation-location`; GET that URL until `status` is terminal, waiting `retry-after` between
polls; images are at `result.data[].url` (tolerating a top-level `data[]`), a filtered image is
an `error` in its slot, a refused prompt is `status: failed` with `error.code: contentFilter`.
The same code talks to Azure and to the built-in emulator.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import requests

from app.providers.auth import AzureCredential
from app.providers.base import (
    ImageSlot,
    PollResult,
    ProviderError,
    Submitted,
    describe_error,
    json_object,
    parse_retry_after,
    parse_slots,
    send,
)
from app.providers.download import ImageFetcher, is_trusted, origin, pooled_session

# Hosts Azure OpenAI resources answer on (azure-image-apis.md §1.1).
AZURE_API_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
SUBMIT_ATTEMPTS = 3
POLL_ATTEMPTS = 4
CREDENTIALS_HINT = "AZURE_OPENAI_API_KEY (or AZURE_OPENAI_AD_TOKEN) and AZURE_OPENAI_ENDPOINT"

# Terminal states (§2.5). `deleted` appears after a DELETE; `cancelled` is a misspelling some
# proxies use. Status strings are compared case-insensitively: an early preview sent "Succeeded".
PENDING_STATES = {"notrunning", "running"}


class AzureAsyncProvider:
    """Submit, poll, fetch and clean up image operations on one Azure OpenAI resource."""

    synchronous = False

    def __init__(
        self,
        endpoint: str,
        credential: AzureCredential,
        api_version: str,
        *,
        read_timeout: float = 60.0,
        max_image_bytes: int = 50 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.api_version = api_version
        self.read_timeout = read_timeout
        self._credential = credential
        self._session = session or pooled_session()
        self._endpoint_origin = origin(self.endpoint)
        self._fetcher = ImageFetcher(
            self._session, self.endpoint, read_timeout=read_timeout, max_image_bytes=max_image_bytes
        )

    def __repr__(self) -> str:  # never show the key
        return f"AzureAsyncProvider(endpoint={self.endpoint!r}, api_version={self.api_version!r})"

    # --- the protocol ---------------------------------------------------------------------------

    def submit(self, prompt: str, size: str, n: int) -> Submitted:
        url = f"{self.endpoint}openai/images/generations:submit"
        response = send(
            self._session,
            "POST",
            url,
            params={"api-version": self.api_version},
            headers=self._headers(),
            json={"prompt": prompt, "size": size, "n": n},
            read_timeout=self.read_timeout,
            attempts=SUBMIT_ATTEMPTS,
            describe=self._describe,
            idempotent=False,
        )
        # Azure documents 202; any 2xx that names the operation is followed (guess: lenient on
        # purpose, since the operation URL is all we need).
        location = response.headers.get("operation-location")
        if not location:
            raise ProviderError(
                "protocol_error",
                f"Azure accepted the prompt (HTTP {response.status_code}) but sent no "
                "operation-location header, so the result cannot be followed.",
            )
        if urlsplit(location).scheme not in ("http", "https"):
            # The reference says the header is absolute; resolve a relative one defensively.
            location = requests.compat.urljoin(self.endpoint, location)
        return Submitted(operation_url=location, retry_after=parse_retry_after(response.headers))

    def poll(self, operation_url: str) -> PollResult:
        self._check_same_origin(operation_url, "operation-location")
        try:
            response = send(
                self._session,
                "GET",
                operation_url,
                headers=self._headers(),
                read_timeout=self.read_timeout,
                attempts=POLL_ATTEMPTS,
                describe=self._describe,
            )
        except ProviderError as error:
            if error.code == "not_found":
                raise ProviderError(
                    "operation_gone",
                    "Azure no longer knows this operation (HTTP 404), so its images cannot be "
                    "fetched; use Retry to generate again.",
                    status=404,
                ) from None
            raise
        body = json_object(response, "Azure")
        retry_after = parse_retry_after(response.headers)
        status = str(body.get("status", "")).lower()
        if status in PENDING_STATES:
            return PollResult(PollResult.PENDING, retry_after=retry_after)
        if status == "succeeded":
            return PollResult(PollResult.SUCCEEDED, slots=_slots(body))
        if status == "failed":
            code, message = _operation_error(body)
            if code == "contentFilter":
                message = f"Azure refused this prompt: {message}"
            return PollResult(PollResult.FAILED, error_code=code, error_message=message)
        if status in ("canceled", "cancelled"):
            return PollResult(
                PollResult.FAILED,
                error_code="canceled",
                error_message="Azure canceled the operation: it timed out before finishing.",
            )
        if status == "deleted":
            return PollResult(
                PollResult.FAILED,
                error_code="deleted",
                error_message="The operation was deleted on Azure before its images were saved.",
            )
        # An unknown status is treated as still running; the job's deadline bounds the wait.
        return PollResult(PollResult.PENDING, retry_after=retry_after)

    def fetch_image(self, slot: ImageSlot) -> bytes:
        """The image bytes of a slot: decoded base64, or downloaded from an allowed host."""
        return self._fetcher.fetch(slot)

    def delete(self, operation_url: str) -> None:
        """Ask Azure to drop a finished operation and its images (we keep our own copies)."""
        self._check_same_origin(operation_url, "operation-location")
        send(
            self._session,
            "DELETE",
            operation_url,
            headers=self._headers(),
            read_timeout=self.read_timeout,
            attempts=1,
            describe=self._describe,
        )

    # --- helpers --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return self._credential.headers()

    def _check_same_origin(self, url: str, what: str) -> None:
        # The key is sent to this URL, so it must belong to the configured resource: the same
        # origin, another Azure OpenAI API host over https, or loopback when the endpoint is a
        # local server (a test double may name itself "localhost" while we call it 127.0.0.1).
        if not is_trusted(url, self._endpoint_origin, AZURE_API_SUFFIXES):
            raise ProviderError(
                "untrusted_url",
                f"The {what} URL points at {urlsplit(url).netloc or url}, not at the configured "
                "endpoint; Atelier will not send the API key there.",
            )

    def _describe(self, response: requests.Response) -> ProviderError:
        return describe_error(
            response,
            "Azure",
            credentials_hint=CREDENTIALS_HINT,
            unauthorized_message=self._credential.unauthorized_message(response.status_code),
            not_found_hint=(
                f"The asynchronous DALL-E 2 API needs api-version {self.api_version} on this "
                "endpoint; Azure retired it in 2025, so only compatible servers still offer it."
            ),
        )


def _operation_error(body: dict[str, Any]) -> tuple[str, str]:
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    code = str(error.get("code") or "failed")
    message = str(error.get("message") or "The operation failed without saying why.")
    return code, message


def _slots(body: dict[str, Any]) -> list[ImageSlot]:
    # The schema puts images at result.data; one documented example puts them at data.
    result = body.get("result") if isinstance(body.get("result"), dict) else {}
    data = result.get("data")
    if not isinstance(data, list):
        data = body.get("data")
    return parse_slots(data)
