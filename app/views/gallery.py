"""The gallery: the image grid with its filters, favourites, collections, the trash, ZIP downloads.

*Edit* on a selection opens the prompt form with the selected images as references.

Every page URL carries the filters and the keyset cursor, so a reload, the back button or a
shared link shows the same place. Each mutation is a plain form that POSTs and comes back (303)
to the same gallery URL; htmx posts the same forms to the `/partials/...` twin of the URL and
swaps only what changed (a star button, the affected cells, a message).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    get_flashed_messages,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response

from app import curation, library, page_cache, storage, zipstream
from app.auth import sessions
from app.library import GalleryFilters, Page
from app.models import Collection, Image, ImageStatus, utcnow
from app.parsing import parse_id
from app.validation import ValidationError
from app.views.forms import MAX_REFERENCES

bp = Blueprint("gallery", __name__)

DEFAULT_PAGE_SIZE = 48
SEEN_COOKIE = "gallery_seen"
ONE_YEAR = 365 * 24 * 3600
# A flashed undo carries the ids in the session cookie, which must stay small.
MAX_UNDO_IDS = 300
RETURN_PATHS = ("/gallery", "/collections")


# Aspect classes: gallery.css has `.ar-N` for N in -ASPECT_STEPS..ASPECT_STEPS, each setting
# --ar to ASPECT_BASE ** N; the nearest one is within 2% of any ratio from 1:3 to 3:1.
ASPECT_BASE = 1.04
ASPECT_STEPS = 28


@bp.app_template_filter("aspect_class")
def aspect_class(image: Image) -> str:
    """The cell's aspect class, `ar-N` (`ar-m3` for N = -3), from the image's width and height."""
    if not image.width or not image.height:
        return "ar-0"
    steps = round(math.log(image.width / image.height) / math.log(ASPECT_BASE))
    steps = max(-ASPECT_STEPS, min(ASPECT_STEPS, steps))
    return f"ar-m{-steps}" if steps < 0 else f"ar-{steps}"


@bp.context_processor
def _viewer_assets() -> dict[str, bool]:
    """Whether static/viewer.js and viewer.css (the full-window viewer) are there to load: the
    gallery links them only then, so a checkout without them asks for no missing file."""
    static = Path(current_app.static_folder or "")
    return {"viewer_assets": (static / "viewer.js").is_file() and (static / "viewer.css").is_file()}


# --- pages --------------------------------------------------------------------------------------


@bp.get("/gallery")
def index() -> Response:
    """The gallery page. Its first page (no cursor) also says what is new since the last look."""
    first_page = not (request.args.get("after") or request.args.get("before"))
    seen = _seen_cookie() if first_page else None
    response = make_response(_cached_gallery(seen))
    if first_page:
        response.set_cookie(
            SEEN_COOKIE,
            _iso(utcnow()),
            max_age=ONE_YEAR,
            httponly=True,
            samesite="Lax",
        )
    return response


@bp.get("/partials/gallery")
def items() -> str:
    """The next page's cells and, when more follow, a new sentinel (for infinite scroll)."""
    filters, page = _gallery_page(request.args)
    return render_template("gallery/_gallery_items.html", **_grid_context(filters, page))


@bp.get("/partials/gallery/results")
def results() -> Response:
    """The first page of results for the filters (search as you type); the address bar follows."""
    filters, page = _gallery_page(request.args)
    response = make_response(
        render_template("gallery/_gallery_results.html", **_grid_context(filters, page))
    )
    response.headers["HX-Replace-Url"] = url_for("gallery.index", **filters.to_args())
    return response


# --- the page cache -----------------------------------------------------------------------------


def _cached_gallery(seen: datetime | None) -> str:
    """The gallery page, rendered once per URL, viewer, library version and "new" marker
    (app.page_cache says when a kept page goes stale); the CSRF token is filled in per answer."""
    if page_cache.message_waiting():
        return _render_gallery(request.args, seen=seen)
    page_cache.end_read_transaction()
    version = page_cache.library_version()  # before any query of the page: never newer than it
    seen = _effective_seen(seen)
    key = page_cache.key(request.full_path, version, seen.isoformat() if seen else "")
    page = page_cache.caches().pages.get_or_make(
        key,
        lambda: _render_gallery(request.args, seen=seen, csrf_token=page_cache.placeholder_token),
    )
    return page_cache.with_csrf(page)


def _effective_seen(seen: datetime | None) -> datetime | None:
    """None when no stored image is newer than `seen`: the page then shows no "new" marker
    whatever the cookie says, so every such visitor shares one cached page."""
    if seen is None:
        return None
    newest = library.newest_image_time()
    return None if newest is None or newest <= seen else seen


