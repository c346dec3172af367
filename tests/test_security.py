"""Private by default: sign-in, per-user data, share links, API tokens, CSRF, headers, secrets.

Apps here run with ATELIER_AUTH=on (the default outside tests) against the emulator over
loopback. Two ordinary users, alice and bob, and one administrator, root.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import zipfile
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from werkzeug.routing import IntegerConverter

from app.auth import accounts, exposure, tokens
from app.config import ConfigError
from app.models import (
    ApiToken,
    Image,
    Job,
    LoginAttempt,
    ShareLink,
    User,
    db,
    utcnow,
    write_transaction,
)
from app.security import CONTENT_SECURITY_POLICY
from app.validation import ValidationError
from tests.helpers import EMULATOR_KEY, ROOT, csrf_token, token_in, wait_for_job

PASSWORD = "correct horse battery"
PROMPTS = {"alice": "alice paints a lighthouse in fog", "bob": "bob paints a red tractor"}


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD) -> Any:
    token = csrf_token(client, "/login")
    form = {"username": username, "password": password, "csrf_token": token}
    return client.post("/login", data=form)


@pytest.fixture
def secure_app(app_factory: Any) -> Flask:
    app = app_factory(ATELIER_AUTH="on", ATELIER_EMULATOR_LATENCY_SECONDS=0)
    with app.app_context():
        accounts.create_user("alice", PASSWORD)
        accounts.create_user("bob", PASSWORD)
        accounts.create_user("root", PASSWORD, admin=True)
    return app


def client_of(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, username).status_code == 303
    return client


def token_for(app: Flask, username: str) -> str:
    with app.app_context():
        user = accounts.find_user(username)
        _row, token = tokens.create_token(user.id, "tests")
    return token


def finished_job(app: Flask, client: FlaskClient, username: str) -> dict:
    headers = {"Authorization": f"Bearer {token_for(app, username)}"}
    response = client.post("/api/jobs", json={"prompt": PROMPTS[username]}, headers=headers)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


@pytest.fixture
def two_users(secure_app: Flask) -> dict[str, Any]:
    alice, bob = client_of(secure_app, "alice"), client_of(secure_app, "bob")
    return {
        "app": secure_app,
        "alice": alice,
        "bob": bob,
        "alice_job": finished_job(secure_app, alice, "alice"),
        "bob_job": finished_job(secure_app, bob, "bob"),
    }


def status_of(client: FlaskClient, url: str, **kwargs: Any) -> int:
    """GET url, close the response (file responses hold an open file), return its status."""
    with client.get(url, **kwargs) as response:
        return response.status_code


def _stored_image(app: Flask, job_id: int) -> Image:
    with app.app_context():
        image = db.session.scalar(select(Image).where(Image.job_id == job_id))
        db.session.expunge(image)
    return image


# --- anonymous ----------------------------------------------------------------------------------

PUBLIC = {"static", "account.login", "account.first_account", "health.healthz", "health.readyz"}


def _urls(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route, with 1 / "x" for its arguments."""
    found = []
    for rule in app.url_map.iter_rules():
        if (
            rule.endpoint in PUBLIC
            or rule.endpoint.startswith("shares.")
            and "token" in rule.arguments
        ):
            continue
        values = {
            name: 1 if isinstance(rule._converters[name], IntegerConverter) else "x"
            for name in rule.arguments
        }
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **values)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, url))
    return found


def test_every_endpoint_refuses_anonymous_callers(secure_app):
    client = secure_app.test_client()
    urls = _urls(secure_app)
    assert len(urls) > 40  # the whole map, not a sample
    for endpoint, method, url in urls:
        response = client.open(url, method=method)
        assert response.status_code in (303, 401), (endpoint, method, url, response.status_code)
        if response.status_code == 303:
            assert response.headers["Location"].startswith("/login"), (endpoint, url)
        body = response.get_data(as_text=True)
        assert "alice" not in body and "lighthouse" not in body


