"""Azure OpenAI's asynchronous image API (DALL-E 2, `images/generations:submit`).

Protocol (../shared/reference/azure-image-apis.md §2): POST the prompt, get 202 with an absolute
`operation-location`; GET that URL until `status` is terminal, waiting `retry-after` between
polls; images are at `result.data[].url` (tolerating a top-level `data[]`), a filtered image is
an `error` in its slot, a refused prompt is `status: failed` with `error.code: contentFilter`.
The same code talks to Azure and to the built-in emulator.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

import requests

from app.providers.base import (
    ImageSlot,
    PollResult,
    ProviderError,
    Submitted,
    error_body,
    parse_retry_after,
    send,
)

# Azure's documented blob host for generated images (`dalleprod*.blob.core.windows.net`).
AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
# Hosts Azure OpenAI resources answer on (azure-image-apis.md §1.1).
AZURE_API_SUFFIXES = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")
LOOPBACK_NAMES = {"localhost", "::1"}
SUBMIT_ATTEMPTS = 3
POLL_ATTEMPTS = 4
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_CHUNK = 64 * 1024
ACCEPTED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")

# Terminal states (§2.5). `deleted` appears after a DELETE; `cancelled` is a misspelling some
# proxies use. Status strings are compared case-insensitively: an early preview sent "Succeeded".
PENDING_STATES = {"notrunning", "running"}


class AzureAsyncProvider:
    """Submit, poll, fetch and clean up image operations on one Azure OpenAI resource."""

    model = "dall-e-2"

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        api_version: str,
        *,
        read_timeout: float = 60.0,
        max_image_bytes: int = 50 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        self.endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        self.api_version = api_version
        self.read_timeout = read_timeout
        self.max_image_bytes = max_image_bytes
        self._api_key = api_key
        self._session = session or requests.Session()
        self._endpoint_origin = _origin(self.endpoint)

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
        response = send(
            self._session,
            "GET",
            operation_url,
            headers=self._headers(),
            read_timeout=self.read_timeout,
            attempts=POLL_ATTEMPTS,
            describe=self._describe,
        )
        body = _json_object(response)
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
        if slot.b64_json is not None:
            try:
                data = base64.b64decode(slot.b64_json, validate=True)
            except (binascii.Error, ValueError):
                raise ProviderError("bad_image", "The image data is not valid base64.") from None
            if len(data) > self.max_image_bytes:
                raise ProviderError("image_too_large", "The image is larger than allowed.")
            return data
        if slot.url is None:
            raise ProviderError("bad_image", "The result has neither a URL nor image data.")
        self._check_download_host(slot.url)
        response = send(
            self._session,
            "GET",
            slot.url,
            read_timeout=self.read_timeout,
            attempts=DOWNLOAD_ATTEMPTS,
            describe=_describe_download,
            stream=True,
        )
        with response:
            content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in ACCEPTED_IMAGE_TYPES:
                raise ProviderError(
                    "bad_image",
                    f"The image URL returned {content_type or 'no content type'}, not an image.",
                )
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_image_bytes:
                raise ProviderError("image_too_large", "The image is larger than allowed.")
            chunks, total = [], 0
            for chunk in response.iter_content(DOWNLOAD_CHUNK):
                total += len(chunk)
                if total > self.max_image_bytes:
                    raise ProviderError("image_too_large", "The image is larger than allowed.")
                chunks.append(chunk)
        return b"".join(chunks)

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
        return {"api-key": self._api_key}

    def _check_same_origin(self, url: str, what: str) -> None:
        # The key is sent to this URL, so it must belong to the configured resource: the same
        # origin, another Azure OpenAI API host over https, or loopback when the endpoint is a
        # local server (a test double may name itself "localhost" while we call it 127.0.0.1).
        if not self._is_trusted(url, AZURE_API_SUFFIXES):
            raise ProviderError(
                "untrusted_url",
                f"The {what} URL points at {urlsplit(url).netloc or url}, not at the configured "
                "endpoint; Atelier will not send the API key there.",
            )

    def _check_download_host(self, url: str) -> None:
        # Only Azure's documented blob host, the configured endpoint itself, or (for a local
        # endpoint such as the emulator) another loopback address. Never anywhere else: fetching
        # arbitrary URLs from a response would be server-side request forgery.
        if not self._is_trusted(url, (AZURE_BLOB_SUFFIX,)):
            raise ProviderError(
                "untrusted_url", f"Refused to download an image from {urlsplit(url).netloc or url}."
            )

    def _is_trusted(self, url: str, https_suffixes: tuple[str, ...]) -> bool:
        scheme, host, _ = origin = _origin(url)
        return (
            origin == self._endpoint_origin
            or (scheme == "https" and host.endswith(https_suffixes))
            or (_is_loopback(host) and _is_loopback(self._endpoint_origin[1]))
        )

    def _describe(self, response: requests.Response) -> ProviderError:
        code, message = error_body(response)
        status = response.status_code
        if status == 401 or status == 403:
            return ProviderError(
                "unauthorized",
                f"Azure rejected the API key (HTTP {status}). Check AZURE_OPENAI_API_KEY and "
                "AZURE_OPENAI_ENDPOINT." + (f" Azure said: {message}" if message else ""),
                status=status,
            )
        if status == 404:
            return ProviderError(
                "not_found",
                f"Azure answered 404 ({message or 'Resource not found'}). The asynchronous "
                f"DALL-E 2 API needs api-version {self.api_version} on this endpoint; it was "
                "retired on Azure in 2025, so only compatible servers still offer it.",
                status=status,
            )
        if status == 429:
            return ProviderError(
                "rate_limited",
                "Azure is rate-limiting requests (HTTP 429)." + (f" {message}" if message else ""),
                retryable=True,
                status=status,
            )
        if status >= 500 or status == 408:
            return ProviderError(
                "upstream_unavailable",
                f"Azure had a problem (HTTP {status})." + (f" {message}" if message else ""),
                retryable=True,
                status=status,
            )
        if code == "contentFilter":
            return ProviderError(
                "contentFilter", f"Azure refused this prompt: {message}", status=status
            )
        return ProviderError(
            code or f"http_{status}",
            f"Azure refused the request (HTTP {status}): {message or response.reason}",
            status=status,
        )


def _describe_download(response: requests.Response) -> ProviderError:
    status = response.status_code
    if 300 <= status < 400:
        return ProviderError(
            "bad_image", f"The image URL redirected (HTTP {status}); redirects are not followed."
        )
    if status in (403, 404):
        return ProviderError(
            "image_expired",
            f"The image URL is no longer valid (HTTP {status}); Azure keeps images 24 hours.",
            status=status,
        )
    return ProviderError(
        "download_failed",
        f"The image download failed (HTTP {status}).",
        retryable=status >= 500 or status in (408, 429),
        status=status,
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port or default_port


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def _json_object(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise ProviderError(
            "protocol_error", "Azure's answer was not valid JSON.", retryable=True
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(
            "protocol_error", "Azure's answer was not a JSON object.", retryable=True
        )
    return body


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
        data = body.get("data") if isinstance(body.get("data"), list) else []
    slots = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            item = {}
        error = item.get("error")
        if isinstance(error, dict) or not (item.get("url") or item.get("b64_json")):
            error = error if isinstance(error, dict) else {}
            slots.append(
                ImageSlot(
                    index=index,
                    error_code=str(error.get("code") or "missing"),
                    error_message=str(
                        error.get("message") or "The result has no image in this slot."
                    ),
                )
            )
            continue
        slots.append(
            ImageSlot(
                index=index,
                url=item.get("url") if isinstance(item.get("url"), str) else None,
                b64_json=item.get("b64_json") if isinstance(item.get("b64_json"), str) else None,
                revised_prompt=item.get("revised_prompt")
                if isinstance(item.get("revised_prompt"), str)
                else None,
            )
        )
    return slots