# --- favourites ---------------------------------------------------------------------------------


@bp.post("/gallery/images/<int:image_id>/favorite")
def favorite(image_id: int) -> Response:
    _set_favorite(image_id)
    return redirect(f"{_return_url()}#image-{image_id}", 303)


@bp.post("/partials/gallery/images/<int:image_id>/favorite")
def favorite_partial(image_id: int) -> str:
    starred = _set_favorite(image_id)
    return render_template(
        "gallery/_gallery_star.html", image_id=image_id, favorite=starred, next_url=_return_url()
    )


def _set_favorite(image_id: int) -> bool:
    """Star (`favorite=1`), unstar (`favorite=0`) or toggle (neither); returns the new state."""
    wanted = request.form.get("favorite")
    if wanted in ("1", "0"):
        image = library.get_image(image_id)
        if not _is_live(image):
            abort(404, f"There is no image {image_id} to star.")
        curation.set_favorite([image_id], wanted == "1")
        return wanted == "1"
    toggled = curation.toggle_favorite(image_id)
    if toggled is None:
        abort(404, f"There is no image {image_id} to star.")
    return toggled.favorite


# --- bulk actions on a selection ----------------------------------------------------------------


@bp.post("/gallery/bulk")
def bulk() -> Response:
    if request.form.get("action") == "edit":
        return redirect(_edit_url(), 303)
    outcome = _bulk_action()
    if outcome.message:
        undo = outcome.undo if len(outcome.undo) <= MAX_UNDO_IDS else []
        message = outcome.message + (
            "" if undo or not outcome.undo else " Restore them from the trash."
        )
        flash({"text": message, "undo": undo}, "gallery")
    anchor = f"#image-{outcome.ids[0]}" if outcome.keeps_cells and outcome.ids else ""
    return redirect(_return_url() + anchor, 303)


