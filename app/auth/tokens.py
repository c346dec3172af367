"""Secrets handed to clients: how they are hashed and compared, API tokens, and revoking.

Only a token's SHA-256 hash is stored (for API tokens, sign-in sessions and share links
alike), so a copy of the database lets nobody in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select, update

from app.models import ApiToken, ShareLink, db, utcnow, write_transaction
from app.validation import ValidationError

TOKEN_PREFIX = "atl_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def create_token(user_id: int, name: str) -> tuple[ApiToken, str]:
    """A new API token for the user: (row, the token itself — shown once, never stored)."""
    clean = " ".join((name or "").split())[:100]
    if not clean:
        raise ValidationError("name", "Give the token a name, e.g. the script that uses it.")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user_id, name=clean, token_hash=hash_token(token), prefix=token[:10])
    with write_transaction() as session:
        session.add(row)
    return row, token


def tokens_of(user_id: int) -> list[ApiToken]:
    return list(
        db.session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.created_at.desc())
        )
    )


def revoke_token(user_id: int | None, token_id: int) -> bool:
    """Revoke a token of `user_id` (None: any user's, for the CLI). False if there is none."""
    return revoke(ApiToken, token_id, user_id)


def revoke_tokens_of(user_id: int) -> int:
    """Revoke every live API token of `user_id` (after a password change); how many."""
    statement = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    with write_transaction() as session:
        return session.execute(statement.values(revoked_at=utcnow())).rowcount


def revoke(model: type[ApiToken] | type[ShareLink], row_id: int, user_id: int | None) -> bool:
    """Revoke a live token or share link, of `user_id` only unless None. False if none was."""
    statement = update(model).where(model.id == row_id, model.revoked_at.is_(None))
    if user_id is not None:
        statement = statement.where(model.user_id == user_id)
    with write_transaction() as session:
        return session.execute(statement.values(revoked_at=utcnow())).rowcount > 0