def test_anonymous_api_gets_401_json_and_htmx_gets_a_redirect_header(secure_app):
    client = secure_app.test_client()
    response = client.get("/api/jobs")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    htmx = client.get("/partials/jobs/1", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert htmx.headers["HX-Redirect"].startswith("/login")
    page = client.get("/gallery?q=fog")
    assert page.status_code == 303
    assert page.headers["Location"] == "/login?next=/gallery?q%3Dfog"


def test_health_is_public_but_metrics_need_an_admin(secure_app):
    client = secure_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client_of(secure_app, "alice").get("/metrics").status_code == 403
    assert client_of(secure_app, "root").get("/metrics").status_code == 200
    bearer = {"Authorization": f"Bearer {token_for(secure_app, 'root')}"}
    assert secure_app.test_client().get("/metrics", headers=bearer).status_code == 200


# --- sign-in ------------------------------------------------------------------------------------


def test_sign_in_rotates_the_session_and_sign_out_ends_it(secure_app):
    client = secure_app.test_client()
    before = csrf_token(client, "/login")
    response = sign_in(client, "alice")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = client.get_cookie("atelier_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert not cookie.secure
    assert client.get("/").status_code == 200
    # The pre-login CSRF token belonged to the old session.
    stale = client.post("/account/tokens", data={"name": "x", "csrf_token": before})
    assert stale.status_code == 400

    stolen = cookie.value
    assert client.post("/logout", data={"csrf_token": csrf_token(client)}).status_code == 303
    replay = secure_app.test_client()
    replay.set_cookie("atelier_session", stolen)
    assert replay.get("/").status_code == 303  # the server-side session is gone


def test_wrong_password_and_unknown_user_look_the_same(secure_app):
    client = secure_app.test_client()
    wrong = sign_in(client, "alice", "not the password at all")
    unknown = sign_in(client, "mallory", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    message = "The username or password is not right."
    assert message in wrong.get_data(as_text=True)
    assert message in unknown.get_data(as_text=True)


def test_sign_in_is_rate_limited(secure_app):
    client = secure_app.test_client()
    for _ in range(accounts.LOGIN_FAILURES_PER_USER):
        assert sign_in(client, "alice", "wrong password guess").status_code == 401
    blocked = sign_in(client, "alice")  # even the right password waits now
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in blocked.get_data(as_text=True)
    assert sign_in(client, "bob").status_code == 303  # other accounts are not locked
    with secure_app.app_context(), write_transaction() as session:
        session.execute(
            update(LoginAttempt).values(at=utcnow() - accounts.LOGIN_WINDOW - timedelta(1))
        )
    assert sign_in(secure_app.test_client(), "alice").status_code == 303


def test_login_never_redirects_off_site(secure_app):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"):
        client = secure_app.test_client()
        token = csrf_token(client, f"/login?next={target}")
        response = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": target},
        )
        assert response.headers["Location"] == "/", target
    client = secure_app.test_client()
    token = csrf_token(client, "/login")
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/gallery"},
    )
    assert response.headers["Location"] == "/gallery"


def test_passwords_are_hashed_and_rules_enforced(secure_app):
    with secure_app.app_context():
        row = db.session.scalar(select(User).where(User.username == "alice"))
        assert PASSWORD not in row.password_hash and row.password_hash.startswith("scrypt:")
        with pytest.raises(ValidationError, match="at least 12"):
            accounts.create_user("carol", "short")
        with pytest.raises(ValidationError, match="already"):
            accounts.create_user("ALICE", PASSWORD)
        with pytest.raises(ValidationError, match="username"):
            accounts.create_user("../etc", PASSWORD)


def test_changing_the_password_ends_other_sessions(secure_app):
    first, second = client_of(secure_app, "alice"), client_of(secure_app, "alice")
    new = "a much longer new password"
    response = first.post(
        "/account/password",
        data={
            "current": PASSWORD,
            "password": new,
            "confirm": new,
            "csrf_token": csrf_token(first),
        },
    )
    assert response.status_code == 303
    assert first.get("/account").status_code == 200
    assert second.get("/account").status_code == 303
    wrong = first.post(
        "/account/password",
        data={"current": "bad", "password": new, "confirm": new, "csrf_token": csrf_token(first)},
    )
    assert wrong.status_code == 422


def test_first_account_comes_from_the_environment_or_a_one_time_link(app_factory):
    app = app_factory(ATELIER_AUTH="on", ATELIER_ADMIN_PASSWORD="the admin password!")
    with app.app_context():
        assert accounts.bootstrap_admin(app).is_admin
        assert accounts.bootstrap_admin(app) is None  # only when no account exists
    assert sign_in(app.test_client(), "admin", "the admin password!").status_code == 303

    from app import setup

    empty = app_factory(ATELIER_AUTH="on")
    client = empty.test_client()
    assert "No account exists yet" in client.get("/login").get_data(as_text=True)
    # No account yet: a wrong token is refused, and the page says where the real link is.
    guessed = client.get("/setup?token=guess")
    assert guessed.status_code == 403
    assert "setup_token" in guessed.get_data(as_text=True)
    token = setup.ensure_token(empty)
    form = client.get(f"/setup?token={token}").get_data(as_text=True)
    csrf = token_in(form)
    data = {"token": token, "username": "owner", "password": PASSWORD, "csrf_token": csrf}
    assert client.post("/setup", data={**data, "confirm": "different"}).status_code == 422
    assert client.post("/setup", data={**data, "confirm": PASSWORD}).status_code == 303
    assert client.get("/").status_code == 200  # signed in as the new admin
    assert client.get(f"/setup?token={token}").status_code == 404  # used up
    with empty.app_context():
        assert accounts.find_user("owner").is_admin


def test_exposed_servers_need_sign_in_configured(app_factory):
    open_app = app_factory()  # ATELIER_AUTH=off in tests
    exposure.check_exposure(open_app, ["127.0.0.1", "::1", "localhost"])
    with pytest.raises(ConfigError, match="only allowed on 127.0.0.1"):
        exposure.check_exposure(open_app, ["0.0.0.0"])
    no_accounts = app_factory(ATELIER_AUTH="on")
    with pytest.raises(ConfigError, match="ATELIER_ADMIN_PASSWORD"):
        exposure.check_exposure(no_accounts, ["192.168.1.5"])
    with no_accounts.app_context():
        accounts.create_user("owner", PASSWORD, admin=True)
    exposure.check_exposure(no_accounts, ["192.168.1.5"])


def test_python_m_app_refuses_a_public_address_without_sign_in(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "ATELIER_DATA_DIR": str(tmp_path), "ATELIER_AUTH": "off"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "--host", "0.0.0.0", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "ATELIER_AUTH=off is only allowed on 127.0.0.1" in result.stderr


# --- per-user data ------------------------------------------------------------------------------


def test_users_see_only_their_own_work(two_users):
    app, alice, bob = two_users["app"], two_users["alice"], two_users["bob"]
    alice_job, bob_job = two_users["alice_job"], two_users["bob_job"]
    image = _stored_image(app, alice_job["id"])
    ext = image.file_name.rsplit(".", 1)[-1]
    for url in (
        f"/jobs/{alice_job['id']}",
        f"/partials/jobs/{alice_job['id']}",
        f"/api/jobs/{alice_job['id']}",
        f"/images/{image.id}",
        f"/files/images/{image.id}",
        f"/files/thumbs/{image.id}",
        f"/files/{image.sha256}.{ext}",
        f"/files/{image.sha256}-256.webp",
        f"/files/{image.sha256}-512.webp",
    ):
        assert status_of(bob, url) == 404, url
        assert status_of(alice, url) == 200, url
    # Cached answers (job-card states and ETags, gallery pages) never cross users either.
    card = f"/partials/jobs/{alice_job['id']}"
    etag = alice.get(card).headers["ETag"]
    assert alice.get(card, headers={"If-None-Match": etag}).status_code == 304
    assert bob.get(card, headers={"If-None-Match": etag}).status_code == 404
    assert PROMPTS["alice"] in alice.get("/gallery").get_data(as_text=True)
    assert PROMPTS["alice"] not in bob.get("/gallery").get_data(as_text=True)

    refused = alice.post(
        "/api/jobs",
        json={"prompt": "alice's private refusal [refuse]"},
        headers={"X-CSRFToken": csrf_token(alice)},
    )
    assert refused.status_code == 202
    assert wait_for_job(alice, refused.get_json()["id"])["status"] == "failed"
    assert "private refusal" in alice.get("/refusals").get_data(as_text=True)
    for page in ("/refusals", "/history", "/partials/history/active", "/api/jobs?q=private"):
        assert "private refusal" not in bob.get(page).get_data(as_text=True), page

    listed = [job["id"] for job in bob.get("/api/jobs").get_json()["items"]]
    assert listed == [bob_job["id"]]
    for page in ("/", "/gallery", "/history", "/gallery?q=lighthouse", "/refusals"):
        body = bob.get(page).get_data(as_text=True)
        assert PROMPTS["alice"] not in body, page
    assert PROMPTS["alice"] in alice.get("/gallery?q=lighthouse").get_data(as_text=True)

    admin = client_of(app, "root")
    assert admin.get(f"/images/{image.id}").status_code == 200
    everyone = {job["id"] for job in admin.get("/api/jobs").get_json()["items"]}
    assert {alice_job["id"], bob_job["id"]} <= everyone


def test_users_cannot_change_each_others_work(two_users):
    app, alice, bob = two_users["app"], two_users["alice"], two_users["bob"]
    alice_id = two_users["alice_job"]["id"]
    image = _stored_image(app, alice_id)
    csrf = csrf_token(bob)
    assert bob.post(f"/images/{image.id}/favorite", data={"csrf_token": csrf}).status_code == 404
    assert (
        bob.post(f"/partials/images/{image.id}/star", data={"csrf_token": csrf}).status_code == 404
    )
    assert (
        bob.post(
            f"/gallery/images/{image.id}/favorite", data={"csrf_token": csrf, "favorite": "1"}
        ).status_code
        == 404
    )
    bob.post(
        "/gallery/bulk",
        data={"csrf_token": csrf, "action": "delete", "ids": str(image.id)},
    )
    bob.post("/gallery/bulk", data={"csrf_token": csrf, "action": "favorite", "ids": str(image.id)})
    bob_api = {"X-CSRFToken": csrf}
    assert bob.post(f"/api/jobs/{alice_id}/cancel", headers=bob_api).status_code == 404
    assert bob.post(f"/api/jobs/{alice_id}/retry", headers=bob_api).status_code == 404
    assert bob.delete(f"/api/jobs/{alice_id}", headers=bob_api).status_code == 404
    assert bob.post(f"/jobs/{alice_id}/delete", data={"csrf_token": csrf}).status_code == 404
    share = bob.post("/shares", data={"csrf_token": csrf, "image_id": image.id, "days": "7"})
    assert share.status_code == 404

    with app.app_context():
        row = db.session.get(Image, image.id)
        assert row.deleted_at is None and row.favorite is False
        assert db.session.get(Job, alice_id) is not None
        assert db.session.scalar(select(ShareLink.id)) is None
    assert alice.get(f"/images/{image.id}").status_code == 200


def test_zip_downloads_hold_only_the_callers_images(two_users):
    app, bob = two_users["app"], two_users["bob"]
    alice_image = _stored_image(app, two_users["alice_job"]["id"])
    bob_image = _stored_image(app, two_users["bob_job"]["id"])
    response = bob.post(
        "/gallery/zip",
        data={"csrf_token": csrf_token(bob), "ids": [str(alice_image.id), str(bob_image.id)]},
    )
    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(response.get_data())).namelist()
    assert any(str(two_users["bob_job"]["id"]) in name for name in names if name != "manifest.json")
    assert not any(f"-{two_users['alice_job']['id']}-" in name for name in names)
    only_alice = bob.post(
        "/gallery/zip", data={"csrf_token": csrf_token(bob), "ids": str(alice_image.id)}
    )
    assert only_alice.status_code in (400, 404, 422)


def test_collections_are_private(two_users):
    app, alice, bob = two_users["app"], two_users["alice"], two_users["bob"]
    csrf = csrf_token(alice)
    alice.post("/collections", data={"csrf_token": csrf, "name": "Fog studies"})
    with app.app_context():
        from app.models import Collection

        collection_id = db.session.scalar(select(Collection.id))
    # bob may use the same name for his own collection, and sees none of alice's
    bob_csrf = csrf_token(bob)
    assert (
        bob.post("/collections", data={"csrf_token": bob_csrf, "name": "Fog studies"}).status_code
        == 303
    )
    assert bob.get(f"/gallery?collection={collection_id}").status_code in (200, 400, 404)
    assert (
        bob.post(f"/collections/{collection_id}/delete", data={"csrf_token": bob_csrf}).status_code
        == 404
    )
    with app.app_context():
        from app.models import Collection

        assert db.session.get(Collection, collection_id) is not None


# --- share links --------------------------------------------------------------------------------


def _share(client: FlaskClient, **fields: Any) -> str:
    response = client.post("/shares", data={"csrf_token": csrf_token(client), **fields})
    assert response.status_code == 201, response.get_data(as_text=True)
    return re.search(r'id="share-url">([^<]+)<', response.get_data(as_text=True)).group(1)


def test_share_links_open_one_image_to_anyone_until_revoked_or_expired(two_users):
    app, alice = two_users["app"], two_users["alice"]
    image = _stored_image(app, two_users["alice_job"]["id"])
    bob_image = _stored_image(app, two_users["bob_job"]["id"])
    url = _share(alice, image_id=image.id, days="7")
    path = url.split("://", 1)[1].partition("/")[2]
    anonymous = app.test_client()
    page = anonymous.get("/" + path)
    assert page.status_code == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    body = page.get_data(as_text=True)
    assert "lighthouse" in body
    files = re.findall(r'src="([^"]+)"', body)
    assert files and all(status_of(anonymous, src) == 200 for src in files)
    # the link opens that image only
    token = path.split("/")[1]
    other = f"/s/{token}/files/{bob_image.sha256}.{bob_image.file_name.rsplit('.', 1)[-1]}"
    assert status_of(anonymous, other) == 404
    with app.app_context():
        stored = db.session.scalar(select(ShareLink))
        assert token not in stored.token_hash  # only the hash is kept

    with app.app_context(), write_transaction() as session:
        session.execute(update(ShareLink).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert anonymous.get("/" + path).status_code == 404
    assert all(status_of(anonymous, src) == 404 for src in files)

    url2 = _share(alice, image_id=image.id, days="0")
    path2 = "/" + url2.split("://", 1)[1].partition("/")[2]
    assert anonymous.get(path2).status_code == 200
    with app.app_context():
        share_id = db.session.scalar(select(ShareLink.id).where(ShareLink.expires_at.is_(None)))
    csrf = csrf_token(two_users["bob"])
    assert (
        two_users["bob"].post(f"/shares/{share_id}/revoke", data={"csrf_token": csrf}).status_code
        == 404
    )
    assert (
        alice.post(f"/shares/{share_id}/revoke", data={"csrf_token": csrf_token(alice)}).status_code
        == 303
    )
    assert anonymous.get(path2).status_code == 404
    assert anonymous.get("/s/not-a-real-token").status_code == 404


def test_share_link_input_is_checked(two_users):
    alice = two_users["alice"]
    csrf = csrf_token(alice)
    assert alice.post("/shares", data={"csrf_token": csrf}).status_code == 400
    assert alice.post("/shares", data={"csrf_token": csrf, "image_id": "x"}).status_code == 400
    assert alice.post(
        "/shares", data={"csrf_token": csrf, "image_id": "1", "days": "3"}
    ).status_code in (400, 404)
    assert alice.post("/shares", data={"csrf_token": csrf, "image_id": "99999"}).status_code == 404


def test_a_filtered_image_cannot_be_shared(two_users):
    app, alice = two_users["app"], two_users["alice"]
    headers = {"Authorization": f"Bearer {token_for(app, 'alice')}"}
    body = {"prompt": "two moons [filter]", "provider": "azure-async", "n": 2}
    job = wait_for_job(alice, alice.post("/api/jobs", json=body, headers=headers).get_json()["id"])
    filtered = next(image for image in job["images"] if image["status"] == "filtered")

    response = alice.post(
        "/shares", data={"csrf_token": csrf_token(alice), "image_id": str(filtered["id"])}
    )

    assert response.status_code == 400
    assert "Only a stored image can be shared" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(ShareLink)) is None


# --- API tokens ---------------------------------------------------------------------------------


def test_api_tokens_are_hashed_revocable_and_need_no_csrf(secure_app):
    token = token_for(secure_app, "alice")
    client = secure_app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/jobs", headers=bearer).status_code == 200
    created = client.post("/api/jobs", json={"prompt": "a token's job"}, headers=bearer)
    assert created.status_code == 202
    for bad in ("Bearer nope", f"Bearer {token}x", "Basic abc", f"bearer {token[:-1]}"):
        assert client.get("/api/jobs", headers={"Authorization": bad}).status_code == 401, bad
    with secure_app.app_context():
        row = db.session.scalar(select(ApiToken))
        assert row.token_hash == tokens.hash_token(token) and token not in row.prefix * 2
        assert tokens.revoke_token(row.user_id, row.id)
    assert client.get("/api/jobs", headers=bearer).status_code == 401


def test_every_user_has_idempotency_keys_of_their_own(secure_app):
    alice = {"Authorization": f"Bearer {token_for(secure_app, 'alice')}", "Idempotency-Key": "k1"}
    bob = {"Authorization": f"Bearer {token_for(secure_app, 'bob')}", "Idempotency-Key": "k1"}
    client = secure_app.test_client()
    first = client.post("/api/jobs", json={"prompt": "alice's keyed job"}, headers=alice)
    assert first.status_code == 202
    replay = client.post("/api/jobs", json={"prompt": "alice's keyed job"}, headers=alice)
    assert replay.get_json()["id"] == first.get_json()["id"]
    # Bob's "k1" is his own: neither a conflict that reveals Alice used it, nor her job.
    other = client.post("/api/jobs", json={"prompt": "bob's keyed job"}, headers=bob)
    assert other.status_code == 202
    assert other.get_json()["id"] != first.get_json()["id"]
    again = client.post("/api/jobs", json={"prompt": "bob's keyed job"}, headers=bob)
    assert again.get_json()["id"] == other.get_json()["id"]
    with secure_app.app_context():
        stored = db.session.scalars(select(Job.idempotency_key)).all()
    assert "k1" not in stored


def test_tokens_are_made_and_revoked_in_the_account_page(secure_app):
    alice = client_of(secure_app, "alice")
    form = {"name": "nightly", "csrf_token": csrf_token(alice)}
    assert alice.post("/account/tokens", data=form).status_code == 422  # no password
    wrong = alice.post("/account/tokens", data={**form, "current": "not my password"})
    assert wrong.status_code == 422
    with secure_app.app_context():
        assert db.session.scalar(select(ApiToken)) is None
    page = alice.post("/account/tokens", data={**form, "current": PASSWORD})
    assert page.status_code == 201
    token = re.search(r'id="new-token">([^<]+)<', page.get_data(as_text=True)).group(1)
    assert (
        secure_app.test_client()
        .get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 200
    )
    listing = alice.get("/account").get_data(as_text=True)
    assert "nightly" in listing and token not in listing
    with secure_app.app_context():
        token_id = db.session.scalar(select(ApiToken.id))
    bob = client_of(secure_app, "bob")
    assert (
        bob.post(
            f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(bob)}
        ).status_code
        == 404
    )
    assert (
        alice.post(
            f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_token(alice)}
        ).status_code
        == 303
    )
    assert (
        secure_app.test_client()
        .get("/api/jobs", headers={"Authorization": f"Bearer {token}"})
        .status_code
        == 401
    )
    empty = alice.post(
        "/account/tokens", data={"name": " ", "current": PASSWORD, "csrf_token": csrf_token(alice)}
    )
    assert empty.status_code == 422


