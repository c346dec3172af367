"""Passwords attackers try first are refused wherever a password is set."""

from __future__ import annotations

import pytest

from app.auth import accounts
from app.validation import ValidationError


@pytest.mark.parametrize(
    "password", ["password1234", "qwertyuiop123", "aaaaaaaaaaaa", "123456789012", "iloveyou1234"]
)
def test_a_common_password_is_refused_saying_why(password):
    with pytest.raises(ValidationError) as raised:
        accounts.check_password_rules(password)

    assert raised.value.field == "password"
    assert "harder to guess" in raised.value.message


def test_a_password_made_of_the_username_is_refused(idle_app):
    with idle_app.app_context(), pytest.raises(ValidationError, match="harder to guess"):
        accounts.create_user("margaretha", "margaretha12")


@pytest.mark.parametrize(
    "password",
    ["correct horse battery staple", "a long enough password", "maple kettle orbit drum " * 40],
)
def test_a_strong_or_very_long_password_is_accepted(password):
    accounts.check_password_rules(password)


def test_changing_to_a_common_password_is_refused_and_keeps_the_old_one(idle_app):
    with idle_app.app_context():
        user = accounts.create_user("carol", "correct horse battery staple")
        with pytest.raises(ValidationError, match="harder to guess"):
            accounts.set_password(user.id, "password1234")

        assert (
            accounts.authenticate("carol", "correct horse battery staple", "127.0.0.1").id
            == user.id
        )
