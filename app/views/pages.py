"""Full HTML pages. Every form here works without JavaScript: POST, then 303 to a page."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import jobs, library
from app.validation import ValidationError
from app.views.forms import PromptForm
from app.views.helpers import job_action_errors

bp = Blueprint("pages", __name__)

GALLERY_PAGE_SIZE = 48
RECENT_JOBS = 12


@bp.get("/")
def index() -> str:
    return render_template("index.html", form=PromptForm(), jobs=library.recent_jobs(RECENT_JOBS))


@bp.post("/jobs")
def create_job() -> Response | tuple[str, int]:
    form = PromptForm()
    job = form.create_job()
    if job is None:
        page = render_template("index.html", form=form, jobs=library.recent_jobs(RECENT_JOBS))
        return page, 422
    return redirect(url_for("pages.job", job_id=job.id), 303)


@bp.get("/jobs/<int:job_id>")
def job(job_id: int) -> str:
    found = jobs.get_job(job_id)
    if found is None:
        abort(404, f"There is no job {job_id}.")
    return render_template("job.html", job=found)


@bp.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int) -> Response:
    with job_action_errors():
        jobs.cancel_job(job_id)
    return redirect(url_for("pages.job", job_id=job_id), 303)


@bp.post("/jobs/<int:job_id>/retry")
def retry(job_id: int) -> Response:
    with job_action_errors():
        new_job = jobs.retry_job(job_id)
    return redirect(url_for("pages.job", job_id=new_job.id), 303)


@bp.post("/jobs/<int:job_id>/delete")
def delete(job_id: int) -> Response:
    with job_action_errors():
        jobs.delete_job(job_id)
    return redirect(url_for("pages.index"), 303)


@bp.get("/gallery")
def gallery() -> str:
    try:
        page = library.gallery_page(
            limit=GALLERY_PAGE_SIZE,
            after=request.args.get("after"),
            before=request.args.get("before"),
        )
    except ValidationError as error:
        abort(400, error.message)
    return render_template("gallery.html", page=page)


@bp.get("/images/<int:image_id>")
def image(image_id: int) -> str:
    found = library.get_image(image_id)
    if found is None or found.file_name is None:
        abort(404, f"There is no image {image_id}.")
    newer, older = library.sibling_images(found)
    return render_template("image.html", image=found, job=found.job, newer=newer, older=older)
