"""OpenAI's own image API, `POST /v1/images/generations` (azure-image-apis.md §4).

Owns the route, its bearer-key check (OpenAI's, not Azure's gateway: no api-key header, no
api-version, no `apim-request-id`), which model a request means, OpenAI's answer for each
prompt trigger and the 200 body (DALL-E: URL or base64, `revised_prompt` for dall-e-3;
gpt-image: base64 plus the resolved `background`, `output_format`, `quality`, `size` and
`usage`). No content-filter annotations: OpenAI has none (§4.3).
"""

from __future__ import annotations

import hmac
import time
import uuid

from flask import Blueprint, Response, request

from . import openai_errors
from .fault_responses import garbage_generation
from .generation import GeneratedImage, answer_with_images, wait_out_latency
from .image_requests import (
    GPT_IMAGE_ONLY_FIELDS,
    OPENAI,
    ImageRequest,
    InvalidRequest,
    parse_image_request,
    read_json_object,
)
from .models import AUTO_BACKGROUND, MODELS, ModelRules, resolved_quality, resolved_size, usage
from .request_log import log_request_fields, mark_request_kind
from .state import emulator_state
from .sync_triggers import SyncTrigger, sync_trigger_for_prompt

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
    mark_request_kind("generate")
    started = time.monotonic()
    state = emulator_state()
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

    # Guess: triggers act only on valid requests (the real gateway would throttle before it
    # validates, but the emulator needs a valid prompt to find the trigger in).
    trigger = sync_trigger_for_prompt(image_request.prompt)
    if trigger is not None:
        answer = _answer_trigger(trigger, image_request.prompt, started)
        if answer is not None:
            return answer

    response = answer_with_images(
        state,
        image_request,
        started,
        base_url=state.config.public_url or request.host_url,
        url_lifetime=URL_LIFETIME_SECONDS,
        body_for=_success_body,
    )
    response.headers.update(RATE_LIMIT_HEADERS)
    return response


def _model_for(payload: dict[str, object]) -> ModelRules:
    name = payload.get("model")
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


def _answer_trigger(trigger: SyncTrigger, prompt: str, started: float) -> Response | None:
    """The error a trigger asks for; None when it lets the request through."""
    state = emulator_state()
    retry_seconds = state.config.rate_limit_retry_seconds
    if trigger is SyncTrigger.RATE_LIMIT_ALWAYS:
        return openai_errors.rate_limited(retry_seconds)
    if trigger is SyncTrigger.NO_RETRY:
        return openai_errors.rate_limited(retry_seconds, should_retry=False)
    if trigger in (SyncTrigger.RATE_LIMIT_ONCE, SyncTrigger.SERVER_ERROR_ONCE):
        if not state.fault_memory.first_time(trigger.value, prompt):
            return None
        if trigger is SyncTrigger.RATE_LIMIT_ONCE:
            return openai_errors.rate_limited(retry_seconds)
        return openai_errors.server_error()
    if trigger is SyncTrigger.HANG:
        time.sleep(state.config.hang_seconds)
        return openai_errors.server_error()
    if trigger is SyncTrigger.FAIL:
        return openai_errors.server_error()
    if trigger is SyncTrigger.GARBAGE:
        wait_out_latency(started, state.config.latency)
        return garbage_generation(int(state.store.clock()))
    if trigger is SyncTrigger.FILTER_OUTPUT:
        # OpenAI has no separate "output filtered" shape (azure-image-apis.md §4.4 only shows the
        # policy violation), so a filtered image answers like a refused prompt, after the
        # generation time.
        wait_out_latency(started, state.config.latency)
    # REFUSE and REFUSE_LEGACY: OpenAI has one shape for both.
    return openai_errors.content_policy_violation()


def _success_body(
    image_request: ImageRequest, images: list[GeneratedImage], created: int
) -> dict[str, object]:
    if image_request.model.gpt_image:
        background = image_request.background
        return {
            "created": created,
            "data": [{"b64_json": image.b64_json} for image in images],
            # The values the model actually used, `auto` resolved (azure-image-apis.md §4.3).
            "background": AUTO_BACKGROUND if background == "auto" else background,
            "output_format": image_request.output_format,
            "quality": resolved_quality(image_request.quality),
            "size": resolved_size(image_request.size),
            "usage": usage(
                image_request.prompt, image_request.quality, image_request.size, image_request.n
            ),
        }
    return {"created": created, "data": [_dalle_item(image) for image in images]}


def _dalle_item(image: GeneratedImage) -> dict[str, object]:
    item: dict[str, object] = {}
    if image.revised_prompt is not None:
        item["revised_prompt"] = image.revised_prompt
    if image.url is not None:
        item["url"] = image.url
    else:
        item["b64_json"] = image.b64_json
    return item