def test_a_password_change_can_revoke_every_api_token(secure_app):
    token = token_for(secure_app, "alice")
    alice = client_of(secure_app, "alice")
    new = "an entirely different passphrase"
    form = {"current": PASSWORD, "password": new, "confirm": new, "revoke_tokens": "1"}

    response = alice.post("/account/password", data={**form, "csrf_token": csrf_token(alice)})

    assert response.status_code == 303
    assert "1 API token revoked" in alice.get("/account").get_data(as_text=True)
    bearer = {"Authorization": f"Bearer {token}"}
    assert secure_app.test_client().get("/api/jobs", headers=bearer).status_code == 401


# --- CSRF ---------------------------------------------------------------------------------------


def test_every_state_change_needs_a_csrf_token(secure_app):
    alice = client_of(secure_app, "alice")
    posts = [
        (endpoint, method, url)
        for endpoint, method, url in _urls(secure_app)
        if method not in ("GET",)
    ]
    assert len(posts) > 20
    for endpoint, method, url in posts:
        missing = alice.open(url, method=method)
        assert missing.status_code == 400, (endpoint, method, url, missing.status_code)
        wrong = alice.open(url, method=method, headers={"X-CSRFToken": "forged"})
        assert wrong.status_code == 400, (endpoint, url)
    for public in ("/login", "/logout"):
        assert alice.post(public).status_code == 400
    # htmx sends the token as a header; that is accepted
    created = alice.post(
        "/partials/jobs",
        data={"prompt": "through htmx"},
        headers={"HX-Request": "true", "X-CSRFToken": csrf_token(alice)},
    )
    assert created.status_code == 201


