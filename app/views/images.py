"""The image page: one stored image with its prompt, parameters, timings, the inputs it was made
from and its prompt family; the mask painter's form (an edit of this image, posted to /jobs);
and the star toggle (a plain form that 303s back, and its htmx partial at its own URL).

An image in the trash is still shown, with a notice and without the star, so the trash can link
to it; filtered or failed slots have no page (404).

The page takes the gallery's filter query (`GalleryFilters`): its newer/older neighbours are
picked inside that filter, and its links to other images keep it, so arrowing through a search
stays in the search.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import curation, library, lineage
from app.library import GalleryFilters
from app.models import Image, ImageStatus
from app.validation import ValidationError
from app.views.forms import edit_targets

bp = Blueprint("images", __name__)


@bp.errorhandler(ValidationError)
def _invalid(error: ValidationError) -> tuple[str, int]:
    """A filter query the gallery would refuse too (a bad date, status or collection id)."""
    return render_template("error.html", status=400, message=error.message), 400


def _shown_image(image_id: int) -> Image:
    image = library.get_image(image_id)
    if image is None or image.status != ImageStatus.STORED:
        abort(404, f"There is no image {image_id}.")
    return image


@bp.get("/images/<int:image_id>")
def page(image_id: int) -> str:
    image = _shown_image(image_id)
    filters = GalleryFilters.from_args(request.args)
    if filters.collection is not None and curation.get_collection(filters.collection) is None:
        abort(404, f"There is no collection {filters.collection}.")
    newer, older = library.sibling_images(image, filters)
    targets = edit_targets(current_app.config["ATELIER_TARGETS"])
    return render_template(
        "images/image.html",
        image=image,
        job=image.job,
        filter_args=filters.to_args(),
        family=lineage.family_of(image.job),
        newer=newer,
        older=older,
        # The mask painter's form: the providers that can edit, this job's first when it can.
        edit_targets=sorted(targets, key=lambda target: target.id != image.job.provider),
        idempotency_key=uuid.uuid4().hex,
    )


def _toggle_favorite(image_id: int) -> Image:
    image = curation.toggle_favorite(image_id)
    if image is None:
        abort(404, f"There is no image {image_id} to star.")
    return image


@bp.post("/images/<int:image_id>/favorite")
def favorite(image_id: int) -> Response:
    """Star or unstar without JavaScript, then back to the image."""
    _toggle_favorite(image_id)
    return redirect(url_for("images.page", image_id=image_id), 303)


@bp.post("/partials/images/<int:image_id>/star")
def star(image_id: int) -> str:
    """The same toggle for htmx: answers with the star form in its new state."""
    return render_template("images/_image_star.html", image=_toggle_favorite(image_id))
