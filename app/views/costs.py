"""Cost estimates shown before submitting, and the cost helpers every job template uses.

`GET /costs/estimate?provider=..&size=..&n=..&quality=..` answers the `_cost_estimate.html`
fragment: the table price of the job the form describes and what is left of the viewer's daily
image quota and monthly budget. The prompt form asks for it whenever one of its fields changes
(htmx, `hx-include="closest form"`); the first render includes the same fragment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, current_app, make_response, render_template, request
from werkzeug.wrappers import Response

from app import limits, pricing
from app.auth import sessions
from app.image_models import ImageModel
from app.models import Job
from app.validation import ValidationError, form_size, parse_n, parse_options, parse_size

bp = Blueprint("costs", __name__, url_prefix="/costs")

COST_SOURCE_LABELS = {
    "estimate": "estimated",
    "table": "estimated",
    "usage": "from token usage",
}


@bp.get("/estimate")
def estimate() -> Response:
    try:
        parsed = pricing.parse_estimate_request(request.args, current_app.config["ATELIER_TARGETS"])
    except ValidationError as error:
        body = render_template("_cost_estimate.html", estimate=None, error=error.message)
        return make_response(body, 422)
    return make_response(render_template("_cost_estimate.html", estimate=parsed.cost, error=None))


@bp.app_context_processor
def _cost_helpers() -> dict[str, Any]:
    return {
        "job_cost": job_cost,
        "form_estimate": form_estimate,
        "viewer_limits": viewer_limits,
        "wait_reason": limits.wait_reason,
        "format_usd": pricing.format_usd,
    }


def job_cost(job: Job) -> str:
    """ "$0.04 estimated" / "$0.042 from token usage" / "cost unknown" (a model the price table
    does not list: never shown as $0)."""
    if job.cost_usd is None:
        return "cost unknown"
    label = COST_SOURCE_LABELS.get(job.cost_source or "", "estimated")
    return f"{pricing.format_usd(job.cost_usd)} {label}"


def form_estimate(model: ImageModel, values: Mapping[str, Any]) -> float | None:
    """The estimate for the form's current values, falling back to the model's defaults for a
    value that is not valid (the form itself reports that when it is sent)."""
    size, n, options = model.default_size, 1, model.option_defaults
    with contextlib.suppress(ValidationError):
        size = parse_size(form_size(values), model)
    with contextlib.suppress(ValidationError):
        n = parse_n(values.get("n"), model, from_form=True)
    with contextlib.suppress(ValidationError):
        options = parse_options(values, model, from_form=True)
    return pricing.known_estimate(model.name, size, n, options)


def viewer_limits() -> limits.Limits:
    return limits.limits_for(sessions.current_user())
