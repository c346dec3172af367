"""HTML fragments for htmx, each at its own URL. Pages include the same templates."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    make_response,
    render_template,
    request,
    session,
)
from werkzeug.wrappers import Response

from app import jobs, library
from app.auth import sessions
from app.models import utcnow
from app.views import display
from app.views.forms import PromptForm
from app.views.gallery import CSRF_PLACEHOLDER, PageCache, end_read_transaction, with_csrf

bp = Blueprint("partials", __name__, url_prefix="/partials")


# Rendered cards by what they show: many tabs (or viewers) following one job share a render.
cards = PageCache(256)
# Card states of polled jobs by data version, so repeat polls between writes need no query.
states = PageCache(1024)


@bp.get("/jobs/<int:job_id>")
def job_card(job_id: int) -> Response:
    """The job's card. A repeat poll whose ETag still matches gets 304 Not Modified: at most one
    narrow query (none when nothing was written since the last poll), no render. Browsers keep
    the card (`private, no-cache`: stored, always revalidated) and hand the stored copy to htmx
    on a 304, so the card swaps in again and polls on; the final card has no trigger, so
    polling stops."""
    state = _card_state(job_id)
    if state is None:
        abort(404, f"There is no job {job_id}.")
    created_at, shown = state
    delay = display.delay_for_age((utcnow() - created_at).total_seconds())
    key = (g.get("viewer_key", ""), request.script_root, shown, str(delay))
    etag = card_etag(key)
    if request.if_none_match.contains(etag):
        response = make_response("", 304)
    else:
        response = make_response(with_csrf(_rendered_card(job_id, key, delay)))
        etag = card_etag(key)  # a new session has the card's CSRF token only now
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def _card_state(job_id: int) -> tuple[datetime, str] | None:
    """When the job was created and what its card shows (as a string), queried once per data
    version: no write has been committed since a kept state was read, so it is still what the
    database holds."""
    version = library.data_version()  # before the query: a state is never older than its key
    # Whose jobs the viewer may see (this query bypasses the ORM scoping): part of the key.
    owner = g.get("scope_owner_id")
    key = (job_id, version, owner)
    kept = states.get(key)
    if kept is None:
        state = library.card_state(job_id, owner)
        if state is None:
            return None
        kept = (state[0][4], repr(state))
        states.put(key, kept)
    return kept


def _rendered_card(job_id: int, key: tuple[str, ...], delay: int) -> str:
    """The card for this state, rendered once (with a CSRF placeholder)."""
    card = cards.get(key)
    if card is None:
        end_read_transaction()  # the render must not see older data than the state did
        job = jobs.get_job(job_id)
        if job is None:  # deleted since the state was read
            abort(404, f"There is no job {job_id}.")
        card = render_template(
            "_job_card.html", job=job, poll_seconds=delay, csrf_token=lambda: CSRF_PLACEHOLDER
        )
        cards.put(key, card)
    return card


def card_etag(key: tuple[str, ...]) -> str:
    """A digest of the card's key (its job's state, the polling delay it asks for, whose data
    the viewer sees), the session's CSRF token (the card's cancel form carries it; a stored card
    must not outlive its session) and a time slot (nor the token's time limit), signed with the
    app's secret key so nobody can guess the tag of a card they were never shown."""
    limit = current_app.config.get("WTF_CSRF_TIME_LIMIT", 3600)
    slot = int(time.time() // (limit / 2)) if limit else 0
    csrf_key = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    material = repr((key, session.get(csrf_key), slot))
    secret = str(current_app.secret_key or "").encode()
    return hmac.new(secret, material.encode(), hashlib.sha256).hexdigest()[:32]


@bp.post("/jobs")
def create_job() -> Response:
    """Create from the prompt form: the new card (201) plus a fresh form swapped out of band."""
    form = PromptForm()
    job = form.create_job(owner_id=sessions.current_user_id())
    if job is not None:
        # The fresh form keeps the provider and options; only the prompt starts empty.
        fresh = PromptForm(formdata=None, data={"provider": job.provider})
        body = render_template("_job_created.html", job=job, form=fresh)
        return make_response(body, 201)
    response = make_response(render_template("_prompt_form.html", form=form), 422)
    response.headers["HX-Retarget"] = "#prompt-form"
    response.headers["HX-Reswap"] = "outerHTML"
    return response


@bp.get("/model-options")
def model_options() -> str:
    """The size, number and option fields of the provider chosen in the form."""
    form = PromptForm(formdata=None, data={"provider": request.args.get("provider")})
    return render_template("_model_options.html", model=form.target.model, values={}, errors={})


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> str:
    try:
        job = jobs.cancel_job(job_id)
    except jobs.JobNotFound as error:
        abort(404, error.message)
    except jobs.JobConflict:
        job = jobs.get_job(job_id)  # it finished meanwhile: show how it ended
    return render_template("_job_card.html", job=job)
