"""Azure OpenAI's deployment route for DALL-E 3 and the gpt-image-1 family (synchronous).

`POST {endpoint}openai/deployments/{deployment}/images/generations?api-version=...`, with the
`api-key` header or an Entra ID bearer token (azure-image-apis.md §3). gpt-image-1 answers with
`b64_json` and `usage`; DALL-E 3 with URLs on Azure blob storage, a `revised_prompt` and
per-image `content_filter_results`/`prompt_filter_results`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from app.image_models import ImageModel
from app.providers.auth import AzureCredential
from app.providers.base import ProviderError, describe_error
from app.providers.generations import GenerationsProvider


class AzureDeploymentProvider(GenerationsProvider):
    service = "Azure"

    def __init__(
        self,
        endpoint: str,
        deployment: str,
        model: ImageModel,
        credential: AzureCredential,
        api_version: str,
        **limits: Any,
    ) -> None:
        endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        url = f"{endpoint}openai/deployments/{quote(deployment, safe='')}/images/generations"
        super().__init__(url, model, fetch_origin=endpoint, **limits)
        self.deployment = deployment
        self.api_version = api_version
        self._credential = credential

    def _params(self) -> dict[str, str]:
        return {"api-version": self.api_version}

    def _headers(self) -> dict[str, str]:
        return self._credential.headers()

    def _describe(self, response: requests.Response) -> ProviderError:
        return describe_error(
            response,
            "Azure",
            credentials_hint=(
                "AZURE_OPENAI_API_KEY (or AZURE_OPENAI_AD_TOKEN) and AZURE_OPENAI_ENDPOINT"
            ),
            unauthorized_message=self._credential.unauthorized_message(response.status_code),
            not_found_hint=(
                f"Check that the deployment {self.deployment!r} exists on this resource "
                f"(AZURE_OPENAI_DEPLOYMENT) and that api-version {self.api_version} "
                "(AZURE_OPENAI_DEPLOYMENT_API_VERSION) offers image generation."
            ),
        )
