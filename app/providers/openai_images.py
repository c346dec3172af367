"""OpenAI's own image API: `POST {base}images/generations` (and `images/edits`) with a bearer
key (§4, §9).

The model goes in the body. gpt-image models answer with `b64_json` and `usage`; DALL-E models
with URLs (valid for an hour) that are downloaded at once.
"""

from __future__ import annotations

from typing import Any

import requests

from app.image_models import ImageModel
from app.providers.base import GenerationRequest, ProviderError, describe_error
from app.providers.generations import GenerationsProvider


class OpenAIImagesProvider(GenerationsProvider):
    service = "OpenAI"

    def __init__(self, base_url: str, api_key: str, model: ImageModel, **limits: Any) -> None:
        base_url = base_url if base_url.endswith("/") else base_url + "/"
        super().__init__(f"{base_url}images/", model, fetch_origin=base_url, **limits)
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    # §9: on OpenAI, `safety_identifier` supersedes `user` for the gpt-image models.
    safety_field = "safety_identifier"

    def _fields(self, request: GenerationRequest, *, streaming: bool) -> dict[str, Any]:
        return {"model": self.model.name, **super()._fields(request, streaming=streaming)}

    def _describe(self, response: requests.Response) -> ProviderError:
        return describe_error(
            response,
            "OpenAI",
            credentials_hint="OPENAI_API_KEY",
            not_found_hint="Check OPENAI_BASE_URL and that your account offers this model.",
        )
