"""Accounts and who is asking: passwords, sign-in sessions, API tokens, share links, scoping.

Sign-in is on unless `ATELIER_AUTH=off`, which is allowed only on a loopback address (see
`check_exposure`). Each request is identified once, in `identify()`:

- `Authorization: Bearer <token>`: an API token (stored as a SHA-256 hash, revocable);
- otherwise the session cookie, which holds a random session token whose hash is a
  `user_sessions` row, so signing out or expiry really ends the session (ASVS 3.3.1);
- with sign-in off, everyone is the site's owner.

What a viewer may see is enforced in one place: `install_scoping` adds the viewer's
`owner_id` to every ORM query of jobs, images and collections made while handling the request
(SQLAlchemy's `with_loader_criteria`), so a forgotten check in a view cannot leak another
user's work. Admins and open mode see everything; background threads are not scoped.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, current_app, g, has_request_context, request, session
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from app.config import ConfigError
from app.models import (
    ApiToken,
    Collection,
    Image,
    ImageStatus,
    Job,
    LoginAttempt,
    ShareLink,
    User,
    UserSession,
    db,
    utcnow,
    write_transaction,
)
from app.validation import ValidationError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
# zxcvbn's score runs 0..4; below 2 are the common passwords and their simple variations.
MIN_PASSWORD_SCORE = 2
ZXCVBN_MAX_CHARS = 72
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SESSION_KEY = "sid"
TOKEN_PREFIX = "atl_"
SHARE_DAYS = (1, 7, 30, 0)  # 0: never expires
# Sign-in rate limit (ASVS 2.2.1): failures counted in the database, so every process agrees.
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_FAILURES_PER_USER = 5  # per account from one address
LOGIN_FAILURES_PER_IP = 20  # per address, whichever accounts
# PostgreSQL advisory lock that serialises counting and recording sign-in attempts.
LOGIN_ATTEMPTS_LOCK = 0x41544C4E
# A session's last_seen_at is written at most this often (not on every status poll).
TOUCH_EVERY = timedelta(minutes=5)


class AuthError(Exception):
    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- accounts -----------------------------------------------------------------------------------


def normalise_username(raw: str) -> str:
    name = (raw or "").strip().lower()
    if not USERNAME.match(name):
        raise ValidationError(
            "username",
            "A username is 1 to 64 characters: letters, digits, dots, dashes and underscores, "
            "starting with a letter or digit.",
        )
    return name


def check_password_rules(password: str, *, user_inputs: tuple[str, ...] = ()) -> None:
    """Long enough, not too long, and not one of the passwords attackers try first (zxcvbn's
    estimate, offline: its dictionaries ship with the package; `user_inputs` such as the
    username count as known to the attacker)."""
    if len(password or "") < MIN_PASSWORD:
        raise ValidationError("password", f"A password has at least {MIN_PASSWORD} characters.")
    if len(password) > MAX_PASSWORD:
        raise ValidationError("password", f"A password has at most {MAX_PASSWORD} characters.")
    # zxcvbn reads at most 72 characters; beyond that a password is long enough anyway.
    strength = zxcvbn(password[:ZXCVBN_MAX_CHARS], user_inputs=[u for u in user_inputs if u])
    if strength["score"] < MIN_PASSWORD_SCORE:
        warning = strength["feedback"]["warning"] or "It is too easy to guess."
        raise ValidationError(
            "password",
            f"Choose a password that is harder to guess: {warning.rstrip('.')}. A few unrelated "
            "words make a good one.",
        )


def create_user(username: str, password: str, *, admin: bool = False) -> User:
    name = normalise_username(username)
    check_password_rules(password, user_inputs=(name,))
    if db.session.scalar(select(User.id).where(User.username == name)) is not None:
        raise ValidationError("username", f"There is already an account called {name!r}.")
    user = User(username=name, password_hash=generate_password_hash(password), is_admin=admin)
    with write_transaction() as session:
        session.add(user)
    return user


def set_password(user_id: int, password: str) -> None:
    """Change a password and end every session of that account (tokens stay valid)."""
    username = db.session.scalar(select(User.username).where(User.id == user_id)) or ""
    check_password_rules(password, user_inputs=(username,))
    with write_transaction() as session:
        session.execute(
            update(User)
            .where(User.id == user_id)
            .values(password_hash=generate_password_hash(password))
        )
        session.execute(delete(UserSession).where(UserSession.user_id == user_id))


def find_user(username: str) -> User | None:
    try:
        name = normalise_username(username)
    except ValidationError:
        return None
    return db.session.scalar(select(User).where(User.username == name))


def user_count() -> int:
    return db.session.scalar(select(func.count()).select_from(User)) or 0


# Compared against when the username is unknown, so both cases take the same time.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


def authenticate(username: str, password: str, ip: str) -> User:
    """The user with this name and password, or AuthError (rate limited or wrong).

    The attempt is recorded as a failure *before* the password is checked (and taken back when
    it was right), in one serialised transaction with the count: however many attempts arrive
    at once, no more than the limit are ever checked."""
    name = (username or "").strip().lower()[:64]
    attempt_id = _reserve_attempt(name, ip[:64])
    user = find_user(name)
    valid = check_password_hash(user.password_hash if user else _DUMMY_HASH, password or "")
    if user is None or not valid:
        raise AuthError("The username or password is not right.")
    with write_transaction() as session:
        session.execute(delete(LoginAttempt).where(LoginAttempt.id == attempt_id))
    return user


def _reserve_attempt(username: str, ip: str) -> int:
    """Count recent failures and record this attempt as one, atomically; AuthError (429) when
    over a limit.

    The limits (ASVS 2.2.1) are per account *and address* (so a stranger elsewhere cannot lock
    the owner out of their account) and per address across accounts (so one address cannot try
    many). SQLite serialises the transaction with BEGIN IMMEDIATE; PostgreSQL with an advisory
    lock held until it commits."""
    with write_transaction() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(LOGIN_ATTEMPTS_LOCK)))
        since = utcnow() - LOGIN_WINDOW
        recent = (
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.at >= since, LoginAttempt.ip == ip)
        )
        by_account = session.scalar(recent.where(LoginAttempt.username == username)) or 0
        by_address = session.scalar(recent) or 0
        if by_account >= LOGIN_FAILURES_PER_USER or by_address >= LOGIN_FAILURES_PER_IP:
            minutes = int(LOGIN_WINDOW.total_seconds() // 60)
            raise AuthError(
                f"Too many failed sign-ins. Wait {minutes} minutes and try again.",
                retry_after=int(LOGIN_WINDOW.total_seconds()),
            )
        attempt = LoginAttempt(ip=ip, username=username)
        session.add(attempt)
        session.flush()
        return attempt.id


def prune_login_attempts() -> None:
    with write_transaction() as session:
        session.execute(delete(LoginAttempt).where(LoginAttempt.at < utcnow() - LOGIN_WINDOW))


def bootstrap_admin(app: Flask) -> User | None:
    """Create the admin from ATELIER_ADMIN_PASSWORD when no account exists yet."""
    password = app.config["ATELIER_ADMIN_PASSWORD"]
    if not password or user_count() > 0:
        return None
    try:
        return create_user(app.config["ATELIER_ADMIN_USERNAME"], password, admin=True)
    except ValidationError as error:
        raise ConfigError(f"ATELIER_ADMIN_PASSWORD/USERNAME: {error.message}") from None


# --- sessions -----------------------------------------------------------------------------------


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
    """Who sent this request (see the module docstring), or None."""
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


# --- API tokens ---------------------------------------------------------------------------------


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
    return _revoke(ApiToken, token_id, user_id)


def revoke_tokens_of(user_id: int) -> int:
    """Revoke every live API token of `user_id` (after a password change); how many."""
    statement = update(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    with write_transaction() as session:
        return session.execute(statement.values(revoked_at=utcnow())).rowcount


def _revoke(model: type[ApiToken] | type[ShareLink], row_id: int, user_id: int | None) -> bool:
    """Revoke a live token or share link, of `user_id` only unless None. False if none was."""
    statement = update(model).where(model.id == row_id, model.revoked_at.is_(None))
    if user_id is not None:
        statement = statement.where(model.user_id == user_id)
    with write_transaction() as session:
        return session.execute(statement.values(revoked_at=utcnow())).rowcount > 0


# --- share links --------------------------------------------------------------------------------


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
    return _revoke(ShareLink, share_id, user_id)


# --- scoping ------------------------------------------------------------------------------------

# Execution options for the few reads that must see every owner's rows whoever is asking: the
# bookkeeping that decides whether a stored file is still used (files are content-addressed, so
# two owners' identical images share one file). Never for anything shown to the viewer.
# Use: `select(...).execution_options(**auth.ALL_OWNERS)`.
ALL_OWNERS_OPTION = "atelier_all_owners"
ALL_OWNERS = {ALL_OWNERS_OPTION: True}


def set_scope(owner_id: int | None) -> None:
    """Limit this request's queries of jobs, images and collections to one owner."""
    g.scope_owner_id = owner_id


