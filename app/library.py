"""Read-only queries the views need: recent jobs, job lists, gallery pages, image files.

Paging is keyset paging on (created_at, id), newest first, with an opaque cursor, so a page
deep in a large library costs the same as the first and new jobs never shift a page.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import selectinload

from app import storage
from app.models import Image, ImageStatus, Job, JobStatus, db
from app.validation import ValidationError

MAX_PAGE_SIZE = 100


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
        created, item_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|")
        return datetime.fromisoformat(created), int(item_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "cursor", "The cursor is not valid; start again from page 1."
        ) from None


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise ValidationError(
            "limit", f"The limit must be a whole number from 1 to {MAX_PAGE_SIZE}."
        )
    return int(raw)


def _keyset_page(
    statement: Any, model: Any, limit: int, after: str | None, before: str | None
) -> Page:
    """Newest first. `after`: items older than the cursor; `before`: items newer than it."""
    if after and before:
        raise ValidationError("cursor", "Give either a next or a previous cursor, not both.")
    newer_first = (model.created_at.desc(), model.id.desc())
    if before:
        created, item_id = decode_cursor(before)
        statement = statement.where(
            or_(model.created_at > created, and_(model.created_at == created, model.id > item_id))
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
        statement = statement.where(
            or_(model.created_at < created, and_(model.created_at == created, model.id < item_id))
        )
    rows = list(db.session.scalars(statement.order_by(*newer_first).limit(limit + 1)))
    items = rows[:limit]
    return Page(
        items=items,
        next_cursor=_cursor_of(items[-1]) if len(rows) > limit else None,
        prev_cursor=_cursor_of(items[0]) if items and after else None,
    )


def _cursor_of(item: Any) -> str:
    return encode_cursor(item.created_at, item.id)


def recent_jobs(limit: int = 12) -> list[Job]:
    statement = (
        select(Job)
        .options(selectinload(Job.images))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit)
    )
    return list(db.session.scalars(statement))


def job_page(
    *, status: str | None, q: str | None, limit: int, after: str | None, before: str | None = None
) -> Page:
    statement = select(Job).options(selectinload(Job.images))
    if status:
        if status not in JobStatus.ALL:
            raise ValidationError(
                "status", f"The status must be one of {', '.join(JobStatus.ALL)}."
            )
        statement = statement.where(Job.status == status)
    if q:
        # Plain substring search for now; full-text search arrives with the gallery work.
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Job.prompt.ilike(f"%{escaped}%", escape="\\"))
    return _keyset_page(statement, Job, limit, after, before)


def gallery_page(*, limit: int, after: str | None, before: str | None) -> Page:
    statement = (
        select(Image).options(selectinload(Image.job)).where(Image.status == ImageStatus.STORED)
    )
    return _keyset_page(statement, Image, limit, after, before)


def get_image(image_id: int) -> Image | None:
    return db.session.get(Image, image_id)


def sibling_images(image: Image) -> tuple[Image | None, Image | None]:
    """The stored images just newer and just older than this one, in gallery order."""
    base = select(Image).where(Image.status == ImageStatus.STORED)
    newer = db.session.scalar(
        base.where(
            or_(
                Image.created_at > image.created_at,
                and_(Image.created_at == image.created_at, Image.id > image.id),
            )
        )
        .order_by(Image.created_at.asc(), Image.id.asc())
        .limit(1)
    )
    older = db.session.scalar(
        base.where(
            or_(
                Image.created_at < image.created_at,
                and_(Image.created_at == image.created_at, Image.id < image.id),
            )
        )
        .order_by(Image.created_at.desc(), Image.id.desc())
        .limit(1)
    )
    return newer, older


def image_file(image_id: int, *, thumbnail: bool) -> tuple[Path, Image] | None:
    """The file behind a stored image (looked up by id only, never by a path from a request)."""
    image = get_image(image_id)
    if image is None or image.status != ImageStatus.STORED:
        return None
    name = image.thumbnail_name if thumbnail else image.file_name
    if name is None:
        return None
    path = storage.resolve(current_app.config["ATELIER_DATA_DIR"], name)
    if not path.is_file():
        return None
    return path, image


FILE_COLUMNS = (Image.file_name, Image.thumbnail_name, Image.thumbnail_large_name)


def files_in_use(names: set[str]) -> set[str]:
    """Which of these stored file names some image row still references."""
    if not names:
        return set()
    used: set[str] = set()
    for column in FILE_COLUMNS:
        used |= set(db.session.scalars(select(column).where(column.in_(names))))
    return used