def test_open_mode_api_refuses_cross_site_browser_requests(app_factory):
    app = app_factory()  # sign-in off
    client = app.test_client()
    foreign = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    assert client.post("/api/jobs", json={"prompt": "x"}, headers=foreign).status_code == 400
    assert (
        client.post("/api/jobs/1/cancel", headers={"Origin": "https://evil.example"}).status_code
        == 400
    )
    assert client.post("/api/jobs", json={"prompt": "x"}).status_code == 202  # scripts
    same = {"Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/jobs", json={"prompt": "y"}, headers=same).status_code == 202


# --- headers ------------------------------------------------------------------------------------


def test_security_headers_on_pages_partials_files_and_errors(two_users):
    app, alice = two_users["app"], two_users["alice"]
    image = _stored_image(app, two_users["alice_job"]["id"])
    job_id = two_users["alice_job"]["id"]
    for url in ("/", "/gallery", f"/partials/jobs/{job_id}", f"/files/images/{image.id}",
                "/api/jobs", "/no-such-page", "/login"):  # fmt: skip
        with alice.get(url) as response:
            headers = response.headers
        assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, url
        assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
        assert headers["X-Content-Type-Options"] == "nosniff", url
        assert headers["Referrer-Policy"] == "same-origin", url
        assert "Strict-Transport-Security" not in headers  # plain HTTP here
        if response.mimetype == "text/html":
            assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_https_mode_sets_hsts_and_a_secure_host_cookie(app_factory):
    app = app_factory(
        ATELIER_AUTH="on",
        ATELIER_HTTPS="on",
        ATELIER_PUBLIC_URL="https://atelier.example/",
    )
    with app.app_context():
        accounts.create_user("alice", PASSWORD)
    client = app.test_client()
    response = client.get("/login", base_url="https://atelier.example")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    token = token_in(response.get_data(as_text=True))
    signed_in = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": token},
        base_url="https://atelier.example",
        headers={"Referer": "https://atelier.example/login"},
    )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith("__Host-atelier=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/" in cookie and "Domain" not in cookie


# --- files and traversal ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/files/..%2f..%2fsecret_key",
        "/files/%2e%2e%2f%2e%2e%2fsecret_key",
        "/files/%252e%252e%252fsecret_key",
        "/files/images/..%2fsecret_key",
        "/files/thumbs/%2e%2e",
        "/files/../secret_key",
        "/files/..%5csecret_key",
        "/static/..%2fapp%2fconfig.py",
        "/static/%252e%252e/app/config.py",
        "/files/" + "a" * 64 + ".png%00.png",
        "/files/" + "A" * 64 + ".png",
        "/files/secret_key",
        "/s/x/files/..%2f..%2fsecret_key",
    ],
)
def test_traversal_attempts_find_nothing(secure_app, path):
    alice = client_of(secure_app, "alice")
    response = alice.get(path)
    assert response.status_code == 404, (path, response.status_code)
    assert b"secret" not in response.get_data().lower().replace(b"secret_key", b"")


