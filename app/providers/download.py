"""Fetching result images safely, and deciding which URLs a provider may touch.

Images come as base64 (decoded here) or as URLs. A URL is fetched only from a host the
provider legitimately returns: the configured endpoint itself, Azure's blob storage over https,
or, when the endpoint is a local server such as the emulator, another loopback address. Never
anywhere else (that would be server-side request forgery), never following redirects, with a
size cap and an image content type. The bytes are checked as images again by app.storage.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from urllib.parse import urlsplit

import requests
from flask import current_app, has_app_context
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter

from app.hosts import is_loopback
from app.providers.base import ImageSlot, ProviderError, backoff_delay, send

# Azure's documented blob host for generated images (`dalleprod*.blob.core.windows.net`);
# OpenAI's DALL-E URLs live on Azure blob storage too (`oaidalleapiprodscus.blob...`).
AZURE_BLOB_SUFFIX = ".blob.core.windows.net"
ACCEPTED_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_CHUNK = 64 * 1024

Origin = tuple[str, str, int | None]


def worker_threads() -> int:
    """ATELIER_WORKER_THREADS from the app's configuration, else from the environment."""
    if has_app_context():
        return int(current_app.config.get("ATELIER_WORKER_THREADS") or 0)
    raw = os.environ.get("ATELIER_WORKER_THREADS", "")
    return int(raw) if raw.isdigit() else 0


def pooled_session(threads: int | None = None) -> requests.Session:
    """A session whose connection pool per host holds a connection for every worker thread.

    requests' default pool keeps 10 connections per host; with more threads than that, urllib3
    warns "Connection pool is full" and throws connections away, so every extra request pays
    for a new TCP (and TLS) handshake.
    """
    size = max(DEFAULT_POOLSIZE, worker_threads() if threads is None else threads)
    session = requests.Session()
    adapter_options = {"pool_connections": DEFAULT_POOLSIZE, "pool_maxsize": size}
    session.mount("https://", HTTPAdapter(**adapter_options))
    session.mount("http://", HTTPAdapter(**adapter_options))
    return session


def origin(url: str) -> Origin:
    """(scheme, lower-case host, port with the scheme's default filled in)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port or default_port


def is_trusted(url: str, endpoint: Origin, https_suffixes: tuple[str, ...]) -> bool:
    """Same origin as the endpoint, an https host with one of the suffixes, or loopback when
    the endpoint is loopback too (a local server may call itself "localhost")."""
    scheme, host, _ = candidate = origin(url)
    return (
        candidate == endpoint
        or (scheme == "https" and host.endswith(https_suffixes))
        or (is_loopback(host) and is_loopback(endpoint[1]))
    )


class ImageFetcher:
    """Turns a result slot into image bytes, within the limits above."""

    def __init__(
        self,
        session: requests.Session,
        endpoint: str,
        *,
        read_timeout: float,
        max_image_bytes: int,
    ) -> None:
        self._session = session
        self._endpoint = origin(endpoint)
        self.read_timeout = read_timeout
        self.max_image_bytes = max_image_bytes

    def fetch(self, slot: ImageSlot) -> bytes:
        if slot.b64_json is not None:
            return self._decode(slot.b64_json)
        if slot.url is None:
            raise ProviderError("bad_image", "The result has neither a URL nor image data.")
        self.check_host(slot.url)
        # A body that breaks off is fetched again (the GET is idempotent), a bounded number of
        # times; `send` already retries failures before the body.
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                return self._download(slot.url)
            except ProviderError as error:
                if error.code != "download_broke_off" or attempt + 1 == DOWNLOAD_ATTEMPTS:
                    raise
                time.sleep(backoff_delay(attempt, None))
        raise AssertionError("unreachable")

    def _download(self, url: str) -> bytes:
        response = send(
            self._session,
            "GET",
            url,
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
                raise self._too_large()
            chunks, total = [], 0
            try:
                for chunk in response.iter_content(DOWNLOAD_CHUNK):
                    total += len(chunk)
                    if total > self.max_image_bytes:
                        raise self._too_large()
                    chunks.append(chunk)
            except requests.RequestException as error:
                raise ProviderError(
                    "download_broke_off",
                    f"The image download from {urlsplit(url).netloc} broke off "
                    f"({type(error).__name__}).",
                    retryable=True,
                ) from None
        return b"".join(chunks)

    def check_host(self, url: str) -> None:
        if not is_trusted(url, self._endpoint, (AZURE_BLOB_SUFFIX,)):
            raise ProviderError(
                "untrusted_url", f"Refused to download an image from {urlsplit(url).netloc or url}."
            )

    def _decode(self, data: str) -> bytes:
        # base64 is 4/3 the size of the bytes: refuse oversized data before decoding it.
        if len(data) * 3 // 4 > self.max_image_bytes + 3:
            raise self._too_large()
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError("bad_image", "The image data is not valid base64.") from None

    def _too_large(self) -> ProviderError:
        return ProviderError(
            "image_too_large",
            f"The image is larger than the {self.max_image_bytes} bytes allowed "
            "(ATELIER_MAX_IMAGE_BYTES).",
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
