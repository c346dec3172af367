"""What the emulator's own tests share as its clients: Azure's exact answers, the sign-in headers
Azure's gateway accepts and refuses, clearing the request log, and sessions that send a key.

Each test module keeps its own keys (its emulator is configured with them); what is here is the
same whatever the key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from app.emulator import EmulatorConfig, EmulatorServer

TIMEOUT = 5  # seconds for every HTTP call, so a hung emulator fails the test instead
ACCESS_DENIED = (
    '{"error":{"code":"401","message":"Access denied due to invalid subscription key or '
    "wrong API endpoint. Make sure to provide a valid key for an active subscription and "
    'use a correct regional API endpoint for your resource."}}'
)
RESOURCE_NOT_FOUND = '{"error":{"code":"404","message": "Resource not found"}}'
# A JSON body just over the 1 MiB every route accepts.
OVER_1_MIB = json.dumps({"prompt": "x", "user": "u" * (1024 * 1024)})

# Headers Azure's gateway refuses with ACCESS_DENIED (a parametrize list).
REFUSED_SIGN_INS = [
    pytest.param({}, id="missing-key"),
    pytest.param({"api-key": "not-the-key"}, id="wrong-key"),
    pytest.param(
        {"api-key": "not-the-key", "Authorization": "Bearer token"}, id="wrong-with-bearer"
    ),
]


def accepted_sign_ins(api_key: str) -> list[Any]:
    """Headers Azure's gateway accepts other than `api-key` alone (a parametrize list)."""
    return [
        pytest.param({"Authorization": "Bearer some-entra-id-token"}, id="bearer-without-api-key"),
        # What openai-python 1.x AzureOpenAI sends when given an API key.
        pytest.param(
            {"api-key": api_key, "Authorization": f"Bearer {api_key}"}, id="api-key-with-bearer"
        ),
    ]


def serving(settings: dict[str, Any], **overrides: Any) -> Iterator[EmulatorServer]:
    """A fixture's body: an emulator on `settings` (with `overrides`) until the fixture ends."""
    with EmulatorServer(EmulatorConfig(**{**settings, **overrides})) as server:
        yield server


def post_signed_in(url: str, headers: dict[str, str]) -> requests.Response:
    """POST a minimal generation body to `url` sending only `headers` to sign in."""
    return requests.post(url, json={"prompt": "x"}, headers=headers, timeout=TIMEOUT)


def assert_access_denied(response: requests.Response) -> None:
    """Azure's gateway refused the key: 401, its exact body, and a request id."""
    assert response.status_code == 401
    assert response.text == ACCESS_DENIED
    assert uuid.UUID(response.headers["apim-request-id"])


def assert_resource_not_found(response: requests.Response) -> None:
    """Azure's plain 404 for a route, api-version or operation it does not know."""
    assert response.status_code == 404
    assert response.text == RESOURCE_NOT_FOUND


def assert_azure_429(response: requests.Response, operation: str, api_version: str) -> None:
    """Azure's throttling answer with the default wait (1 s), said the same way in both retry
    headers and in the message, which names the operation and the api-version."""
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    error = response.json()["error"]
    assert error["code"] == "429"
    assert error["message"].startswith(
        f"Requests to the {operation} Operation under Azure OpenAI API version {api_version} "
        "have exceeded call rate limit of your current OpenAI S0 pricing tier. "
        "Please retry after 1 second."
    )


def reset(server: EmulatorServer) -> EmulatorServer:
    """The emulator with its request log (and so its counts) cleared."""
    requests.post(f"{server.url}_emulator/reset", timeout=TIMEOUT).raise_for_status()
    return server


def session_fixture(headers: dict[str, str] | None = None) -> Any:
    """A fixture (named by the module attribute it is assigned to): a session that sends
    `headers` with every request, closed after the test."""

    @pytest.fixture
    def session() -> Iterator[requests.Session]:
        with requests.Session() as session:
            session.headers.update(headers or {})
            yield session

    return session


def post_raw(
    session: requests.Session, url: str, data: bytes | str, content_type: str = "application/json"
) -> requests.Response:
    """POST `data` as it is, with the given Content-Type."""
    return session.post(url, data=data, headers={"Content-Type": content_type}, timeout=TIMEOUT)