# --- secrets ------------------------------------------------------------------------------------


def test_the_key_is_redacted_from_logs_even_when_code_logs_it(secure_app, caplog):
    caplog.set_level(logging.INFO)
    logging.getLogger("app.test").warning("calling Azure with api-key %s", EMULATOR_KEY)
    logging.getLogger("app.test").info("key=" + EMULATOR_KEY)
    assert EMULATOR_KEY not in caplog.text
    assert caplog.text.count("[redacted]") == 2


def test_the_key_is_never_rendered(two_users):
    app, alice = two_users["app"], two_users["alice"]
    admin = client_of(app, "root")
    # GuardedClient (tests/helpers.py) fails on any response with the key; visit everything.
    for client in (alice, admin):
        for url in ("/", "/gallery", "/history", "/account", "/refusals", "/api/providers",
                    "/api/jobs", "/metrics", "/readyz"):  # fmt: skip
            client.get(url)
    assert app.config["AZURE_OPENAI_API_KEY"] == EMULATOR_KEY


def test_secrets_can_come_from_files(tmp_path):
    from app.config import load_settings

    key_file = tmp_path / "key"
    key_file.write_text(EMULATOR_KEY + "\n")
    settings = load_settings(
        {
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/",
            "AZURE_OPENAI_DEPLOYMENT": "studio=gpt-image-2",
            "AZURE_OPENAI_API_KEY_FILE": str(key_file),
        },
        str(tmp_path),
    )
    assert settings["AZURE_OPENAI_API_KEY"] == EMULATOR_KEY
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings({"OPENAI_API_KEY_FILE": str(tmp_path / "missing")}, str(tmp_path))
