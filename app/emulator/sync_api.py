"""Azure's synchronous deployment API (azure-image-apis.md §3), for DALL-E and gpt-image.

Owns `POST /openai/deployments/{deployment}/images/generations?api-version=V` and
`.../images/edits?api-version=V` (multipart, gpt-image deployments only, edit_requests.py):
which api-versions carry them, which deployment serves which model, and
`generate_for_deployment` / `edit_for_deployment`, the part Azure's v1 route
(azure_v1_api.py) shares: validation, Azure's answer for each prompt trigger, and the 200 body
(DALL-E: URL or base64 plus `revised_prompt` and content-filter annotations per item;
gpt-image: base64 plus `usage`) or the event stream. Authentication and `apim-request-id` are
handled before these views run (see gateway.py).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from flask import Blueprint, Response, request

from .edit_requests import EditForm, parse_edit_request, read_edit_form
from .errors import (
    content_policy_violation,
    deployment_not_found,
    internal_server_error,
    invalid_request,
    legacy_content_filter,
    rate_limited,
    resource_not_found,
)
from .generation import (
    GeneratedImage,
    SyncAnswers,
    answer_generation,
    gpt_image_body,
    image_data,
)
from .image_requests import (
    AZURE,
    ImageRequest,
    InvalidRequest,
    parse_image_request,
    read_json_object,
)
from .models import MODELS, ModelRules
from .request_log import log_request_fields, start_generate
from .state import emulator_state
from .sync_triggers import SyncTrigger

# A request body as a deployment route reads it: a JSON object, or an edit's form.
Body = TypeVar("Body")

# The versions with this route (azure-image-apis.md §3.1, plus the later previews).
LISTED_API_VERSIONS = frozenset(
    {
        "2023-12-01-preview",
        "2024-02-01",
        "2024-02-15-preview",
        "2024-03-01-preview",
        "2024-04-01-preview",
        "2024-05-01-preview",
        "2024-06-01",
        "2024-07-01-preview",
        "2024-08-01-preview",
        "2024-09-01-preview",
        "2024-10-01-preview",
        "2024-10-21",
        "2024-12-01-preview",
        "2025-01-01-preview",
        "2025-02-01-preview",
        "2025-03-01-preview",
        "2025-04-01-preview",
    }
)
# Guess: every well-formed version from this date on carries the route too, so clients on
# versions newer than this list still work.
OPEN_ENDED_FROM = date(2025, 4, 1)
API_VERSION = re.compile(r"(\d{4}-\d{2}-\d{2})(-preview)?")
# The first version each model can be called with. DALL-E 2 got deployments in
# 2024-05-01-preview and gpt-image-1 arrived in 2025-04-01-preview (azure-image-apis.md §3.1).
# Guess: the same date for gpt-image-1-mini, gpt-image-1.5 and every later gpt-image model.
# Guess (UNCONFIRMED in azure-image-apis.md, which names no api-version for the gpt-image-2
# family: §9 says Azure-focused clients of 2026 use only the v1 route): gpt-image-2 and its
# successors work on the deployment route from 2025-04-01-preview on, like gpt-image-1.
FIRST_GPT_IMAGE_API_VERSION_DATE = date(2025, 4, 1)
FIRST_API_VERSION_DATE = {"dall-e-2": date(2024, 5, 1)}
# "The URL stays active for 24 hours" (azure-image-apis.md §3.3).
URL_LIFETIME_SECONDS = 86_400
# Guess: x-ratelimit-remaining-requests is sent on success (azure-image-apis.md §1.4) but the
# emulator does not count requests per minute; a fixed value keeps clients that read it happy.
REMAINING_REQUESTS = "59"

_SAFE = {"filtered": False, "severity": "safe"}
_NOT_DETECTED = {"detected": False, "filtered": False}
# Per-item annotations on DALL-E answers (azure-image-apis.md §3.3, §7 item 8).
CONTENT_FILTER_RESULTS = {"sexual": _SAFE, "violence": _SAFE, "hate": _SAFE, "self_harm": _SAFE}
PROMPT_FILTER_RESULTS = {
    **CONTENT_FILTER_RESULTS,
    "profanity": _NOT_DETECTED,
    "jailbreak": _NOT_DETECTED,
    "custom_blocklists": {"filtered": False, "details": []},
}

bp = Blueprint("emulator_sync", __name__, url_prefix="/openai/deployments")


def api_version_date(version: str | None) -> date | None:
    """The date of a version that carries this route; None for any other (or no) version."""
    match = API_VERSION.fullmatch(version or "")
    if match is None:
        return None
    try:
        day = date.fromisoformat(match.group(1))
    except ValueError:
        return None
    if version in LISTED_API_VERSIONS or day >= OPEN_ENDED_FROM:
        return day
    return None


@bp.before_request
def require_sync_api_version() -> Response | None:
    if api_version_date(request.args.get("api-version")) is None:
        # As on the async routes: a missing or unsupported api-version is "Resource not found"
        # (azure-image-apis.md §1.3).
        return resource_not_found()
    return None


@bp.post("/<deployment>/images/generations")
def create_images(deployment: str) -> Response:
    return _deployment_route(deployment, read_json_object, generate_for_deployment)


def generate_for_deployment(
    model: ModelRules, payload: dict[str, object], api_version: str, started: float
) -> Response:
    """Azure's answer to `payload` for a deployment of `model`: validation error, trigger or
    images. `api_version` is the version named in a 429's message; `started` is when the
    request arrived (time.monotonic()), for the latency."""
    log_request_fields(payload)
    try:
        image_request = parse_image_request(payload, model, AZURE)
    except InvalidRequest as invalid:
        return invalid_request(invalid.status, invalid.code, invalid.message, invalid.param)
    return answer_generation(image_request, started, _answers(api_version))


@bp.post("/<deployment>/images/edits")
def edit_images(deployment: str) -> Response:
    return _deployment_route(deployment, read_edit_form, edit_for_deployment)


def _deployment_route(
    deployment: str,
    read: Callable[[], Body],
    answer: Callable[[ModelRules, Body, str, float], Response],
) -> Response:
    """A deployment route's request: the deployment in the path must exist and the
    api-version must know its model; then the body is read with `read` and answered with
    `answer` (`generate_for_deployment` or `edit_for_deployment`)."""
    started = start_generate()
    api_version = request.args["api-version"]
    model_name = emulator_state().config.deployments.get(deployment)
    if model_name is None:
        return deployment_not_found()
    model = MODELS[model_name]
    too_old = _api_version_too_old(model, api_version)
    if too_old is not None:
        return too_old
    try:
        body = read()
    except InvalidRequest as invalid:
        return invalid_request(invalid.status, invalid.code, invalid.message, invalid.param)
    return answer(model, body, api_version, started)


def edit_for_deployment(
    model: ModelRules, form: EditForm, api_version: str, started: float
) -> Response:
    """Azure's answer to the edit `form` for a deployment of `model`, as
    `generate_for_deployment` answers a generation."""
    try:
        image_request = parse_edit_request(form, model, AZURE)
    except InvalidRequest as invalid:
        return invalid_request(invalid.status, invalid.code, invalid.message, invalid.param)
    return answer_generation(image_request, started, _answers(api_version))


def _answers(api_version: str) -> SyncAnswers:
    return SyncAnswers(
        url_lifetime=URL_LIFETIME_SECONDS,
        headers={"x-ratelimit-remaining-requests": REMAINING_REQUESTS},
        body_for=_success_body,
        # The 429's message names the api-version the request used.
        rate_limited=functools.partial(rate_limited, api_version),
        server_error=internal_server_error,
        refused=_refused,
    )


def _api_version_too_old(model: ModelRules, api_version: str) -> Response | None:
    first = (
        FIRST_GPT_IMAGE_API_VERSION_DATE
        if model.gpt_image
        else FIRST_API_VERSION_DATE.get(model.name)
    )
    version_date = api_version_date(api_version)
    if first is None or version_date is None or version_date >= first:
        return None
    # Guess (not in azure-image-apis.md): the status and body for a model called with an
    # api-version from before it existed.
    return invalid_request(
        400,
        "invalid_value",
        f"The model {model.name} is not supported with api-version {api_version}; use "
        f"api-version {first.isoformat()}-preview or later.",
        "api-version",
    )


def _refused(trigger: SyncTrigger, created: int) -> Response:
    if trigger is SyncTrigger.REFUSE_LEGACY:
        return legacy_content_filter(created, "Your task failed as a result of our safety system.")
    if trigger is SyncTrigger.REFUSE:
        return content_policy_violation()
    # FILTER_OUTPUT: the image was generated, then withheld.
    return legacy_content_filter(
        created, "Generated image was filtered as a result of our safety system."
    )


def _success_body(
    image_request: ImageRequest, images: list[GeneratedImage], created: int
) -> dict[str, object]:
    if image_request.model.gpt_image:
        return gpt_image_body(image_request, images, created)
    return {"created": created, "data": [_dalle_item(image) for image in images]}


def _dalle_item(image: GeneratedImage) -> dict[str, object]:
    """One DALL-E entry, keys in the order of the docs' example (azure-image-apis.md §3.3)."""
    item: dict[str, object] = {}
    if image.revised_prompt is not None:
        item["revised_prompt"] = image.revised_prompt
    item["prompt_filter_results"] = PROMPT_FILTER_RESULTS
    item.update(image_data(image))
    # Guess (UNCONFIRMED in azure-image-apis.md §3.3 for DALL-E 2 on this route): dall-e-2
    # deployments carry the same annotations as dall-e-3.
    item["content_filter_results"] = CONTENT_FILTER_RESULTS
    return item
