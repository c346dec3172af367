"""Cover images: the picture that stands for a collection (its newest image that can be shown),
and the images and collections share links point at, for the account page's list of links."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from app.models import Collection, CollectionImage, Image, ImageStatus, ShareLink, db


def covers(collection_ids: Iterable[int]) -> dict[int, Image]:
    """Each collection's newest stored image not in the trash, by collection id; a collection
    without one is left out. One query for all of them (a window over the memberships)."""
    ids = sorted(set(collection_ids))
    if not ids:
        return {}
    ranked = (
        select(
            CollectionImage.collection_id,
            Image.id.label("image_id"),
            func.row_number()
            .over(
                partition_by=CollectionImage.collection_id,
                order_by=(Image.created_at.desc(), Image.id.desc()),
            )
            .label("rank"),
        )
        .join(Image, Image.id == CollectionImage.image_id)
        .where(
            CollectionImage.collection_id.in_(ids),
            Image.status == ImageStatus.STORED,
            Image.deleted_at.is_(None),
        )
        .subquery()
    )
    rows = db.session.execute(
        select(ranked.c.collection_id, Image)
        .join(Image, Image.id == ranked.c.image_id)
        .where(ranked.c.rank == 1)
        .options(selectinload(Image.job))
    ).all()
    return {collection_id: image for collection_id, image in rows}


def share_subjects(
    shares: Iterable[ShareLink],
) -> tuple[dict[int, Image], dict[int, Collection], dict[int, Image]]:
    """What share links show: their images (with jobs, for the prompt), their collections, and
    those collections' covers, each by id. One deleted since is missing from its dict."""
    shares = list(shares)
    image_ids = {share.image_id for share in shares if share.image_id is not None}
    collection_ids = {share.collection_id for share in shares if share.collection_id is not None}
    images = {
        image.id: image
        for image in db.session.scalars(
            select(Image).where(Image.id.in_(image_ids)).options(selectinload(Image.job))
        )
    }
    collections = {
        collection.id: collection
        for collection in db.session.scalars(
            select(Collection).where(Collection.id.in_(collection_ids))
        )
    }
    return images, collections, covers(collections)
