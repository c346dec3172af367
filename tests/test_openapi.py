"""The OpenAPI document at /api/openapi.json: valid OpenAPI 3.1, and true to the URL map both
ways (every /api route is described, and every described operation is a route)."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from app import openapi
from app.auth import accounts, tokens

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def _routes(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path, method) for every rule under /api/, `<int:job_id>` as `{job_id}`."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        found |= {(path, method) for method in rule.methods - IGNORED_METHODS}
    return found


def _described(document: dict) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_the_document_is_valid_openapi_3_1():
    document = openapi.document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_the_validator_refuses_a_broken_document():
    document = openapi.document()
    document["paths"]["/api/jobs"]["get"]["parameters"][0]["in"] = "body"  # OpenAPI 2 only
    with pytest.raises(OpenAPIValidationError):
        validate(document)


def test_every_api_route_is_described(app):
    missing = _routes(app) - _described(openapi.document())
    assert not missing, f"routes under /api/ the document lacks: {sorted(missing)}"


def test_every_described_operation_is_a_route(app):
    extra = _described(openapi.document()) - _routes(app)
    assert not extra, f"operations in the document that no route serves: {sorted(extra)}"


def test_the_api_serves_the_document(app, client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == openapi.document()


def test_the_document_needs_a_token_like_the_rest_of_the_api(app_factory):
    secure = app_factory(ATELIER_AUTH="on")
    with secure.app_context():
        user = accounts.create_user("reader", "correct-horse-battery-staple-9")
        _row, token = tokens.create_token(user.id, "docs")
    client = secure.test_client()
    anonymous = client.get("/api/openapi.json")
    assert anonymous.status_code == 401
    assert anonymous.get_json()["error"]["code"] == "unauthorized"
    with_token = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert with_token.status_code == 200
    assert with_token.get_json()["openapi"] == "3.1.0"