@bp.post("/partials/gallery/bulk")
def bulk_partial() -> Response | str:
    """The message for #gallery-message, plus the changed cells or stars out of band."""
    if request.form.get("action") == "edit":  # a page of its own: htmx goes there
        response = make_response("", 204)
        response.headers["HX-Redirect"] = _edit_url()
        return response
    outcome = _bulk_action()
    shown = library.images_by_ids(outcome.changed) if outcome.keeps_cells else []
    # A cell that leaves the view keeps its shape, so its justified row does not reflow.
    gone = [] if outcome.keeps_cells else library.images_by_ids(outcome.changed, live_only=False)
    return_to = _return_url()
    return render_template(
        "gallery/_gallery_bulk_result.html",
        outcome=outcome,
        images=shown,
        gone_shapes={image.id: aspect_class(image) for image in gone},
        filters=GalleryFilters.from_args(MultiDict(_query_of(return_to))),
        next_url=return_to,
        seen=None,
    )


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk action did, for the message and for the cells to redraw."""

    action: str
    ids: list[int]
    message: str
    changed: list[int] = field(default_factory=list)
    undo: list[int] = field(default_factory=list)
    # Cells that leave the current view get this note in their place; empty: they stay.
    removed_label: str = ""

    @property
    def keeps_cells(self) -> bool:
        return not self.removed_label


def _bulk_action() -> BulkOutcome:
    action = request.form.get("action", "")
    ids = _selected_ids(request.form.getlist("ids"))
    if action in ("favorite", "unfavorite"):
        starred = action == "favorite"
        count = curation.set_favorite(ids, starred)
        verb = "Starred" if starred else "Unstarred"
        return BulkOutcome(action, ids, f"{verb} {_images(count)}.", changed=ids)
    if action == "delete":
        moved = curation.trash(ids)
        message = (
            f"Moved {_images(len(moved))} to the trash."
            if moved
            else "Nothing was moved: the selected images are already in the trash."
        )
        return BulkOutcome(
            action, ids, message, changed=moved, undo=moved, removed_label="Moved to the trash"
        )
    if action in ("restore", "undo"):
        count = curation.restore(ids)
        message = f"Restored {_images(count)}."
        # Undo puts the cells back where they were; restoring from the trash view removes them.
        label = "" if action == "undo" else "Restored"
        return BulkOutcome(action, ids, message, changed=ids, removed_label=label)
    if action == "add":
        collection = _collection_from(request.form.get("collection_id"))
        added = curation.add_to_collection(collection.id, ids)
        message = f"Added {_images(added)} to {collection.name}."
        if added < len(ids):
            message += f" ({len(ids) - added} already there or not in the gallery.)"
        return BulkOutcome(action, ids, message, changed=ids)
    if action == "remove":
        collection = _collection_from(request.form.get("from_collection"))
        removed = curation.remove_from_collection(collection.id, ids)
        return BulkOutcome(
            action,
            ids,
            f"Removed {_images(removed)} from {collection.name}.",
            changed=ids,
            removed_label=f"Removed from {collection.name}",
        )
    raise ValidationError("action", "Choose what to do with the selected images.")


def _edit_url() -> str:
    """The prompt form with the selected images as references (`/?edit=...`)."""
    ids = _selected_ids(request.form.getlist("ids"))
    if len(ids) > MAX_REFERENCES:
        raise ValidationError(
            "ids", f"An edit takes at most {MAX_REFERENCES} images; {len(ids)} are selected."
        )
    return url_for("pages.index", edit=ids)


@bp.post("/gallery/trash/empty")
def empty_trash() -> Response:
    purged = curation.purge()
    flash({"text": f"Deleted {_images(purged)} for good.", "undo": []}, "gallery")
    return redirect(url_for("gallery.index", trash="1"), 303)


@bp.post("/gallery/zip")
def download_zip() -> Response:
    """The selected originals and a manifest, streamed as one ZIP file."""
    ids = _selected_ids(request.form.getlist("ids"))
    images = [image for image in library.images_by_ids(ids, live_only=False) if image.file_name]
    if not images:
        raise ValidationError("ids", "None of the selected images has a file to download.")
    # Originals and manifest.json by default; copies with the prompt embedded when asked for.
    with_prompt = request.form.get("with_prompt") == "1"
    stream = zipstream.image_archive(images, storage.current(), with_prompt=with_prompt)
    name = f"atelier-{len(images)}-image{'s' if len(images) != 1 else ''}.zip"
    response = Response(stream, mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "no-store"
    return response


# --- collections --------------------------------------------------------------------------------


def _collections_listed() -> list:
    """The viewer's own collections; an administrator asks for everyone's with ?owner=all."""
    user = sessions.current_user()
    everyone = bool(user and user.is_admin and request.args.get("owner") == "all")
    return library.collections_with_counts(sessions.current_user_id(), everyone=everyone)


@bp.get("/collections")
def collections() -> str:
    return render_template("gallery/collections.html", collections=_collections_listed())


@bp.post("/collections")
def create_collection() -> Response | tuple[str, int]:
    try:
        collection = curation.create_collection(
            request.form.get("name", ""), owner_id=sessions.current_user_id()
        )
    except ValidationError as error:
        page = render_template(
            "gallery/collections.html",
            collections=_collections_listed(),
            error=error.message,
            name=request.form.get("name", ""),
        )
        return page, 422
    flash({"text": f"Created the collection {collection.name}.", "undo": []}, "gallery")
    return redirect(url_for("gallery.collections"), 303)


@bp.post("/partials/collections")
def create_collection_partial() -> Response:
    """The collections section again: the new one listed, or the form with its error."""
    error, name, status = None, "", 201
    try:
        curation.create_collection(
            request.form.get("name", ""), owner_id=sessions.current_user_id()
        )
    except ValidationError as refused:
        error, name, status = refused.message, request.form.get("name", ""), 422
    body = render_template(
        "gallery/_collections.html", collections=_collections_listed(), error=error, name=name
    )
    response = make_response(body, status)
    if error:
        response.headers["HX-Retarget"] = "#collections"
        response.headers["HX-Reswap"] = "outerHTML"
    return response


@bp.post("/collections/<int:collection_id>/delete")
def delete_collection(collection_id: int) -> Response:
    collection = curation.get_collection(collection_id)
    if collection is None:
        abort(404, f"There is no collection {collection_id}.")
    name = collection.name
    curation.delete_collection(collection_id)
    flash({"text": f"Deleted the collection {name}; its images stay.", "undo": []}, "gallery")
    return redirect(url_for("gallery.collections"), 303)


# --- refused input ------------------------------------------------------------------------------


@bp.errorhandler(ValidationError)
def _refused(error: ValidationError) -> Response:
    if request.path.startswith("/partials/"):
        # htmx swaps 422 answers; the message goes where messages go, whatever was targeted.
        body = render_template("gallery/_gallery_notice.html", text=error.message, error=True)
        response = make_response(body, 422)
        response.headers["HX-Retarget"] = "#gallery-message"
        response.headers["HX-Reswap"] = "innerHTML"
        response.headers["HX-Replace-Url"] = "false"  # the address keeps the last good search
        return response
    if request.method == "GET":
        body = render_template(
            "gallery/gallery.html", **_empty_gallery_context(), error=error.message
        )
        return make_response(body, 400)
    # A refused form: show the gallery it came from, with the reason, and change nothing.
    return_to = _return_url()
    try:
        body = _render_gallery(
            MultiDict(_query_of(return_to)), error=error.message, next_url=return_to
        )
    except ValidationError:
        body = render_template(
            "gallery/gallery.html", **_empty_gallery_context(), error=error.message
        )
    return make_response(body, 422)


# --- helpers ------------------------------------------------------------------------------------


def _page_size() -> int:
    return int(current_app.config.get("GALLERY_PAGE_SIZE", DEFAULT_PAGE_SIZE))


def _gallery_page(args: Mapping[str, str]) -> tuple[GalleryFilters, Page]:
    filters = GalleryFilters.from_args(args)
    page = library.gallery_page(
        filters,
        limit=_page_size(),
        after=args.get("after") or None,
        before=args.get("before") or None,
    )
    return filters, page


def _grid_context(filters: GalleryFilters, page: Page, seen: datetime | None = None) -> dict:
    cursor = {key: value for key in ("after", "before") if (value := request.args.get(key))}
    return {
        "filters": filters,
        "page": page,
        "seen": seen,
        "next_url": url_for("gallery.index", **filters.to_args(), **cursor),
    }


def _render_gallery(
    args: Mapping[str, str],
    *,
    seen: datetime | None = None,
    error: str | None = None,
    next_url: str | None = None,
    csrf_token: Callable[[], str] | None = None,
) -> str:
    """The gallery page; `csrf_token`: what renders instead of the session's CSRF token."""
    filters, page = _gallery_page(args)
    collection = None
    if filters.collection is not None:
        collection = curation.get_collection(filters.collection)
        if collection is None:
            abort(404, f"There is no collection {filters.collection}.")
    context = _grid_context(filters, page, seen)
    if next_url is not None:  # re-rendered after a refused form: keep that page's URL
        context["next_url"] = next_url
    return render_template(
        "gallery/gallery.html",
        **context,
        collection=collection,
        collections=curation.own_collections(sessions.current_user_id()),
        choices=_filter_choices(filters),
        messages=get_flashed_messages(category_filter=["gallery"]),
        error=error,
        **({"csrf_token": csrf_token} if csrf_token else {}),
    )


