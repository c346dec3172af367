"""Who is asking: identifying each request, sign-in sessions, and the current viewer.

`identify()` runs once per request (see the package docstring for the three ways in); the
result is kept as `g.viewer` and read back with `current_viewer()` and `current_user()`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, g, has_request_context, request, session
from sqlalchemy import delete, select, update

from app.auth.tokens import TOKEN_PREFIX, hash_token
from app.models import ApiToken, User, UserSession, db, utcnow, write_transaction

SESSION_KEY = "sid"
# A session's last_seen_at is written at most this often (not on every status poll).
TOUCH_EVERY = timedelta(minutes=5)


@dataclass(frozen=True)
class Viewer:
    """Who is asking. `user` is None only in open mode (sign-in off), where all is visible."""

    user: User | None
    via: str  # "session", "token" or "open"
    session_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.user is None or self.user.is_admin

    @property
    def owner_filter(self) -> int | None:
        """The owner id every query is limited to, or None to see everything."""
        return None if self.is_admin else self.user.id  # type: ignore[union-attr]


def auth_enabled() -> bool:
    return current_app.config["ATELIER_AUTH"] == "on"


def current_viewer() -> Viewer | None:
    return g.get("viewer") if has_request_context() else None


def current_user() -> User | None:
    """The signed-in user of this request; None in open mode, the CLI and background threads."""
    viewer = current_viewer()
    return viewer.user if viewer is not None else None


def current_user_id() -> int | None:
    """The id of the signed-in user: the owner of what this request creates (None in open
    mode: the ownerless bucket)."""
    user = current_user()
    return user.id if user is not None else None


def sign_in(user: User) -> None:
    """Start a new session (a new token, never the old one: ASVS 3.2.1) for `user`."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    hours = current_app.config["ATELIER_SESSION_HOURS"]
    with write_transaction() as db_session:
        db_session.add(
            UserSession(
                token_hash=hash_token(token),
                user_id=user.id,
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(hours=hours),
            )
        )
        db_session.execute(delete(UserSession).where(UserSession.expires_at < now))
    session.clear()  # drops the old CSRF token too
    session[SESSION_KEY] = token
    session.permanent = True


def sign_out() -> None:
    viewer = current_viewer()
    if viewer is not None and viewer.session_id is not None:
        with write_transaction() as db_session:
            db_session.execute(delete(UserSession).where(UserSession.id == viewer.session_id))
    session.clear()


def identify() -> Viewer | None:
    """Who sent this request (see the package docstring), or None."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return _viewer_from_token(header[7:].strip())
    if not auth_enabled():
        return Viewer(user=None, via="open")
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        return None
    found = _row_and_user(UserSession, token)
    now = utcnow()
    if found is None or found[0].expires_at <= now:
        session.pop(SESSION_KEY, None)
        return None
    row, user = found
    _touch(UserSession.last_seen_at, row.id, row.last_seen_at, now)
    return Viewer(user=user, via="session", session_id=row.id)


def _viewer_from_token(token: str) -> Viewer | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    found = _row_and_user(ApiToken, token)
    if found is None or found[0].revoked_at is not None:
        return None
    row, user = found
    _touch(ApiToken.last_used_at, row.id, row.last_used_at, utcnow())
    return Viewer(user=user, via="token")


def _row_and_user(model: type[UserSession] | type[ApiToken], token: str) -> Any:
    """The session or token row with this token's hash and its user, in one query (every
    request, every status poll included, pays it), or None."""
    return db.session.execute(
        select(model, User)
        .join(User, User.id == model.user_id)
        .where(model.token_hash == hash_token(token))
    ).first()


def _touch(column: Any, row_id: int, last: datetime | None, now: datetime) -> None:
    """Record that a session or token was used, at most every TOUCH_EVERY (not on every poll)."""
    if last is None or now - last > TOUCH_EVERY:
        model = column.class_
        with write_transaction() as db_session:
            db_session.execute(update(model).where(model.id == row_id).values({column.key: now}))
