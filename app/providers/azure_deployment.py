"""Azure OpenAI's synchronous routes for DALL-E 3 and the gpt-image families.

Classic: `POST {endpoint}openai/deployments/{deployment}/images/generations?api-version=...`;
v1: `POST {endpoint}openai/v1/images/generations` with the deployment name in `model`
(azure-image-apis.md §3, §3.6, §9); edits at `images/edits` beside each. Both take the
`api-key` header or an Entra ID bearer token.
gpt-image models answer with `b64_json` and `usage`; DALL-E 3 with URLs on Azure blob storage, a
`revised_prompt` and per-image `content_filter_results`/`prompt_filter_results`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

from app.image_models import ImageModel
from app.providers.auth import AzureCredential
from app.providers.base import GenerationRequest, ProviderError, describe_error
from app.providers.generations import GenerationsProvider

DATED_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")


class AzureDeploymentProvider(GenerationsProvider):
    """Both Azure routes for one deployment: the classic `openai/deployments/{d}/...` one, and
    with `v1=True` the v1 API's `{endpoint}images/...`, deployment name in `model`."""

    service = "Azure"

    def __init__(
        self,
        endpoint: str,
        deployment: str,
        model: ImageModel,
        credential: AzureCredential,
        api_version: str,
        *,
        v1: bool = False,
        **limits: Any,
    ) -> None:
        endpoint = endpoint if endpoint.endswith("/") else endpoint + "/"
        if v1:
            images_url = f"{endpoint}images/"
            fetch_origin = endpoint.removesuffix("openai/v1/")
        else:
            images_url = f"{endpoint}openai/deployments/{quote(deployment, safe='')}/images/"
            fetch_origin = endpoint
        super().__init__(images_url, model, fetch_origin=fetch_origin, **limits)
        self.deployment = deployment
        self.api_version = api_version
        self.v1 = v1
        self._credential = credential

    def _params(self) -> dict[str, str]:
        if self.v1 and DATED_VERSION.fullmatch(self.api_version):
            # The v1 API needs no api-version (§3.6); a dated one is the classic route's, so it
            # is not sent. A non-dated one (`preview`) is: preview features need it.
            return {}
        return {"api-version": self.api_version}

    def _fields(self, request: GenerationRequest, *, streaming: bool) -> dict[str, Any]:
        fields = super()._fields(request, streaming=streaming)
        # The classic route takes the deployment from the path and ignores `model` (§3.1).
        return {"model": self.deployment, **fields} if self.v1 else fields

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
