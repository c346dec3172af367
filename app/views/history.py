"""The jobs panel and history (/history) and the refusal ledger (/refusals).

The panel of queued and running jobs refreshes itself from /partials/history/active while any
job is active; the refreshed panel also replaces, out of band, the history rows of jobs that
finished meanwhile (the page tells the partial which rows it shows, so every swap has a
target). The history and the ledger are keyset-paged, with their filters in the URL.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Blueprint, abort, render_template, request
from werkzeug.datastructures import MultiDict

from app import jobs, library, refusals
from app.models import JobStatus, utcnow
from app.parsing import parse_id
from app.validation import ValidationError

bp = Blueprint("history", __name__)

PAGE_SIZE = 25
MAX_WATCHED = 100


@bp.errorhandler(ValidationError)
def _invalid(error: ValidationError) -> tuple[str, int]:
    return render_template("error.html", status=400, message=error.message), 400


def _text_arg(name: str) -> str:
    return (request.args.get(name) or "").strip()[:200]


def _paging_args() -> dict:
    return {
        "limit": library.parse_limit(request.args.get("limit"), PAGE_SIZE),
        "after": request.args.get("after") or None,
        "before": request.args.get("before") or None,
    }


def _filter_args(**values: str) -> dict[str, str]:
    """The filters to keep in paging links (empty ones left out, and the limit if given)."""
    kept = {key: value for key, value in values.items() if value}
    if request.args.get("limit"):
        kept["limit"] = request.args["limit"]
    return kept


@bp.get("/history", endpoint="jobs")
def jobs_page() -> str:
    status, q = _text_arg("status"), _text_arg("q")
    page = library.job_page(status=status or None, q=q or None, **_paging_args())
    return render_template(
        "history/history.html",
        page=page,
        status=status,
        q=q,
        filters=_filter_args(status=status, q=q),
        statuses=JobStatus.ALL,
        active=library.active_jobs(),
        rows=[job.id for job in page.items if not job.is_final],
        now=utcnow(),
    )


@bp.get("/partials/history/active")
def active() -> str:
    """The jobs panel, plus the history rows (named in `rows`) of jobs that have finished."""
    return _active_panel(_ids(request.args))


@bp.post("/partials/history/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> str:
    """Cancel from the panel with htmx; answers with the refreshed panel."""
    try:
        jobs.cancel_job(job_id)
    except jobs.JobNotFound as error:
        abort(404, error.message)
    except jobs.JobConflict:
        pass  # it finished meanwhile: the panel shows that
    return _active_panel(_ids(request.args))


def _ids(args: MultiDict) -> list[int]:
    raw = ",".join(args.getlist("rows")).split(",")
    ids = (parse_id(part.strip()) for part in raw)
    return [job_id for job_id in ids if job_id is not None][:MAX_WATCHED]


def _active_panel(row_ids: Iterable[int]) -> str:
    row_jobs = library.jobs_by_id(row_ids)
    return render_template(
        "history/_history_active.html",
        active=library.active_jobs(),
        finished_rows=[job for job in row_jobs if job.is_final],
        rows=[job.id for job in row_jobs if not job.is_final],
        now=utcnow(),
        oob=True,
    )


@bp.get("/refusals", endpoint="refusals")
def refusals_page() -> str:
    verdict, q = _text_arg("verdict"), _text_arg("q")
    page = refusals.ledger_page(verdict=verdict or None, q=q or None, **_paging_args())
    return render_template(
        "history/refusals.html",
        page=page,
        verdict=verdict,
        q=q,
        filters=_filter_args(verdict=verdict, q=q),
    )
