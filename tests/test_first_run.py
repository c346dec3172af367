"""First run (issue #18, point 9): the demo emulator's port taken, the setup page without its
link, the commands pages print, share links on the account page and collection covers."""

from __future__ import annotations

import re
import socket
import time
from datetime import timedelta
from typing import Any

import pytest
import requests
from flask import Flask

from app import covers, demo, setup
from app.auth import accounts
from app.models import Collection, CollectionImage, Image, db, utcnow
from tests.browser import serve_app
from tests.helpers import csrf_token, wait_for_job

PASSWORD = "correct horse battery staple"
BARE_FLASK = re.compile(r"(?<![\w/.])flask --app")


def test_a_taken_emulator_port_falls_back_to_a_free_one_and_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not demo.port_is_free(port)
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        with serve_app(data_dir, ATELIER_EMULATOR_PORT=str(port)) as base:
            created = requests.post(f"{base}/api/jobs", json={"prompt": "a kite"}, timeout=10)
            assert created.status_code == 202, created.text
            job_url = f"{base}/api/jobs/{created.json()['id']}"
            deadline = time.monotonic() + 30
            while (job := requests.get(job_url, timeout=5).json())["status"] not in (
                "succeeded",
                "failed",
            ):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["status"] == "succeeded", job  # the emulator answered, on another port
        log = (data_dir / "server.log").read_text()
        assert f"Port {port} (the built-in Azure emulator's, ATELIER_EMULATOR_PORT)" in log
        assert "is in use by another program" in log
        assert "Either identify and stop that program" not in log  # werkzeug's exit message
    assert demo.port_is_free(port)


@pytest.fixture
def no_account_app(app_factory: Any) -> Flask:
    return app_factory(ATELIER_AUTH="on")


def test_setup_without_its_token_says_where_the_link_is(no_account_app):
    client = no_account_app.test_client()
    with no_account_app.app_context():
        token = setup.ensure_token(no_account_app)

    page = client.get("/setup")
    text = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "no setup to do" not in text.lower()
    assert "setup_token" in text and "/setup?token=" in text
    assert 'name="password"' not in text  # no form without the token

    wrong = client.get("/setup?token=not-it")
    assert wrong.status_code == 403
    assert "not the current one" in wrong.get_data(as_text=True)
    assert 'name="password"' not in wrong.get_data(as_text=True)

    right = client.get(f"/setup?token={token}")
    assert right.status_code == 200 and 'name="password"' in right.get_data(as_text=True)

    with no_account_app.app_context():
        accounts.create_user("ada", PASSWORD, admin=True)
    assert client.get("/setup").status_code == 404  # once an account exists, nothing to do


def test_pages_and_the_terminal_name_the_flask_in_the_virtualenv(no_account_app, capsys):
    client = no_account_app.test_client()
    pages = [client.get("/setup").get_data(as_text=True)]
    setup.announce(no_account_app, "http://127.0.0.1:5000/")
    printed = capsys.readouterr().out
    with no_account_app.app_context():
        accounts.create_user("ada", PASSWORD, admin=True)
    pages.append(client.get("/login").get_data(as_text=True))

    for text in [*pages, printed]:
        assert ".venv/bin/flask --app app" in text
        assert not BARE_FLASK.search(text), text
    assert str(no_account_app.config["ATELIER_DATA_DIR"]) in printed  # where setup_token is


def _image_of_new_job(client: Any, prompt: str) -> int:
    """Generate through the JSON API (outside an app context: the jobs run on their own)."""
    response = client.post("/api/jobs", json={"prompt": prompt}, headers=_api(client))
    assert response.status_code == 202, response.get_data(as_text=True)
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job["images"][0]["id"]


def _api(client: Any) -> dict[str, str]:
    return {"X-CSRFToken": csrf_token(client)}


def test_account_page_names_shared_images_and_collections_with_thumbnails(app_factory):
    app = app_factory(ATELIER_AUTH="on", ATELIER_EMULATOR_LATENCY_SECONDS=0)
    with app.app_context():
        user_id = accounts.create_user("ada", PASSWORD).id
    client = app.test_client()
    form = {"username": "ada", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    assert client.post("/login", data=form).status_code == 303
    image_id = _image_of_new_job(client, "a lighthouse on a cliff at dusk " + "very " * 20)
    with app.app_context():
        image = db.session.get(Image, image_id)
        collection = Collection(name="Seaside", owner_id=user_id)
        db.session.add(collection)
        db.session.flush()
        db.session.add(CollectionImage(collection_id=collection.id, image_id=image.id))
        db.session.commit()
        image_id, collection_id = image.id, collection.id
    token = csrf_token(client)
    for field, value in (("image_id", image_id), ("collection_id", collection_id)):
        made = client.post("/shares", data={"csrf_token": token, field: value, "days": "7"})
        assert made.status_code in (200, 201), made.get_data(as_text=True)

    page = client.get("/account").get_data(as_text=True)
    shares = page[page.index('id="shares-title"') :]
    assert "a lighthouse on a cliff at dusk very" in shares  # the prompt, truncated
    assert "very " * 20 not in shares
    assert f"image {image_id}</a>" not in shares
    assert "Collection Seaside" in shares
    # The image's thumbnail, and the collection's cover (the same, its only image).
    assert (
        shares.count(f'src="/files/thumbs/{image_id}') == 2
        or shares.count(f"/thumbs/{image_id}") >= 2
    ), shares


def test_a_collection_cover_is_its_newest_image_that_can_be_shown(app_factory):
    app = app_factory(ATELIER_EMULATOR_LATENCY_SECONDS=0)
    client = app.test_client()
    ids = [_image_of_new_job(client, prompt) for prompt in ("older", "newer", "newest")]
    with app.app_context():
        older, newer, newest = (db.session.get(Image, image_id) for image_id in ids)
        newer.created_at = older.created_at + timedelta(seconds=1)
        newest.created_at = older.created_at + timedelta(seconds=2)
        newest.deleted_at = utcnow()
        full, empty = Collection(name="Full"), Collection(name="Empty")
        db.session.add_all([full, empty])
        db.session.flush()
        for image in (older, newer, newest):
            db.session.add(CollectionImage(collection_id=full.id, image_id=image.id))
        db.session.commit()

        found = covers.covers([full.id, empty.id])

        assert set(found) == {full.id}
        assert found[full.id].id == newer.id
        assert covers.covers([]) == {}
