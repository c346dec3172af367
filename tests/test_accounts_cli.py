"""`flask atelier users ...` and `tokens ...`: accounts and API tokens from the shell."""

from __future__ import annotations

from sqlalchemy import select

from app.auth import accounts, tokens
from app.models import User, db

PASSWORD = "a password for the cli"


def test_users_and_tokens_from_the_command_line(idle_app):
    runner = idle_app.test_cli_runner()
    created = runner.invoke(
        args=["atelier", "users", "create", "Carol", "--admin", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert created.exit_code == 0, created.output
    assert "Created administrator carol" in created.output
    again = runner.invoke(
        args=["atelier", "users", "create", "carol", "--password-stdin"], input=PASSWORD + "\n"
    )
    assert again.exit_code == 1 and "already an account" in again.output
    short = runner.invoke(
        args=["atelier", "users", "create", "dave", "--password-stdin"], input="short\n"
    )
    assert short.exit_code == 1 and "at least 12" in short.output
    with idle_app.app_context():
        assert accounts.find_user("dave") is None

    listing = runner.invoke(args=["atelier", "users", "list"])
    assert "carol\tadmin" in listing.output

    limits = runner.invoke(
        args=[
            "atelier",
            "users",
            "set-limits",
            "carol",
            "--daily-images",
            "5",
            "--monthly-budget",
            "2.5",
        ]
    )
    assert limits.exit_code == 0, limits.output
    with idle_app.app_context():
        carol = db.session.scalar(select(User).where(User.username == "carol"))
        assert (carol.daily_image_quota, carol.monthly_budget_usd) == (5, 2.5)
    negative = runner.invoke(
        args=["atelier", "users", "set-limits", "carol", "--daily-images", "-1"]
    )
    assert negative.exit_code == 2

    token = runner.invoke(args=["atelier", "tokens", "create", "carol", "my script"])
    assert token.exit_code == 0, token.output
    secret = token.output.strip().splitlines()[-1]
    assert secret.startswith("atl_")
    client = idle_app.test_client()
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    with idle_app.app_context():
        token_id = tokens.tokens_of(accounts.find_user("carol").id)[0].id
    assert runner.invoke(args=["atelier", "tokens", "revoke", str(token_id)]).exit_code == 0
    assert runner.invoke(args=["atelier", "tokens", "revoke", str(token_id)]).exit_code == 1
    assert runner.invoke(args=["atelier", "tokens", "create", "nobody", "x"]).exit_code == 1

    changed = runner.invoke(
        args=["atelier", "users", "set-password", "carol", "--password-stdin"],
        input="another long password\n",
    )
    assert changed.exit_code == 0, changed.output
    with idle_app.app_context():
        assert (
            accounts.authenticate("carol", "another long password", "127.0.0.1").username == "carol"
        )
