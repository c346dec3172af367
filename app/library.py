"""Read-only queries the views need: recent jobs, job lists, gallery pages, image files.

Paging is keyset paging on (created_at, id), newest first, with an opaque cursor, so a page
deep in a large library costs the same as the first and new jobs never shift a page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, tuple_
from sqlalchemy.orm import contains_eager, selectinload

from app import search
from app.models import Collection, CollectionImage, Image, ImageStatus, Job, JobStatus, db
from app.parsing import parse_id, parse_whole_number
from app.validation import ValidationError

MAX_PAGE_SIZE = 100
# Up to this many matching jobs, a search starts from the matches instead of the gallery order.
FEW_MATCHES = 500


@dataclass(frozen=True)
class Page:
    items: list[Any]
    next_cursor: str | None  # older items
    prev_cursor: str | None  # newer items


def encode_cursor(created_at: datetime, item_id: int) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_text, id_text = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        created, item_id = datetime.fromisoformat(created_text), parse_id(id_text)
        # Our cursors carry UTC; a time without a zone, or one outside the calendar once in
        # UTC, is no cursor of ours.
        if created.tzinfo is None or item_id is None:
            raise ValueError(created_text)
        return created.astimezone(UTC), item_id
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "cursor", "The cursor is not valid; start again from page 1."
        ) from None


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    limit = parse_whole_number(raw.strip(), MAX_PAGE_SIZE)
    if limit is None or limit < 1:
        raise ValidationError(
            "limit", f"The limit must be a whole number from 1 to {MAX_PAGE_SIZE}."
        )
    return limit


def _keyset_page(
    statement: Any, model: Any, limit: int, after: str | None, before: str | None
) -> Page:
    """Newest first. `after`: items older than the cursor; `before`: items newer than it."""
    if after and before:
        raise ValidationError("cursor", "Give either a next or a previous cursor, not both.")
    newer_first = (model.created_at.desc(), model.id.desc())
    if before:
        created, item_id = decode_cursor(before)
        # A row-value comparison lets SQLite use the (created_at, id) index as a range.
        statement = statement.where(
            tuple_(model.created_at, model.id) > (created, item_id)
        ).order_by(model.created_at.asc(), model.id.asc())
        rows = list(db.session.scalars(statement.limit(limit + 1)))
        has_newer = len(rows) > limit
        items = list(reversed(rows[:limit]))
        return Page(
            items=items,
            next_cursor=_cursor_of(items[-1]) if items else None,
            prev_cursor=_cursor_of(items[0]) if items and has_newer else None,
        )
    if after:
        created, item_id = decode_cursor(after)
        statement = statement.where(tuple_(model.created_at, model.id) < (created, item_id))
    rows = list(db.session.scalars(statement.order_by(*newer_first).limit(limit + 1)))
    items = rows[:limit]
    return Page(
        items=items,
        next_cursor=_cursor_of(items[-1]) if len(rows) > limit else None,
        prev_cursor=_cursor_of(items[0]) if items and after else None,
    )


def _cursor_of(item: Any) -> str:
    return encode_cursor(item.created_at, item.id)


# What every list of jobs loads with them, one query each for the whole list: a job card and
# `job_json` show each job's images and its edit inputs.
JOB_LIST_LOADS = (selectinload(Job.images), selectinload(Job.inputs))


def recent_jobs(limit: int = 12) -> list[Job]:
    statement = (
        select(Job)
        .options(*JOB_LIST_LOADS)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def job_page(
    *, status: str | None, q: str | None, limit: int, after: str | None, before: str | None = None
) -> Page:
    statement = select(Job).options(*JOB_LIST_LOADS)
    if status:
        if status not in JobStatus.ALL:
            raise ValidationError(
                "status", f"The status must be one of {', '.join(JobStatus.ALL)}."
            )
        statement = statement.where(Job.status == status)
    if q:
        condition = search.matches(q)
        if condition is not None:
            statement = statement.where(condition)
    return _keyset_page(statement, Job, limit, after, before)


def active_jobs(limit: int = 50) -> list[Job]:
    """Queued and running jobs, oldest first (the jobs panel)."""
    statement = (
        select(Job)
        .options(*JOB_LIST_LOADS)
        .where(Job.status.in_(JobStatus.ACTIVE))
        .order_by(Job.created_at.asc(), Job.id.asc())
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def jobs_by_id(job_ids: Iterable[int]) -> list[Job]:
    """These jobs (those that still exist), newest first, with their images."""
    ids = set(job_ids)
    if not ids:
        return []
    statement = (
        select(Job)
        .options(*JOB_LIST_LOADS)
        .where(Job.id.in_(ids))
        .order_by(Job.created_at.desc(), Job.id.desc())
    )
    return list(db.session.scalars(statement))


def card_state(job_id: int, owner_id: int | None = None) -> tuple[Any, ...] | None:
    """Everything about a job that its card shows and that can change, in one narrow query:
    the job's status, phase, error and times and each image's id, status, file and size.
    None when there is no such job, or (with `owner_id`) when it is not that owner's. A repeat
    poll compares a digest of this with its ETag instead of loading and rendering the job."""
    # Straight on a pooled connection: the request's ORM session would cost more than the query.
    # That also skips the request's ORM scoping (app.auth.scoping), hence the explicit owner filter.
    parameters = {"job_id": job_id, "owner_id": owner_id}
    with db.engine.connect() as connection:
        rows = connection.execute(_card_state_query(owner_id is not None), parameters).all()
    return tuple(tuple(row) for row in rows) or None


@cache
def _card_state_query(owned: bool) -> Any:
    """Built once: polls are frequent, and building a statement costs more than running it."""
    statement = _card_state_select()
    return statement.where(Job.owner_id == bindparam("owner_id")) if owned else statement


def _card_state_select() -> Any:
    return (
        select(
            Job.status,
            Job.phase,
            Job.error_code,
            Job.error_message,
            Job.created_at,
            Job.finished_at,
            Image.id,
            Image.status,
            Image.file_name,
            Image.width,
            Image.height,
            Image.error_message,
            # A new streamed frame changes the card (its preview) while nothing else does.
            Job.preview_index,
        )
        .outerjoin(Image, Image.job_id == Job.id)
        .where(Job.id == bindparam("job_id"))
        .order_by(Image.index)
    )


REFUSAL_VERDICTS = ("prompt", "image")


def refusal_page(
    *, verdict: str | None, q: str | None, limit: int, after: str | None, before: str | None
) -> Page:
    """Jobs the safety system stopped, newest first: the prompt refused (failed with
    `contentFilter` and no filtered image) or some images filtered (`verdict` "image")."""
    has_filtered_image = Job.id.in_(
        select(Image.job_id).where(Image.status == ImageStatus.FILTERED)
    )
    prompt_refused = and_(Job.error_code == "contentFilter", ~has_filtered_image)
    conditions = {"prompt": prompt_refused, "image": has_filtered_image}
    if verdict and verdict not in REFUSAL_VERDICTS:
        raise ValidationError("verdict", "The verdict must be prompt or image.")
    condition = conditions[verdict] if verdict else or_(prompt_refused, has_filtered_image)
    statement = select(Job).options(*JOB_LIST_LOADS).where(condition)
    if q:
        matches = search.matches(q)
        if matches is not None:
            statement = statement.where(matches)
    return _keyset_page(statement, Job, limit, after, before)


@dataclass(frozen=True)
class GalleryFilters:
    """What the gallery shows; every field round-trips through the URL's query string."""

    q: str = ""
    status: str = ImageStatus.STORED
    favorites: bool = False
    collection: int | None = None
    model: str = ""
    size: str = ""
    since: date | None = None
    until: date | None = None
    trash: bool = False
    # "valid": only images whose Content Credentials verified when stored; "invalid": only
    # those whose manifest failed; "" all (images without a manifest included).
    credentials: str = ""

    STATUSES = (ImageStatus.STORED, ImageStatus.FILTERED, ImageStatus.FAILED)
    CREDENTIALS = ("valid", "invalid")

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> GalleryFilters:
        status = args.get("status") or ImageStatus.STORED
        if status not in cls.STATUSES:
            raise ValidationError("status", f"The status must be one of {', '.join(cls.STATUSES)}.")
        raw_collection = (args.get("collection") or "").strip()
        collection = parse_id(raw_collection) if raw_collection else None
        if raw_collection and collection is None:
            raise ValidationError("collection", "The collection must be a collection id.")
        credentials = (args.get("credentials") or "").strip()
        if credentials and credentials not in cls.CREDENTIALS:
            raise ValidationError(
                "credentials", f"Credentials must be one of {', '.join(cls.CREDENTIALS)}."
            )
        since, until = _date(args, "since"), _date(args, "until")
        if since and until and since > until:
            raise ValidationError("until", "The end date is before the start date.")
        return cls(
            q=(args.get("q") or "").strip()[:200],
            status=status,
            favorites=args.get("favorites") in ("1", "on", "true"),
            collection=collection,
            model=(args.get("model") or "").strip(),
            size=(args.get("size") or "").strip(),
            since=since,
            until=until,
            trash=args.get("trash") in ("1", "on", "true"),
            credentials=credentials,
        )

    def to_args(self) -> dict[str, str]:
        """The query string for these filters (defaults left out)."""
        args = {
            "q": self.q,
            "status": "" if self.status == ImageStatus.STORED else self.status,
            "favorites": "1" if self.favorites else "",
            "collection": str(self.collection) if self.collection else "",
            "model": self.model,
            "size": self.size,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "trash": "1" if self.trash else "",
            "credentials": self.credentials,
        }
        return {key: value for key, value in args.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.to_args())


