"""Share links: a secret link to one image or collection, for people without an account."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select

from app.auth.tokens import hash_token, revoke
from app.models import Image, ImageStatus, ShareLink, db, utcnow, write_transaction
from app.validation import ValidationError

SHARE_DAYS = (1, 7, 30, 0)  # 0: never expires


def create_share(
    user_id: int | None,
    *,
    image_id: int | None = None,
    collection_id: int | None = None,
    days: int = 7,
) -> tuple[ShareLink, str]:
    """A link to one image or collection the viewer can see; (row, token shown once)."""
    if days not in SHARE_DAYS:
        raise ValidationError("days", "A link lasts 1, 7 or 30 days, or until revoked (0).")
    if image_id is not None:
        status = db.session.scalar(select(Image.status).where(Image.id == image_id))
        if status != ImageStatus.STORED:
            # A filtered (or failed) slot has no picture to show; a link to it would only ever
            # show an error, or tempt a retry of what the safety system refused.
            raise ValidationError("image", "Only a stored image can be shared; this one is not.")
    # The caller looked the object up through the viewer's scope; it exists and is theirs.
    token = secrets.token_urlsafe(24)
    now = utcnow()
    row = ShareLink(
        user_id=user_id,
        token_hash=hash_token(token),
        image_id=image_id,
        collection_id=collection_id,
        created_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )
    with write_transaction() as session:
        session.add(row)
    return row, token


def find_share(token: str) -> ShareLink | None:
    """The live (not revoked, not expired) link with this token, or None."""
    if not token or len(token) > 100:
        return None
    row = db.session.scalar(select(ShareLink).where(ShareLink.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utcnow():
        return None
    return row


def shares_of(user_id: int | None) -> list[ShareLink]:
    statement = select(ShareLink).where(ShareLink.revoked_at.is_(None))
    if user_id is not None:
        statement = statement.where(ShareLink.user_id == user_id)
    return list(db.session.scalars(statement.order_by(ShareLink.created_at.desc())))


def revoke_share(user_id: int | None, share_id: int) -> bool:
    return revoke(ShareLink, share_id, user_id)
