"""Full HTML pages. Every form here works without JavaScript: POST, then 303 to a page."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import jobs, library, limits
from app.auth import sessions
from app.parsing import parse_id
from app.views import display
from app.views.forms import PromptForm, visible_images
from app.views.helpers import job_action_errors

bp = Blueprint("pages", __name__)

RECENT_JOBS = 12


@bp.get("/")
def index() -> str:
    """The prompt form; `?reuse=<job id>` prefills it from that job ("use this prompt");
    `?edit=<image id>` (repeatable) with those gallery images as references. An image the
    viewer may not see is left out, exactly like one that does not exist."""
    form = PromptForm()
    reuse = parse_id(request.args.get("reuse", ""))
    references = visible_images(request.args.getlist("edit"))
    if references:
        form = PromptForm.editing(references)
    elif reuse is not None and (source := jobs.get_job(reuse)) is not None:
        form = PromptForm.reusing(source)
    return _index_page(form)


@bp.post("/jobs")
def create_job() -> Response | tuple[str, int]:
    form = PromptForm()
    job = form.create_job(owner_id=sessions.current_user_id())
    if job is None:
        return _index_page(form), 422
    return redirect(url_for("pages.job", job_id=job.id), 303)


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    found = jobs.get_job(job_id)
    if found is None:
        abort(404, f"There is no job {job_id}.")
    return render_template("jobs/job.html", job=found, wait_reasons=limits.wait_reasons([found]))


def _index_page(form: PromptForm) -> str:
    recent = library.recent_jobs(RECENT_JOBS)
    return render_template(
        "jobs/index.html",
        form=form,
        jobs=recent,
        wait_reasons=limits.wait_reasons(recent),
        limits=display.viewer_limits(),
    )


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> Response:
    with job_action_errors():
        jobs.cancel_job(job_id)
    return redirect(url_for("pages.job", job_id=job_id), 303)


@bp.post("/jobs/<int:job_id>/retry")
def retry(job_id: int) -> Response:
    with job_action_errors():
        new_job = jobs.retry_job(job_id, owner_id=sessions.current_user_id())
    return redirect(url_for("pages.job", job_id=new_job.id), 303)


@bp.post("/jobs/<int:job_id>/again")
def again(job_id: int) -> Response:
    """Generate again: a new job with the same parameters, linked to this one."""
    with job_action_errors():
        new_job = jobs.generate_again(job_id, owner_id=sessions.current_user_id())
    return redirect(url_for("pages.job", job_id=new_job.id), 303)


@bp.post("/jobs/<int:job_id>/delete")
def delete(job_id: int) -> Response:
    with job_action_errors():
        jobs.delete_job(job_id)
    return redirect(url_for("pages.index"), 303)