def _empty_gallery_context() -> dict[str, Any]:
    filters = GalleryFilters()
    return {
        "filters": filters,
        "page": Page(items=[], next_cursor=None, prev_cursor=None),
        "seen": None,
        "next_url": url_for("gallery.index"),
        "collection": None,
        "collections": curation.own_collections(sessions.current_user_id()),
        "choices": _filter_choices(filters),
        "messages": [],
    }


def _filter_choices(filters: GalleryFilters) -> dict[str, list[str]]:
    """Models and sizes from the configured providers (no query), plus the ones asked for."""
    models: list[str] = []
    sizes: list[str] = []
    for target in current_app.config["ATELIER_TARGETS"]:
        if target.model.name not in models:
            models.append(target.model.name)
        sizes += [size for size in target.model.sizes if size not in sizes]
    if filters.model and filters.model not in models:
        models.append(filters.model)
    if filters.size and filters.size not in sizes:
        sizes.append(filters.size)
    return {"models": models, "sizes": sizes, "statuses": list(GalleryFilters.STATUSES)}


def _seen_cookie() -> datetime | None:
    raw = request.cookies.get(SEEN_COOKIE, "")
    try:
        seen = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return seen if seen.tzinfo else seen.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _selected_ids(raw: Iterable[str]) -> list[int]:
    values = [parse_id(value.strip()) for value in raw if value.strip()]
    if None in values:
        raise ValidationError("ids", "The selection must be image ids.")
    ids = sorted(set(values))
    if not ids:
        raise ValidationError("ids", "Select at least one image.")
    if len(ids) > curation.MAX_SELECTION:
        raise ValidationError("ids", f"Select at most {curation.MAX_SELECTION} images at a time.")
    return ids


def _collection_from(raw: str | None) -> Collection:
    if not raw:
        raise ValidationError("collection", "Choose a collection.")
    collection_id = parse_id(raw.strip())
    if collection_id is None or (collection := curation.get_collection(collection_id)) is None:
        raise ValidationError("collection", f"There is no collection {raw[:40]}.")
    return collection


def _is_live(image: Image | None) -> bool:
    return image is not None and image.status == ImageStatus.STORED and image.deleted_at is None


def _images(count: int) -> str:
    return f"{count} image{'' if count == 1 else 's'}"


def _return_url() -> str:
    """Where a form comes back to: its `next` field when that is a gallery or collections URL
    on this site, else the gallery (never another site)."""
    raw = request.form.get("next", "")
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or parts.path not in RETURN_PATHS or raw.startswith("//"):
        return url_for("gallery.index")
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)