def _date(args: Mapping[str, str], name: str) -> date | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError(name, "Dates look like 2026-11-25.") from None


def gallery_page(
    filters: GalleryFilters | None = None,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
) -> Page:
    """Images newest first, filtered; keyset-paged so any depth costs the same."""
    statement = _filtered_images(filters or GalleryFilters())
    return _keyset_page(statement, Image, limit, after, before)


def _filtered_images(filters: GalleryFilters) -> Any:
    """The gallery's images for `filters` (with their jobs), unordered: what a page of the
    gallery and an image's neighbours inside it are taken from."""
    few_matches = search.few_matching_job_ids(filters.q, FEW_MATCHES) if filters.q else None
    # With few matches, look their images up by job id and sort them: walking the newest-first
    # index would visit every image before knowing there are no more. `|| ''` keeps SQLite
    # off that index.
    status = Image.status + "" if few_matches is not None else Image.status
    statement = (
        select(Image)
        .join(Image.job)
        .options(contains_eager(Image.job))
        .where(status == filters.status)
        .where(Image.deleted_at.is_not(None) if filters.trash else Image.deleted_at.is_(None))
    )
    if filters.favorites:
        statement = statement.where(Image.favorite.is_(True))
    if filters.collection is not None:
        statement = statement.where(
            Image.id.in_(
                select(CollectionImage.image_id).where(
                    CollectionImage.collection_id == filters.collection
                )
            )
        )
    if filters.credentials:
        statement = statement.where(Image.credentials_valid.is_(filters.credentials == "valid"))
    if filters.model:
        statement = statement.where(Job.model == filters.model)
    if filters.size:
        statement = statement.where(Job.size == filters.size)
    if filters.since:
        statement = statement.where(Image.created_at >= _day_start(filters.since))
    if filters.until and filters.until < date.max:  # until the calendar's last day: no bound
        statement = statement.where(Image.created_at < _day_start(filters.until + timedelta(1)))
    if few_matches is not None:
        statement = statement.where(Image.job_id.in_(few_matches))
    elif filters.q:
        condition = search.matches(filters.q)
        if condition is not None:
            statement = statement.where(condition)
    return statement


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def newest_image_time() -> datetime | None:
    """When the newest stored image was made (one step down an index)."""
    return db.session.scalar(
        select(Image.created_at)
        .where(Image.status == ImageStatus.STORED)
        .order_by(Image.created_at.desc())
        .limit(1)
    )


