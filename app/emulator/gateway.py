"""What Azure's front door does for every `/openai` request, before any route sees it.

Owns authentication (`api-key`, or any Entra ID bearer token), the `apim-request-id` header
on every `/openai` response, and Azure-shaped answers for routes that do not exist. Route
blueprints (the async API, the deployment API) therefore only handle their own api-versions
and bodies. OpenAI's `/v1` route is not behind this front door (it checks its own key), but
an unknown `/v1` URL is answered here too, in OpenAI's shape, since routing happens app-wide.
"""

from __future__ import annotations

import hmac
import re
import uuid

from flask import Flask, Request, Response, g, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from .errors import access_denied, blob_not_found, resource_not_found
from .openai_errors import invalid_url
from .state import emulator_state

# Three base64url segments: the shape of a JWT, as Entra ID access tokens are.
JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Azure's v1 route: the plain OpenAI client sends the resource key as `Authorization: Bearer`.
AZURE_V1_PREFIX = "/openai/v1/"


def register_gateway(app: Flask) -> None:
    app.before_request(_authenticate)
    app.after_request(_add_request_id)
    app.register_error_handler(NotFound, _route_not_found)
    app.register_error_handler(MethodNotAllowed, _route_not_found)


def is_openai_path(path: str) -> bool:
    return path == "/openai" or path.startswith("/openai/")


def is_authorised(incoming: Request, api_key: str, *, bearer_may_be_key: bool = False) -> bool:
    """`api-key` decides when present; otherwise a non-empty bearer token is accepted.

    openai-python 1.x sends both `api-key: K` and `Authorization: Bearer K` (azure-image-apis.md
    §1.2), so the bearer value must not be required to be a JWT. Entra ID tokens are not
    verified: the emulator is a local test double with no tenant to check them against.

    `bearer_may_be_key` (Azure's v1 route): the plain OpenAI client sends the resource key as
    the bearer value there (azure-image-apis.md §3.6), so a bearer value is accepted only if it
    is the key or shaped like a JWT (an Entra ID token); any other value is a wrong key. Guess
    (UNCONFIRMED in azure-image-apis.md, §1.2 only allows "minimal JWT parsing"): how Azure
    tells a key from a token there. Other routes keep accepting any bearer value, as clients
    and tests send placeholder Entra ID tokens to them.
    """
    sent_key = incoming.headers.get("api-key")
    if sent_key is not None:
        return _same_key(sent_key, api_key)
    scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    if bearer_may_be_key:
        return _same_key(token, api_key) or JWT_SHAPE.fullmatch(token) is not None
    return True


def _same_key(sent: str, expected: str) -> bool:
    # Constant-time comparison, so the emulator is no worse an example than the real thing.
    return hmac.compare_digest(sent.encode("utf-8"), expected.encode("utf-8"))


def _authenticate() -> Response | None:
    if not is_openai_path(request.path):
        return None
    g.apim_request_id = str(uuid.uuid4())
    # Key checked before the route and api-version: a wrong key gets 401 on any /openai path.
    api_key = emulator_state().config.api_key
    on_v1 = request.path.startswith(AZURE_V1_PREFIX)
    if not is_authorised(request, api_key, bearer_may_be_key=on_v1):
        return access_denied()
    return None


def _add_request_id(response: Response) -> Response:
    if is_openai_path(request.path):
        response.headers["apim-request-id"] = g.get("apim_request_id") or str(uuid.uuid4())
    return response


def _route_not_found(error: HTTPException) -> Response | HTTPException:
    if is_openai_path(request.path):
        # Guess (UNCONFIRMED in azure-image-apis.md §1.3): a wrong method on a known path is
        # answered like an unknown route, since API Management matches method and path together.
        return resource_not_found()
    if request.path.startswith("/blobs/"):
        return blob_not_found()
    if request.path == "/v1" or request.path.startswith("/v1/"):
        return invalid_url(request.method, request.path)
    return error
