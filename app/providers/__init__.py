"""Upstream image APIs behind one small interface.

Each provider module speaks one API; `build_provider` picks the one the configuration asks for.
The worker only sees the `Provider` protocol and `ProviderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from app.providers.azure_async import AzureAsyncProvider
from app.providers.base import ImageSlot, PollResult, ProviderError, Submitted

__all__ = ["ImageSlot", "PollResult", "Provider", "ProviderError", "Submitted", "build_provider"]


class Provider(Protocol):
    model: str

    def submit(self, prompt: str, size: str, n: int) -> Submitted: ...

    def poll(self, operation_url: str) -> PollResult: ...

    def fetch_image(self, slot: ImageSlot) -> bytes: ...

    def delete(self, operation_url: str) -> None: ...


def build_provider(config: Mapping[str, Any], endpoint: str, api_key: str) -> Provider:
    """The provider for `endpoint` (Azure's or the emulator's) with the configured limits."""
    return AzureAsyncProvider(
        endpoint,
        api_key,
        config["AZURE_OPENAI_API_VERSION"],
        read_timeout=config["ATELIER_HTTP_TIMEOUT_SECONDS"],
        max_image_bytes=config["ATELIER_MAX_IMAGE_BYTES"],
    )
