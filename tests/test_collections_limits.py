"""Collections: a cap per account, and an administrator's pages list their own unless asked."""

from __future__ import annotations

from typing import Any

import pytest

from app import curation
from app.auth.accounts import create_user, find_user
from tests.helpers import csrf_token

PASSWORD = "correct horse battery staple"


@pytest.fixture
def accounts(app_factory: Any):
    app = app_factory(ATELIER_AUTH="on")
    with app.app_context():
        create_user("alice", PASSWORD)
        create_user("root", PASSWORD, admin=True)
    return app


def signed_in(app, username: str):
    client = app.test_client()
    form = {"username": username, "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    assert client.post("/login", data=form).status_code == 303
    return client


def make_collection(client, name: str):
    return client.post("/collections", data={"name": name, "csrf_token": csrf_token(client)})


def test_an_account_cannot_make_more_collections_than_the_cap(accounts, monkeypatch):
    monkeypatch.setattr(curation, "MAX_COLLECTIONS_PER_OWNER", 3)
    alice = signed_in(accounts, "alice")
    for name in ("one", "two", "three"):
        assert make_collection(alice, name).status_code == 303

    refused = make_collection(alice, "four")

    assert refused.status_code == 422
    assert "3 collections, the most one account can have" in refused.get_data(as_text=True)
    assert "four" not in alice.get("/collections").get_data(as_text=True).split("</form>", 1)[1]
    # The cap is per account: another account still can.
    assert make_collection(signed_in(accounts, "root"), "four").status_code == 303


def test_an_administrator_sees_their_own_collections_unless_asking_for_everyones(accounts):
    alice, root = signed_in(accounts, "alice"), signed_in(accounts, "root")
    make_collection(alice, "alice's sketches")
    make_collection(root, "root's picks")

    own = root.get("/collections").get_data(as_text=True)
    everyone = root.get("/collections?owner=all").get_data(as_text=True)
    gallery = root.get("/gallery").get_data(as_text=True)

    assert "root&#39;s picks" in own and "alice&#39;s sketches" not in own
    assert "Everyone's collections" in own
    assert "root&#39;s picks" in everyone and "alice&#39;s sketches" in everyone
    assert "alice&#39;s sketches" not in gallery  # the add-to-collection menu: own only


def test_asking_for_everyones_collections_shows_a_non_administrator_only_their_own(accounts):
    alice, root = signed_in(accounts, "alice"), signed_in(accounts, "root")
    make_collection(root, "root's picks")

    page = alice.get("/collections?owner=all").get_data(as_text=True)

    assert "root&#39;s picks" not in page
    assert "Everyone's collections" not in page


def test_a_collection_made_outside_a_request_belongs_to_the_owner_it_is_given(accounts):
    with accounts.app_context():
        collection = curation.create_collection("From the shell", owner_id=find_user("alice").id)
        assert collection.owner_id == find_user("alice").id

    assert "From the shell" in signed_in(accounts, "alice").get("/collections").text
    assert "From the shell" not in signed_in(accounts, "root").get("/collections").text
