"""HTML fragments for htmx, each at its own URL. Pages include the same templates."""

from __future__ import annotations

from flask import Blueprint, abort, make_response, render_template, request
from werkzeug.wrappers import Response

from app import jobs
from app.views.forms import PromptForm

bp = Blueprint("partials", __name__, url_prefix="/partials")


@bp.get("/jobs/<int:job_id>")
def job_card(job_id: int) -> str:
    job = jobs.get_job(job_id)
    if job is None:
        abort(404, f"There is no job {job_id}.")
    return render_template("_job_card.html", job=job)


@bp.post("/jobs")
def create_job() -> Response:
    """Create from the prompt form: the new card (201) plus a fresh form swapped out of band."""
    form = PromptForm()
    job = form.create_job()
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
