"""OpenAI's own image API, `POST /v1/images/generations` and `POST /v1/images/edits`
(azure-image-apis.md §4, §9; edits are multipart, edit_requests.py).

Owns the routes, their bearer-key check (OpenAI's, not Azure's gateway: no api-key header, no
api-version, no `apim-request-id`), which model a request means, OpenAI's answer for each
prompt trigger and the 200 body (DALL-E: URL or base64, `revised_prompt` for dall-e-3;
gpt-image: base64 plus the resolved `background`, `output_format`, `quality`, `size` and
`usage`). No content-filter annotations: OpenAI has none (§4.3).
"""

from __future__ import annotations

import hmac
import uuid

from flask import Blueprint, Response, request

from . import openai_errors
from .edit_requests import parse_edit_request, read_edit_form
from .generation import (
    GeneratedImage,
    SyncAnswers,
    answer_generation,
    gpt_image_body,
    image_data,
    resolved_settings,
)
from .image_requests import (
    GPT_IMAGE_ONLY_FIELDS,
    OPENAI,
    ImageRequest,
    InvalidRequest,
    parse_image_request,
    read_json_object,
)
from .models import MODELS, ModelRules
from .request_log import log_request_fields, start_generate
from .state import emulator_state
from .sync_triggers import SyncTrigger

DEFAULT_MODEL = "dall-e-2"
# The model a request without `model` means when it sets a gpt-image-only field: "Defaults to
# dall-e-2 unless a gpt-image-only parameter is used" (azure-image-apis.md §4.2), and
# gpt-image-1 is the model that sentence was written about.
DEFAULT_GPT_IMAGE_MODEL = "gpt-image-1"
# "URLs are only valid for 60 minutes" (azure-image-apis.md §4.2).
URL_LIFETIME_SECONDS = 3600
# Guess (azure-image-apis.md §4.4 names these headers, not their values on success).
RATE_LIMIT_HEADERS = {
    "x-ratelimit-limit-requests": "5",
    "x-ratelimit-remaining-requests": "4",
    "x-ratelimit-reset-requests": "12s",
}

bp = Blueprint("emulator_openai", __name__, url_prefix="/v1")


@bp.before_request
def require_bearer_key() -> Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return openai_errors.missing_api_key()
    expected = emulator_state().config.openai_key
    if not hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8")):
        return openai_errors.incorrect_api_key(token)
    return None


@bp.after_request
def add_request_id(response: Response) -> Response:
    # OpenAI sends x-request-id on every answer (azure-image-apis.md §4.4); the format is ours.
    response.headers["x-request-id"] = f"req_{uuid.uuid4().hex}"
    return response


@bp.post("/images/generations")
def create_images() -> Response:
    started = start_generate()
    try:
        payload = read_json_object()
        log_request_fields(payload)
        model = _model_for(payload)
    except InvalidRequest as invalid:
        return _invalid(invalid)
    try:
        image_request = parse_image_request(payload, model, OPENAI)
    except InvalidRequest as invalid:
        if invalid.param == "size" and model.name == "dall-e-3":
            # dall-e-3's own body for a bad size, verbatim (azure-image-apis.md §3.4).
            return openai_errors.invalid_size()
        return _invalid(invalid)
    return answer_generation(image_request, started, ANSWERS)


@bp.post("/images/edits")
def edit_images() -> Response:
    started = start_generate()
    try:
        form = read_edit_form()
        # Guess (openai-python 3.51 names no default model for edits, which only gpt-image
        # models take): a form without `model` means gpt-image-1.
        model = _model_for(form.fields, default=DEFAULT_GPT_IMAGE_MODEL)
        image_request = parse_edit_request(form, model, OPENAI)
    except InvalidRequest as invalid:
        # Not _invalid: its stand-in for a body without a field to blame speaks of JSON.
        code = None if invalid.param is None else invalid.code
        return openai_errors.invalid_request(invalid.message, invalid.param, code, invalid.status)
    return answer_generation(image_request, started, ANSWERS)


def _model_for(payload: dict[str, object], default: str | None = None) -> ModelRules:
    """The model `payload` names; without one, `default`, else what OpenAI's generations
    default to."""
    name = payload.get("model")
    if name is None and default is not None:
        name = default
    if name is None:
        gpt_only = any(payload.get(field) is not None for field in GPT_IMAGE_ONLY_FIELDS)
        name = DEFAULT_GPT_IMAGE_MODEL if gpt_only else DEFAULT_MODEL
    if not isinstance(name, str) or name not in MODELS:
        supported = ", ".join(f"'{known}'" for known in MODELS)
        # Guess (not in azure-image-apis.md): 400 `invalid_value` naming `model`, like every
        # other bad field here, rather than the 404 `model_not_found` of OpenAI's chat route.
        raise InvalidRequest(
            f"Invalid value for 'model': {name!r}. Supported values are: {supported}.", "model"
        )
    return MODELS[name]


def _invalid(invalid: InvalidRequest) -> Response:
    if invalid.param is None and invalid.status == 400:
        # The body as a whole could not be read: OpenAI's generic parse error, code null.
        return openai_errors.invalid_request(openai_errors.UNPARSABLE_BODY_MESSAGE, None, None)
    code = None if invalid.param is None else invalid.code
    return openai_errors.invalid_request(invalid.message, invalid.param, code, invalid.status)


def _refused(trigger: SyncTrigger, created: int) -> Response:
    # OpenAI has one shape for REFUSE and REFUSE_LEGACY, and no separate "output filtered"
    # shape (azure-image-apis.md §4.4 only shows the policy violation), so a filtered image
    # answers like a refused prompt, after the generation time.
    return openai_errors.content_policy_violation()


def _success_body(
    image_request: ImageRequest, images: list[GeneratedImage], created: int
) -> dict[str, object]:
    if image_request.model.gpt_image:
        return gpt_image_body(image_request, images, created, **resolved_settings(image_request))
    return {"created": created, "data": [_dalle_item(image) for image in images]}


def _dalle_item(image: GeneratedImage) -> dict[str, object]:
    if image.revised_prompt is None:
        return image_data(image)
    return {"revised_prompt": image.revised_prompt, **image_data(image)}


ANSWERS = SyncAnswers(
    url_lifetime=URL_LIFETIME_SECONDS,
    headers=RATE_LIMIT_HEADERS,
    body_for=_success_body,
    rate_limited=openai_errors.rate_limited,
    server_error=openai_errors.server_error,
    refused=_refused,
)
