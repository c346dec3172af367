"""The synchronous image APIs' shared shape: one POST whose answer holds the images.

Azure's deployment route (azure-image-apis.md §3) and OpenAI's `/v1/images/generations` (§4)
take the same body and answer `{"created", "data": [...], "usage"?}`; the subclasses differ only
in URL, credentials and how they explain errors. The POST is never repeated after it may have
been sent (a read timeout has an unknown outcome and could bill twice); 429 and 5xx answers,
which did not generate anything, are retried a bounded number of times.
"""

from __future__ import annotations

import hmac
from typing import Any

import requests

from app.image_models import ImageModel
from app.providers.base import (
    Generation,
    GenerationRequest,
    ImageSlot,
    ProviderError,
    json_object,
    parse_slots,
    send,
)
from app.providers.download import ImageFetcher, pooled_session

GENERATE_ATTEMPTS = 3
SAFETY_ID_CHARS = 32  # OpenAI documents 64 characters at most for safety_identifier


def end_user_id(secret_key: str, owner_id: int | None) -> str | None:
    """The stable, salted hash of an account id that requests carry for abuse reports: the same
    account always maps to the same value, and the value reveals nothing about who it is."""
    if owner_id is None:
        return None
    digest = hmac.new(secret_key.encode(), f"safety-identifier:{owner_id}".encode(), "sha256")
    return "atelier-" + digest.hexdigest()[:SAFETY_ID_CHARS]


# Lossless PNG has no compression level in these APIs; sending one is refused upstream.
COMPRESSIBLE_FORMATS = ("jpeg", "webp")


class GenerationsProvider:
    synchronous = True
    service = "The image service"
    # Where the end user's hashed id goes for gpt-image models. Guess (§3.2 lists only `user` for
    # Azure; `safety_identifier` is OpenAI's, §9): Azure gets `user`. DALL-E always gets `user`.
    safety_field = "user"

    def __init__(
        self,
        url: str,
        model: ImageModel,
        *,
        fetch_origin: str,
        read_timeout: float = 60.0,
        generation_timeout: float = 300.0,
        max_image_bytes: int = 50 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.model = model
        self.generation_timeout = generation_timeout
        self._session = session or pooled_session()
        self._fetcher = ImageFetcher(
            self._session, fetch_origin, read_timeout=read_timeout, max_image_bytes=max_image_bytes
        )

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}(url={self.url!r}, model={self.model.name!r})"

    def generate(self, request: GenerationRequest) -> Generation:
        response = send(
            self._session,
            "POST",
            self.url,
            params=self._params(),
            headers=self._headers(),
            json=self._body(request),
            read_timeout=self.generation_timeout,
            attempts=GENERATE_ATTEMPTS,
            describe=self._describe,
            idempotent=False,
        )
        try:
            body = json_object(response, self.service)
        except ProviderError as error:
            # The generation happened (and was billed) but its answer is unreadable; sending it
            # again would bill again, so this is final.
            error.retryable = False
            raise
        slots = parse_slots(body.get("data"))
        if not slots:
            raise ProviderError(
                "empty_result", f"{self.service} answered without any image.", retryable=False
            )
        usage = body.get("usage")
        return Generation(slots=slots, usage=usage if isinstance(usage, dict) else None)

    def fetch_image(self, slot: ImageSlot) -> bytes:
        return self._fetcher.fetch(slot)

    def _body(self, request: GenerationRequest) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {"prompt": request.prompt, "n": request.n, "size": request.size}
        for option in self.model.options:
            if option.name not in options:
                continue
            if (
                option.name == "output_compression"
                and options.get("output_format") not in COMPRESSIBLE_FORMATS
            ):
                continue
            if not option.send_default and options[option.name] == option.default:
                continue
            body[option.name] = options[option.name]
        if request.end_user:
            body[self.safety_field if self.model.gpt_image else "user"] = request.end_user
        return body

    def _params(self) -> dict[str, str]:
        return {}

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _describe(self, response: requests.Response) -> ProviderError:
        raise NotImplementedError
