"""The sign-in rate limit holds under concurrency and cannot be used to lock an owner out."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from app.auth import accounts
from app.models import LoginAttempt, db
from tests.helpers import csrf_token

PASSWORD = "correct horse battery staple"
ATTACKER = "203.0.113.7"
OWNER = "198.51.100.20"


@pytest.fixture
def secure_app(app_factory: Any):
    app = app_factory(ATELIER_AUTH="on")
    with app.app_context():
        accounts.create_user("alice", PASSWORD)
    return app


def client_from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sign_in(app, password: str, address: str) -> int:
    client = client_from(app, address)
    form = {"username": "alice", "password": password, "csrf_token": csrf_token(client, "/login")}
    return client.post("/login", data=form).status_code


@pytest.fixture
def checked_passwords(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the server actually checked (the hash comparison is what a guess costs)."""
    checked: list[str] = []
    lock = threading.Lock()
    real = accounts.check_password_hash

    def counting(stored: str, password: str) -> bool:
        with lock:
            checked.append(password)
        return real(stored, password)

    monkeypatch.setattr(accounts, "check_password_hash", counting)
    return checked


def test_concurrent_guesses_check_no_more_passwords_than_the_limit(secure_app, checked_passwords):
    guesses = [f"wrong guess number {i}" for i in range(59)] + [PASSWORD]

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda guess: sign_in(secure_app, guess, ATTACKER), guesses))

    assert len(checked_passwords) <= accounts.LOGIN_FAILURES_PER_USER
    assert statuses.count(429) >= len(guesses) - accounts.LOGIN_FAILURES_PER_USER
    if PASSWORD not in checked_passwords:
        assert statuses[-1] == 429  # the right one was not let in past the limit
    with secure_app.app_context():
        recorded = db.session.scalar(select(func.count()).select_from(LoginAttempt))
    assert recorded <= accounts.LOGIN_FAILURES_PER_USER


def test_a_right_password_does_not_count_as_a_failure(secure_app):
    for _ in range(accounts.LOGIN_FAILURES_PER_USER + 2):
        assert sign_in(secure_app, PASSWORD, ATTACKER) == 303

    with secure_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LoginAttempt)) == 0


def test_failures_from_a_stranger_do_not_lock_the_owner_out(secure_app):
    for _ in range(accounts.LOGIN_FAILURES_PER_USER):
        assert sign_in(secure_app, "a stranger's guess", ATTACKER) == 401

    assert sign_in(secure_app, PASSWORD, ATTACKER) == 429  # the stranger's address waits
    assert sign_in(secure_app, PASSWORD, OWNER) == 303  # the owner signs in from elsewhere


def test_one_address_cannot_try_many_accounts(secure_app):
    with secure_app.app_context():
        for i in range(4):
            accounts.create_user(f"user{i}", PASSWORD)
    names = [f"user{i % 4}" for i in range(accounts.LOGIN_FAILURES_PER_IP)]
    for name in names:
        client = client_from(secure_app, ATTACKER)
        token = csrf_token(client, "/login")
        form = {"username": name, "password": "guess guess guess", "csrf_token": token}
        assert client.post("/login", data=form).status_code in (401, 429)

    assert sign_in(secure_app, PASSWORD, ATTACKER) == 429
    assert sign_in(secure_app, PASSWORD, OWNER) == 303
