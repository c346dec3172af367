"""Cost estimates shown before submitting.

`GET /costs/estimate?provider=..&size=..&n=..&quality=..` answers the `costs/_cost_estimate.html`
fragment: the table price of the job the form describes and what is left of the viewer's daily
image quota and monthly budget. The prompt form asks for it whenever one of its fields changes
(htmx, `hx-include="closest form"`); the first render includes the same fragment.
"""

from __future__ import annotations

from flask import Blueprint, current_app, make_response, render_template, request
from werkzeug.wrappers import Response

from app import pricing
from app.validation import ValidationError
from app.views.display import viewer_limits

bp = Blueprint("costs", __name__, url_prefix="/costs")


@bp.get("/estimate")
def estimate() -> Response:
    try:
        parsed = pricing.parse_estimate_request(request.args, current_app.config["ATELIER_TARGETS"])
    except ValidationError as error:
        body = render_template(
            "costs/_cost_estimate.html",
            estimate=None,
            error=error.message,
            limits=viewer_limits(),
        )
        return make_response(body, 422)
    body = render_template(
        "costs/_cost_estimate.html", estimate=parsed.cost, error=None, limits=viewer_limits()
    )
    return make_response(body)
