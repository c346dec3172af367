"""Upstream image APIs behind two small interfaces.

One module per API: `azure_async` (the retired asynchronous DALL-E 2 API: submit, then poll an
operation), `azure_deployment` (Azure's classic deployment route and its v1 route) and
`openai_images` (synchronous: one POST answers with the images). `catalog` says which targets
are configured; `build_clients` makes one client per target. The worker sees only these
protocols and `ProviderError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from app.providers.auth import AzureCredential, azure_credential
from app.providers.azure_async import AzureAsyncProvider
from app.providers.azure_deployment import AzureDeploymentProvider
from app.providers.base import (
    Generation,
    GenerationRequest,
    ImageSlot,
    PollResult,
    ProviderError,
    Submitted,
)
from app.providers.catalog import AZURE_ASYNC, AZURE_DEPLOYMENT, AZURE_V1, Target
from app.providers.openai_images import OpenAIImagesProvider

__all__ = [
    "AsyncProvider",
    "Generation",
    "GenerationRequest",
    "ImageSlot",
    "PollResult",
    "Provider",
    "ProviderError",
    "Submitted",
    "SyncProvider",
    "build_clients",
]


class AsyncProvider(Protocol):
    synchronous: bool  # False

    def submit(self, prompt: str, size: str, n: int) -> Submitted: ...

    def poll(self, operation_url: str) -> PollResult: ...

    def fetch_image(self, slot: ImageSlot) -> bytes: ...

    def delete(self, operation_url: str) -> None: ...


class SyncProvider(Protocol):
    synchronous: bool  # True

    def generate(self, request: GenerationRequest) -> Generation: ...

    def fetch_image(self, slot: ImageSlot) -> bytes: ...


Provider = AsyncProvider | SyncProvider


def build_clients(
    config: Mapping[str, Any], emulator_url: str | None = None, emulator_key: str | None = None
) -> dict[str, Provider]:
    """One client per configured target, keyed by target id."""
    limits = {
        "read_timeout": config["ATELIER_HTTP_TIMEOUT_SECONDS"],
        "max_image_bytes": config["ATELIER_MAX_IMAGE_BYTES"],
    }
    generation_limits = {
        **limits,
        "generation_timeout": config["ATELIER_GENERATION_TIMEOUT_SECONDS"],
    }
    azure: AzureCredential | None = None
    clients: dict[str, Provider] = {}
    for target in config["ATELIER_TARGETS"]:
        if target.emulated:
            if emulator_url is None or emulator_key is None:
                raise ValueError("emulated targets need the emulator's URL and key")
            endpoint = f"{emulator_url}openai/v1/" if target.api == AZURE_V1 else emulator_url
            credential = AzureCredential(api_key=emulator_key)
            openai_base, openai_key = f"{emulator_url}v1/", emulator_key
        else:
            endpoint = config["AZURE_OPENAI_ENDPOINT"]
            if endpoint and azure is None:
                azure = azure_credential(config)
            credential = azure
            openai_base, openai_key = config["OPENAI_BASE_URL"], config["OPENAI_API_KEY"]
        clients[target.id] = _client(
            target, config, endpoint, credential, openai_base, openai_key, limits, generation_limits
        )
    return clients


def _client(
    target: Target,
    config: Mapping[str, Any],
    endpoint: str | None,
    credential: AzureCredential | None,
    openai_base: str,
    openai_key: str | None,
    limits: dict[str, Any],
    generation_limits: dict[str, Any],
) -> Provider:
    if target.api == AZURE_ASYNC:
        assert endpoint and credential
        return AzureAsyncProvider(
            endpoint, credential, config["AZURE_OPENAI_API_VERSION"], **limits
        )
    if target.api in (AZURE_DEPLOYMENT, AZURE_V1):
        assert endpoint and credential and target.deployment
        return AzureDeploymentProvider(
            endpoint,
            target.deployment,
            target.model,
            credential,
            config["AZURE_OPENAI_DEPLOYMENT_API_VERSION"],
            v1=target.api == AZURE_V1,
            **generation_limits,
        )
    assert openai_key
    return OpenAIImagesProvider(openai_base, openai_key, target.model, **generation_limits)
