"""GET /api/openapi.json: the OpenAPI description of the JSON API (app.openapi).

Under /api, so it needs a token like the rest of the API: whoever can call the API can read it,
and anyone else can read app/openapi.py in the source.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Blueprint, Response, jsonify

from app import openapi

bp = Blueprint("openapi", __name__, url_prefix="/api")


@functools.cache
def _document() -> dict[str, Any]:
    return openapi.document()


@bp.get("/openapi.json")
def document() -> Response:
    return jsonify(_document())
