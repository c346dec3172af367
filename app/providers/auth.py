"""Credentials for Azure OpenAI: the resource key, or a Microsoft Entra ID bearer token.

Order: AZURE_OPENAI_API_KEY (`api-key` header), else AZURE_OPENAI_AD_TOKEN (`Authorization:
Bearer`), else a token from azure-identity's DefaultAzureCredential when that package is
installed (it caches and refreshes tokens itself). The secret never appears in `repr`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

# The scope Azure OpenAI tokens are issued for (azure-image-apis.md §1.2).
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


class AzureCredential:
    def __init__(
        self,
        *,
        api_key: str | None = None,
        token_provider: Callable[[], str] | None = None,
    ) -> None:
        if not api_key and token_provider is None:
            raise ValueError("an API key or a token provider is required")
        self._api_key = api_key
        self._token_provider = token_provider

    def __repr__(self) -> str:
        return f"AzureCredential({'api-key' if self._api_key else 'Entra ID token'})"

    def headers(self) -> dict[str, str]:
        if self._api_key:
            return {"api-key": self._api_key}
        assert self._token_provider is not None
        return {"Authorization": f"Bearer {self._token_provider()}"}


def azure_credential(settings: Mapping[str, Any]) -> AzureCredential:
    if settings.get("AZURE_OPENAI_API_KEY"):
        return AzureCredential(api_key=settings["AZURE_OPENAI_API_KEY"])
    token = settings.get("AZURE_OPENAI_AD_TOKEN")
    if token:
        return AzureCredential(token_provider=lambda: token)
    from azure.identity import DefaultAzureCredential, get_bearer_token_provider

    return AzureCredential(
        token_provider=get_bearer_token_provider(DefaultAzureCredential(), COGNITIVE_SERVICES_SCOPE)
    )
