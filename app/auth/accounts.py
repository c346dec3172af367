"""Accounts: users and passwords, sign-in attempts with their rate limit, the bootstrap admin."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from functools import cache

from flask import Flask
from sqlalchemy import delete, func, select, update
from werkzeug.security import check_password_hash, generate_password_hash
from zxcvbn import zxcvbn

from app.config import ConfigError
from app.models import LoginAttempt, User, UserSession, db, utcnow, write_transaction
from app.validation import ValidationError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024
# zxcvbn's score runs 0..4; below 2 are the common passwords and their simple variations.
MIN_PASSWORD_SCORE = 2
ZXCVBN_MAX_CHARS = 72
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Sign-in rate limit (ASVS 2.2.1): failures counted in the database, so every process agrees.
LOGIN_WINDOW = timedelta(minutes=15)
LOGIN_FAILURES_PER_USER = 5  # per account from one address
LOGIN_FAILURES_PER_IP = 20  # per address, whichever accounts
# PostgreSQL advisory lock that serialises counting and recording sign-in attempts.
LOGIN_ATTEMPTS_LOCK = 0x41544C4E


class AuthError(Exception):
    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


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


@cache
def _dummy_hash() -> str:
    """Compared against when the username is unknown, so both cases take the same time.

    Made on first use, not at import (hashing costs about 120 ms of every start). Two threads
    racing here may both hash; either result does."""
    return generate_password_hash(secrets.token_hex(16))


def authenticate(username: str, password: str, ip: str) -> User:
    """The user with this name and password, or AuthError (rate limited or wrong).

    The attempt is recorded as a failure *before* the password is checked (and taken back when
    it was right), in one serialised transaction with the count: however many attempts arrive
    at once, no more than the limit are ever checked."""
    name = (username or "").strip().lower()[:64]
    attempt_id = _reserve_attempt(name, ip[:64])
    user = find_user(name)
    valid = check_password_hash(user.password_hash if user else _dummy_hash(), password or "")
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
