"""Azure's v1 routes, `POST /openai/v1/images/generations` and `/openai/v1/images/edits`
(azure-image-apis.md §3.6, §9).

Owns the routes' own rules: which `api-version` values they take (none is needed), and which
deployment a request means (its name travels in the body's or form's `model`, not in the
path). Everything after that, validation for the deployment's model, the prompt triggers and
the 200 body or event stream, is the deployment route's (`sync_api.generate_for_deployment`,
`sync_api.edit_for_deployment`), so both Azure routes answer alike. Authentication and
`apim-request-id` come from Azure's front door (gateway.py), as on every /openai path. OpenAI's
own routes, `/v1/images/...` (openai_api.py), are different paths with their own key; the two
never meet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date

from flask import Blueprint, Response, request

from .edit_requests import read_edit_form
from .errors import deployment_not_found, invalid_request, resource_not_found
from .image_requests import InvalidRequest, read_json_object
from .models import MODELS, ModelRules
from .request_log import log_request_fields, start_generate
from .state import emulator_state
from .sync_api import API_VERSION, Body, edit_for_deployment, generate_for_deployment

# "api-version is no longer a required parameter with the v1 GA API"; preview features take
# `?api-version=preview`, and third-party clients send `preview` or `v1` (azure-image-apis.md
# §3.6). Guess (UNCONFIRMED in azure-image-apis.md §3.6, §8, which cannot say whether v1
# rejects or ignores other values): no api-version, `preview`, `v1` or any well-formed dated
# version (YYYY-MM-DD or YYYY-MM-DD-preview) is accepted; anything else is "Resource not
# found", as an unsupported api-version is on the other routes.
NAMED_API_VERSIONS = frozenset({"preview", "v1"})
# What a 429's message calls the version when the request named none.
DEFAULT_API_VERSION_LABEL = "v1"

bp = Blueprint("emulator_azure_v1", __name__, url_prefix="/openai/v1")


def is_v1_api_version(version: str | None) -> bool:
    """Whether the v1 route takes this `api-version` query value (None: not sent)."""
    if version is None or version in NAMED_API_VERSIONS:
        return True
    match = API_VERSION.fullmatch(version)
    if match is None:
        return False
    try:
        date.fromisoformat(match.group(1))
    except ValueError:
        return False
    return True


@bp.before_request
def require_v1_api_version() -> Response | None:
    if not is_v1_api_version(request.args.get("api-version")):
        return resource_not_found()
    return None


@bp.post("/images/generations")
def create_images() -> Response:
    return _v1_route(read_json_object, lambda payload: payload, generate_for_deployment)


@bp.post("/images/edits")
def edit_images() -> Response:
    return _v1_route(read_edit_form, lambda form: form.fields, edit_for_deployment)


def _v1_route(
    read: Callable[[], Body],
    fields_of: Callable[[Body], Mapping[str, object]],
    answer: Callable[[ModelRules, Body, str, float], Response],
) -> Response:
    """A v1 request: its body read with `read`, its fields (`fields_of`) logged, the deployment
    they name in `model` found, then answered by the deployment route's `answer`."""
    started = start_generate()
    try:
        body = read()
    except InvalidRequest as invalid:
        return invalid_request(invalid.status, invalid.code, invalid.message, invalid.param)
    fields = fields_of(body)
    log_request_fields(dict(fields))
    model = _deployment_model(fields.get("model"))
    if isinstance(model, Response):
        return model
    return answer(model, body, _api_version_label(), started)


def _deployment_model(deployment: object) -> ModelRules | Response:
    """The model of the deployment named in `model`, or the error answer."""
    if not isinstance(deployment, str) or not deployment:
        # Guess (not in azure-image-apis.md): the answer to a v1 request without a deployment
        # name is a 400 naming `model`, in the envelope of the deployment route's other 400s.
        return invalid_request(
            400,
            "invalid_value",
            "'model' is required on /openai/v1 and must be the name of a deployment.",
            "model",
        )
    model_name = emulator_state().config.deployments.get(deployment)
    if model_name is None:
        # Guess (UNCONFIRMED in azure-image-apis.md §3.6): an unknown deployment name in `model`
        # gets the same DeploymentNotFound 404 as an unknown deployment in the path.
        return deployment_not_found()
    return MODELS[model_name]


def _api_version_label() -> str:
    """The version a 429's message names: the one sent, else "v1"."""
    return request.args.get("api-version") or DEFAULT_API_VERSION_LABEL
