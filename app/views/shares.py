"""Share links: a public page for one image or one collection, and its files.

`/s/<token>` needs no sign-in. The token is 32 random characters (192 bits), stored only as a
SHA-256 hash; a revoked or expired link answers 404, like a link that never existed. While a
share page is served, queries are scoped to the link's owner and every file is checked to
belong to the shared image or collection, so a link never opens anything else. With
ATELIER_STORAGE_REDIRECT=on a file the link may open is answered, after those checks, with a
redirect to a short-lived signed URL of that one object (app.views.content_files.send_stored).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from app import curation, library
from app.auth import scoping, sessions, shares
from app.models import CollectionImage, Image, ImageStatus, ShareLink, User, db
from app.parsing import parse_id, parse_whole_number
from app.validation import ValidationError
from app.views.content_files import send_content
from app.views.helpers import external_url

bp = Blueprint("shares", __name__)

MAX_SHARED_IMAGES = 500


@bp.post("/shares")
def create() -> tuple[str, int]:
    """Make a link to an image or a collection the viewer can see."""
    user = sessions.current_user()
    if user is None:
        # A link belongs to an account (it is listed and revoked on the account page); with
        # sign-in off there is none, and the server answers only this computer anyway.
        abort(404, "Share links need sign-in (ATELIER_AUTH=on); with sign-in off there are none.")
    image_id = _int(request.form.get("image_id"))
    collection_id = _int(request.form.get("collection_id"))
    if (image_id is None) == (collection_id is None):
        abort(400, "Share either one image or one collection.")
    if image_id is not None and library.get_image(image_id) is None:
        abort(404, f"There is no image {image_id}.")
    if collection_id is not None and curation.get_collection(collection_id) is None:
        abort(404, f"There is no collection {collection_id}.")
    days = parse_whole_number(request.form.get("days", "7").strip())
    if days is None:
        abort(400, "A link lasts 1, 7 or 30 days, or until it is revoked.")
    try:
        row, token = shares.create_share(
            user.id, image_id=image_id, collection_id=collection_id, days=days
        )
    except ValidationError as error:  # a stored image only, and 1, 7 or 30 days or none
        abort(400, error.message)
    url = external_url("shares.view", token=token)
    return render_template("shares/share_created.html", share=row, url=url), 201


@bp.post("/shares/<int:share_id>/revoke")
def revoke(share_id: int) -> Response:
    user = sessions.current_user()
    owner = None if user is None or user.is_admin else user.id
    if not shares.revoke_share(owner, share_id):
        abort(404, "There is no such link.")
    flash("Link revoked: it no longer opens anything.")
    return redirect(url_for("account.page") if user else url_for("pages.index"), 303)


@bp.get("/s/<token>")
def view(token: str) -> str:
    share = _share(token)
    images = _shared_images(share)
    collection = curation.get_collection(share.collection_id) if share.collection_id else None
    if share.image_id is not None and not images:
        abort(404, "This link does not open anything.")
    return render_template(
        "shares/shared.html", share=share, token=token, images=images, collection=collection
    )


@bp.get("/s/<token>/files/<name>")
def file(token: str, name: str) -> Response:
    share = _share(token)
    allowed = {image.id for image in _shared_images(share)}
    return send_content(name, lambda image: image.id in allowed)


def _share(token: str) -> ShareLink:
    share = shares.find_share(token)
    if share is None:
        abort(404, "This link does not exist, was revoked, or has expired.")
    # Everything below is looked up as the link's owner would see it.
    owner = db.session.get(User, share.user_id) if share.user_id else None
    scoping.set_scope(None if owner is None or owner.is_admin else owner.id)
    return share


def _shared_images(share: ShareLink) -> list[Image]:
    live = (Image.status == ImageStatus.STORED, Image.deleted_at.is_(None))
    if share.image_id is not None:
        statement = select(Image).where(Image.id == share.image_id, *live)
    else:
        in_collection = select(CollectionImage.image_id).where(
            CollectionImage.collection_id == share.collection_id
        )
        statement = (
            select(Image)
            .where(Image.id.in_(in_collection), *live)
            .order_by(Image.created_at.desc(), Image.id.desc())
            .limit(MAX_SHARED_IMAGES)
        )
    return list(db.session.scalars(statement))


def _int(raw: str | None) -> int | None:
    if raw is None or raw.strip() == "":
        return None
    value = parse_id(raw.strip())
    if value is None:
        abort(400, "An id is a whole number.")
    return value
