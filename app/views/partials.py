"""HTML fragments for htmx, each at its own URL (pages include the same templates), and the job
cards' watch (app.views.polling)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime

from flask import (
    Blueprint,
    abort,
    g,
    jsonify,
    make_response,
    render_template,
    request,
)
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from app import jobs, library, limits, page_cache
from app.auth import sessions
from app.models import utcnow
from app.views import display, polling
from app.views.forms import PromptForm
from app.views.helpers import api_error

bp = Blueprint("partials", __name__, url_prefix="/partials")


@bp.get("/jobs/<int:job_id>")
def job_card(job_id: int) -> Response:
    """The job's card. A repeat poll whose ETag still matches gets 304 Not Modified, decided
    before any query or render: the viewer's card state is kept per data version (a query only
    after a write), the delay and the ETag are arithmetic and one HMAC. Browsers keep the card
    (`private, no-cache`: stored, always revalidated) and hand the stored copy to htmx on a
    304, so the card swaps in again and polls on; the final card has no trigger, so polling
    stops."""
    state = _card_state(job_id)
    if state is None:
        abort(404, f"There is no job {job_id}.")
    created_at, shown = state
    age = (utcnow() - created_at).total_seconds()
    watched = request.headers.get(polling.WATCHED_HEADER) == "1"
    delay = polling.card_delay(age, job_id, watched)
    key = page_cache.key(job_id, shown, str(delay))
    etag = page_cache.etag(key)
    if request.if_none_match.contains(etag):
        response = make_response("", 304)
    else:
        digest = polling.state_digest(job_id, shown)
        response = make_response(page_cache.with_csrf(_rendered_card(job_id, key, delay, digest)))
        etag = page_cache.etag(key)  # a new session has the card's CSRF token only now
    response.set_etag(etag)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/jobs/watch")
def watch_cards() -> Response | tuple[Response, int]:
    """Wait until one of the named cards shows something else than the database holds, and
    name it (`changed`) with its new card (`cards`: job id -> HTML, as the card's own URL
    would answer a watched page; none for a job that is gone or not the viewer's, whose own
    URL answers 404), or up to `polling.WATCH_S` with nothing to name; `retry_ms` > 0 when no
    slot was free (poll meanwhile). Sending the card saves each watching tab a request per
    change."""
    try:
        cards = polling.parse_cards(request.args.get("cards", ""))
    except polling.BadWatch as error:
        return api_error(400, "bad_watch", str(error), field="cards")
    changed = polling.watch(cards, _shown, page_cache.end_read_transaction, _hang_up_check())
    retry_ms = polling.BUSY_RETRY_MS if changed is None else 0
    body = {"changed": changed or [], "cards": _watched_cards(changed or []), "retry_ms": retry_ms}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response


def _watched_cards(job_ids: list[int]) -> dict[str, str]:
    """The current cards of these jobs, as a watched page asks for them (shared renders)."""
    cards = {}
    for job_id in job_ids:
        state = _card_state(job_id)
        if state is None:
            continue
        created_at, shown = state
        delay = polling.card_delay((utcnow() - created_at).total_seconds(), job_id, True)
        key = page_cache.key(job_id, shown, str(delay))
        digest = polling.state_digest(job_id, shown)
        try:
            cards[str(job_id)] = page_cache.with_csrf(_rendered_card(job_id, key, delay, digest))
        except NotFound:  # deleted since: the page fetches the card, and learns it is gone
            continue
    return cards


def _hang_up_check() -> Callable[[], bool]:
    """Whether the client has closed the connection of this request: a peek at the socket the
    server hands the app, gunicorn's or Werkzeug's, bound now so that another thread may ask
    (False when there is none or it cannot be peeked at, such as a TLS socket: the watch then
    ends by its timeout)."""
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")

    def gone() -> bool:
        if sock is None:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError, ValueError):
            return False
        except OSError:
            return True

    return gone


def _shown(job_id: int) -> str | None:
    state = _card_state(job_id)
    return None if state is None else state[1]


def _card_state(job_id: int) -> tuple[datetime, str] | None:
    """When the job was created and what its card shows (as a string), queried once per data
    version: no write has been committed since a kept state was read, so it is still what the
    database holds."""
    version = page_cache.data_version()  # before the query: a state is never older than its key
    # Whose jobs the viewer may see (this query bypasses the ORM scoping): part of the key.
    owner = g.get("scope_owner_id")

    def query() -> tuple[datetime, str] | None:
        state = library.card_state(job_id, owner)
        return None if state is None else (state[0][4], repr(state))

    return page_cache.caches().states.get_or_make((job_id, version, owner), query)


def _rendered_card(job_id: int, key: tuple[str, ...], delay: int, digest: str) -> str:
    """The card for this state, rendered once (with a CSRF placeholder)."""

    def render() -> str:
        page_cache.end_read_transaction()  # the render must not see older data than the state
        job = jobs.get_job(job_id)
        if job is None:  # deleted since the state was read
            abort(404, f"There is no job {job_id}.")
        return render_template(
            "jobs/_job_card.html",
            job=job,
            wait_reasons=limits.wait_reasons([job]),
            poll_ms=delay,
            watch_state=digest,
            csrf_token=page_cache.placeholder_token,
        )

    return page_cache.caches().cards.get_or_make(key, render)


@bp.post("/jobs")
def create_job() -> Response:
    """Create from the prompt form: the new card (201) plus a fresh form swapped out of band."""
    form = PromptForm()
    job = form.create_job(owner_id=sessions.current_user_id())
    if job is not None:
        # The next form keeps the prompt, provider and options: the next try is an edit away.
        fresh = form.next_form()
        body = render_template(
            "jobs/_job_created.html",
            job=job,
            wait_reasons=limits.wait_reasons([job]),
            form=fresh,
            limits=display.viewer_limits(),
        )
        return make_response(body, 201)
    body = render_template("jobs/_prompt_form.html", form=form, limits=display.viewer_limits())
    response = make_response(body, 422)
    response.headers["HX-Retarget"] = "#prompt-form"
    response.headers["HX-Reswap"] = "outerHTML"
    return response


@bp.get("/model-options")
def model_options() -> str:
    """The size, number and option fields of the provider chosen in the form."""
    form = PromptForm(formdata=None, data={"provider": request.args.get("provider")})
    return render_template(
        "jobs/_model_options.html",
        model=form.target.model,
        values={},
        errors={},
        limits=display.viewer_limits(),
    )


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> str:
    try:
        job = jobs.cancel_job(job_id)
    except jobs.JobNotFound as error:
        abort(404, error.message)
    except jobs.JobConflict:
        job = jobs.get_job(job_id)  # it finished meanwhile: show how it ended
    return render_template("jobs/_job_card.html", job=job, wait_reasons=limits.wait_reasons([job]))
