"""What a person does to their library: favourites, collections, the trash.

Deleting an image moves it to the trash (undo restores it); the trash is purged after
ATELIER_TRASH_DAYS, and only then are rows and files removed. Jobs stay in the history either
way, so prompts remain searchable after their images are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from app import storage
from app.models import (
    Collection,
    CollectionImage,
    Image,
    ImageStatus,
    db,
    utcnow,
    write_transaction,
)
from app.validation import ValidationError

log = logging.getLogger(__name__)

MAX_COLLECTION_NAME = 100
# Collections one account may have: enough for any real library, few enough that every menu
# listing them stays small.
MAX_COLLECTIONS_PER_OWNER = 200
MAX_SELECTION = 1000


def _ids(image_ids: Iterable[int]) -> list[int]:
    ids = sorted(set(image_ids))
    if not ids:
        raise ValidationError("ids", "Select at least one image.")
    if len(ids) > MAX_SELECTION:
        raise ValidationError("ids", f"Select at most {MAX_SELECTION} images at a time.")
    return ids


def _live(ids: list[int]):  # the stored, not trashed images among ids
    return (Image.id.in_(ids), Image.status == ImageStatus.STORED, Image.deleted_at.is_(None))


def set_favorite(image_ids: Iterable[int], favorite: bool) -> int:
    """Star or unstar images; returns how many changed."""
    ids = _ids(image_ids)
    with write_transaction() as session:
        result = session.execute(
            update(Image)
            .where(*_live(ids), Image.favorite.is_not(favorite))
            .values(favorite=favorite)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount


def toggle_favorite(image_id: int) -> Image | None:
    image = db.session.get(Image, image_id)
    if image is None or image.status != ImageStatus.STORED or image.deleted_at is not None:
        return None
    set_favorite([image_id], not image.favorite)
    return db.session.get(Image, image_id, populate_existing=True)


def trash(image_ids: Iterable[int]) -> list[int]:
    """Move images to the trash; returns the ids moved (for the undo)."""
    ids = _ids(image_ids)
    moved = list(db.session.scalars(select(Image.id).where(*_live(ids))))
    if moved:
        with write_transaction() as session:
            session.execute(
                update(Image)
                .where(Image.id.in_(moved), Image.deleted_at.is_(None))
                .values(deleted_at=utcnow())
                .execution_options(synchronize_session=False)
            )
        log.info("moved %d image(s) to the trash", len(moved))
    return moved


def restore(image_ids: Iterable[int]) -> int:
    """Take images out of the trash (the undo of `trash`)."""
    ids = _ids(image_ids)
    with write_transaction() as session:
        result = session.execute(
            update(Image)
            .where(Image.id.in_(ids), Image.deleted_at.is_not(None))
            .values(deleted_at=None)
            .execution_options(synchronize_session=False)
        )
    return result.rowcount


def purge(older_than: timedelta | None = None) -> int:
    """Remove trashed images (all, or those trashed longer ago than `older_than`) for good:
    their rows, then the files no other row uses."""
    condition = [Image.deleted_at.is_not(None)]
    if older_than is not None:
        condition.append(Image.deleted_at < utcnow() - older_than)
    rows = db.session.execute(
        select(Image.id, Image.file_name, Image.thumbnail_name, Image.thumbnail_large_name).where(
            *condition
        )
    ).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    names = {name for row in rows for name in row[1:] if name}
    with write_transaction() as session:
        session.execute(delete(Image).where(Image.id.in_(ids)))
    # Another owner's identical image may share these files; only unused ones go.
    storage.current().remove_unused_files(names)
    log.info("purged %d image(s) from the trash", len(ids))
    return len(ids)


def purge_expired() -> int:
    return purge(timedelta(days=current_app.config["ATELIER_TRASH_DAYS"]))


def create_collection(name: str, *, owner_id: int | None) -> Collection:
    """A new, empty collection of `owner_id` (None: the ownerless ones of open mode)."""
    clean = " ".join((name or "").split())
    if not clean:
        raise ValidationError("name", "Give the collection a name.")
    if len(clean) > MAX_COLLECTION_NAME:
        raise ValidationError(
            "name", f"A collection name is at most {MAX_COLLECTION_NAME} characters."
        )
    # `== None` compiles to IS NULL: the ownerless collections of open mode are one namespace.
    taken = select(Collection.id).where(Collection.name == clean, Collection.owner_id == owner_id)
    if db.session.scalar(taken) is not None:
        raise ValidationError("name", f"There is already a collection called {clean!r}.")
    owned = select(func.count()).select_from(Collection).where(Collection.owner_id == owner_id)
    if db.session.scalar(owned) >= MAX_COLLECTIONS_PER_OWNER:
        raise ValidationError(
            "name",
            f"You have {MAX_COLLECTIONS_PER_OWNER} collections, the most one account can have; "
            "delete one you no longer need first.",
        )
    collection = Collection(name=clean, owner_id=owner_id)
    try:
        with write_transaction() as session:
            session.add(collection)
    except IntegrityError:
        raise ValidationError("name", f"There is already a collection called {clean!r}.") from None
    return collection


def get_collection(collection_id: int) -> Collection | None:
    return db.session.get(Collection, collection_id)


def own_collections(owner_id: int | None) -> list[Collection]:
    """The collections of `owner_id` (None: the ownerless ones of open mode), for the menus
    that add images to one; an administrator's menus list only their own."""
    statement = select(Collection).where(Collection.owner_id == owner_id)
    return list(db.session.scalars(statement.order_by(Collection.name)))


def add_to_collection(collection_id: int, image_ids: Iterable[int]) -> int:
    """Add images to a collection (an image can be in several); returns how many were new."""
    ids = _ids(image_ids)
    if get_collection(collection_id) is None:
        raise ValidationError("collection", f"There is no collection {collection_id}.")
    live = set(db.session.scalars(select(Image.id).where(*_live(ids))))
    present = set(
        db.session.scalars(
            select(CollectionImage.image_id).where(
                CollectionImage.collection_id == collection_id,
                CollectionImage.image_id.in_(live),
            )
        )
    )
    new = sorted(live - present)
    if new:
        with write_transaction() as session:
            session.add_all(
                CollectionImage(collection_id=collection_id, image_id=image_id) for image_id in new
            )
    return len(new)


def remove_from_collection(collection_id: int, image_ids: Iterable[int]) -> int:
    ids = _ids(image_ids)
    if get_collection(collection_id) is None:  # scoped: only the viewer's own collections
        raise ValidationError("collection", f"There is no collection {collection_id}.")
    with write_transaction() as session:
        result = session.execute(
            delete(CollectionImage).where(
                CollectionImage.collection_id == collection_id,
                CollectionImage.image_id.in_(ids),
            )
        )
    return result.rowcount


def delete_collection(collection_id: int) -> bool:
    """Delete a collection (its images stay in the library)."""
    with write_transaction() as session:
        result = session.execute(delete(Collection).where(Collection.id == collection_id))
    return result.rowcount == 1
