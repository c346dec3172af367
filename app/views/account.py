"""Sign-in, first-account setup, sign-out, and the account page (password, API tokens, links).

Every form here is a plain POST with a CSRF token and answers with a redirect (303) or the
page again with its error, so it works without JavaScript.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app import covers, setup
from app.auth import accounts, sessions, shares, tokens
from app.models import User
from app.validation import ValidationError

bp = Blueprint("account", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if not sessions.auth_enabled():
        return redirect(url_for("pages.index"), 303)
    next_url = safe_next(request.values.get("next"))
    if accounts.user_count() == 0:
        return render_template("account/setup.html", token=None, next=next_url), 200
    if request.method == "GET":
        return render_template("account/login.html", next=next_url, username="")
    username = request.form.get("username", "")
    try:
        user = accounts.authenticate(
            username, request.form.get("password", ""), request.remote_addr or ""
        )
    except accounts.AuthError as error:
        status = 429 if error.retry_after else 401
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        body = render_template(
            "account/login.html", next=next_url, username=username, error=error.message
        )
        return body, status, headers  # type: ignore[return-value]
    sessions.sign_in(user)
    return redirect(next_url or url_for("pages.index"), 303)


@bp.post("/logout")
def logout() -> Response:
    sessions.sign_out()
    return redirect(url_for("account.login"), 303)


@bp.route("/setup", methods=["GET", "POST"])
def first_account() -> Response | str | tuple[str, int]:
    """Create the first (admin) account with the one-time token printed at start-up."""
    token = request.values.get("token", "")
    if not sessions.auth_enabled() or accounts.user_count() > 0:
        abort(404, "There is no setup to do here. Sign in instead.")
    if not setup.token_matches(token):
        # No account yet: say where the one-time link is rather than that there is nothing to do.
        status = 403 if token else 200
        return render_template("account/setup.html", token=None, wrong_token=bool(token)), status
    if request.method == "GET":
        return render_template("account/setup.html", token=token, username="")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    try:
        if password != request.form.get("confirm", ""):
            raise ValidationError("confirm", "The two passwords are not the same.")
        user = setup.create_first_admin(username, password)
    except ValidationError as error:
        body = render_template(
            "account/setup.html", token=token, username=username, error=error.message
        )
        return body, 422
    sessions.sign_in(user)
    return redirect(url_for("pages.index"), 303)


@bp.get("/account")
def page() -> str:
    return _render_account(_user())


@bp.post("/account/password")
def change_password() -> Response | tuple[str, int]:
    user = _user()
    current = request.form.get("current", "")
    new = request.form.get("password", "")
    try:
        accounts.authenticate(user.username, current, request.remote_addr or "")
        if new != request.form.get("confirm", ""):
            raise ValidationError("confirm", "The two new passwords are not the same.")
        accounts.set_password(user.id, new)
    except (accounts.AuthError, ValidationError) as error:
        return _account_error(user, error.message)
    sessions.sign_in(user)  # every other session ended; this browser gets a fresh one
    message = "Password changed. Other browsers are signed out."
    if request.form.get("revoke_tokens"):
        revoked = tokens.revoke_tokens_of(user.id)
        message += f" {revoked} API token{'s' if revoked != 1 else ''} revoked."
    flash(message)
    return redirect(url_for("account.page"), 303)


@bp.post("/account/tokens")
def create_token() -> str | tuple[str, int]:
    """A new API token acts as the user, so minting one asks for the password again (a
    browser left signed in is not enough)."""
    user = _user()
    try:
        accounts.authenticate(
            user.username, request.form.get("current", ""), request.remote_addr or ""
        )
        _row, token = tokens.create_token(user.id, request.form.get("name", ""))
    except (accounts.AuthError, ValidationError) as error:
        return _account_error(user, error.message)
    return _render_account(user, new_token=token), 201


@bp.post("/account/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> Response:
    user = _user()
    if not tokens.revoke_token(user.id, token_id):
        abort(404, "There is no such token.")
    flash("Token revoked.")
    return redirect(url_for("account.page"), 303)


def safe_next(raw: str | None) -> str | None:
    """A local path to return to after signing in; anything else (other hosts, `//x`,
    `javascript:`, backslashes) is dropped, so the login page is no open redirect. So is one
    with a control character: a newline cannot go into a Location header."""
    if not raw or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return None
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return None
    return raw


def _user() -> User:
    user = sessions.current_user()
    if user is None:  # open mode has no account to manage
        abort(404, "Sign-in is off (ATELIER_AUTH=off), so there is no account to manage.")
    return user


def _account_error(user: User, message: str) -> tuple[str, int]:
    return _render_account(user, error=message), 422


def _render_account(user: User, *, new_token: str | None = None, error: str | None = None) -> str:
    """The account page: the user's API tokens, live share links (an admin's: everyone's)."""
    links = shares.shares_of(None if user.is_admin else user.id)
    images, collections, collection_covers = covers.share_subjects(links)
    return render_template(
        "account/account.html",
        user=user,
        tokens=tokens.tokens_of(user.id),
        shares=links,
        share_images=images,
        share_collections=collections,
        share_covers=collection_covers,
        new_token=new_token,
        error=error,
    )