def install_scoping() -> None:
    """Add the request's owner filter to every ORM statement on jobs, images and collections."""
    if not event.contains(Session, "do_orm_execute", _scope):
        event.listen(Session, "do_orm_execute", _scope)


def _scope(state: ORMExecuteState) -> None:
    if not has_request_context():
        return
    owner_id = g.get("scope_owner_id")
    if owner_id is None or state.is_column_load or state.is_relationship_load:
        return
    if state.execution_options.get(ALL_OWNERS_OPTION):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    state.statement = state.statement.options(
        with_loader_criteria(Job, Job.owner_id == owner_id, include_aliases=True),
        with_loader_criteria(Image, Image.owner_id == owner_id, include_aliases=True),
        with_loader_criteria(Collection, Collection.owner_id == owner_id, include_aliases=True),
    )


# --- exposure -----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(app: Flask, hosts: list[str]) -> None:
    """Refuse to serve a non-loopback address without sign-in, saying how to set it up."""
    exposed = [host for host in hosts if not is_loopback(host)]
    if not exposed:
        return
    where = ", ".join(exposed)
    if app.config["ATELIER_AUTH"] != "on":
        raise ConfigError(
            f"ATELIER_AUTH=off is only allowed on 127.0.0.1 or ::1, but Atelier would listen "
            f"on {where}. Remove ATELIER_AUTH=off and create an account (see below), or serve "
            "on 127.0.0.1 only."
        )
    with app.app_context():
        if user_count() == 0:
            raise ConfigError(
                f"Atelier would listen on {where} but no account exists yet. Set "
                "ATELIER_ADMIN_PASSWORD (12+ characters; the account is ATELIER_ADMIN_USERNAME, "
                "default admin) or run `flask --app app atelier users create NAME --admin` first."
            )


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