def get_image(image_id: int) -> Image | None:
    return db.session.get(Image, image_id)


def sibling_images(
    image: Image, filters: GalleryFilters | None = None
) -> tuple[Image | None, Image | None]:
    """The images just newer and just older than this one in the gallery `filters` select
    (the whole gallery by default), in gallery order; `image` itself need not match them.
    Only stored images have a page, so a filter's status is not taken from `filters`."""
    filters = replace(filters or GalleryFilters(), status=ImageStatus.STORED)
    base = _filtered_images(filters)
    key = (image.created_at, image.id)
    newer = db.session.scalar(
        base.where(tuple_(Image.created_at, Image.id) > key)
        .order_by(Image.created_at.asc(), Image.id.asc())
        .limit(1)
    )
    older = db.session.scalar(
        base.where(tuple_(Image.created_at, Image.id) < key)
        .order_by(Image.created_at.desc(), Image.id.desc())
        .limit(1)
    )
    return newer, older


def images_by_ids(ids: Sequence[int], *, live_only: bool = True) -> list[Image]:
    """These images with their jobs, newest first, in one query."""
    if not ids:
        return []
    statement = (
        select(Image)
        .join(Image.job)
        .options(contains_eager(Image.job))
        .where(Image.id.in_(ids), Image.status == ImageStatus.STORED)
        .order_by(Image.created_at.desc(), Image.id.desc())
    )
    if live_only:
        statement = statement.where(Image.deleted_at.is_(None))
    return list(db.session.scalars(statement))


def collections_with_counts(
    owner_id: int | None, *, everyone: bool = False
) -> list[tuple[Collection, int]]:
    """The collections of `owner_id` (or, with `everyone`, all the viewer may see) with how many
    of their images are in the gallery (not in the trash)."""
    counts = (
        select(CollectionImage.collection_id, func.count().label("images"))
        .join(Image, Image.id == CollectionImage.image_id)
        .where(Image.status == ImageStatus.STORED, Image.deleted_at.is_(None))
        .group_by(CollectionImage.collection_id)
        .subquery()
    )
    statement = select(Collection, func.coalesce(counts.c.images, 0)).outerjoin(
        counts, counts.c.collection_id == Collection.id
    )
    if not everyone:
        statement = statement.where(Collection.owner_id == owner_id)
    rows = db.session.execute(statement.order_by(Collection.name))
    return [(collection, count) for collection, count in rows]


def image_with_digest(digest: str) -> Image | None:
    # Identical bytes are stored once, so every row with this digest points at the same files.
    return db.session.scalar(
        select(Image)
        .where(Image.sha256 == digest, Image.status == ImageStatus.STORED)
        .order_by(Image.id)
        .limit(1)
    )
