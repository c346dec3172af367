"""Cached gallery pages and job cards answered with 304 (issue #8) stay correct: a cached page
changes after every kind of change the gallery shows, made by any process; viewers, sessions,
messages and the "new" marker each get what they would get without the cache."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import g, request
from sqlalchemy import select, update

from app import curation, page_cache
from app.models import Collection, Job, db, utcnow, write_transaction
from app.views import gallery as gallery_views
from tests.helpers import age_job, cells, csrf_token, get, insert_images, make_app, post, token_in


@pytest.fixture
def app(idle_app):
    """An app without a worker (nothing else writes), whose viewer comes from a header (as the
    sign-in code will set `g.viewer_key`)."""

    @idle_app.before_request
    def _viewer() -> None:
        g.viewer_key = request.headers.get("X-Test-Viewer", "")

    return idle_app


@pytest.fixture
def renders(monkeypatch) -> list[str]:
    """The URLs of the gallery pages actually rendered (not served from the cache)."""
    seen: list[str] = []
    real = gallery_views._render_gallery

    def counting(args, **kwargs):
        seen.append(request.full_path)
        return real(args, **kwargs)

    monkeypatch.setattr(gallery_views, "_render_gallery", counting)
    return seen


def page(client, url: str = "/gallery", **headers: str) -> str:
    status, body, _ = get(client, url, headers=headers)
    assert status == 200, body
    return body


def older_images(app, count: int) -> list[int]:
    """Images made before the test's first look (the "new" marker stays off)."""
    return insert_images(app, count, start=utcnow() - timedelta(hours=1))


def make_collection(app, name: str) -> int:
    with app.app_context():
        return curation.create_collection(name, owner_id=None).id


# --- the gallery ---------------------------------------------------------------------------------


def test_a_repeat_visit_is_served_from_the_cache_with_the_sessions_own_token(app, renders):
    ids = older_images(app, 3)
    first, second = app.test_client(), app.test_client()

    one = page(first)
    again = page(first)
    other = page(second)

    assert renders == ["/gallery?"]
    assert cells(one) == cells(again) == cells(other) == list(reversed(ids))
    assert page_cache.CSRF_PLACEHOLDER not in other
    assert token_in(one) != token_in(other)
    # The token in the cached page is the session's own: its form is accepted.
    url = f"/gallery/images/{ids[0]}/favorite"
    status, _, _ = post(second, url, {"favorite": "1"}, token=False)
    assert status == 400  # no token at all is refused...
    with second.post(url, data={"favorite": "1", "csrf_token": token_in(other)}) as response:
        assert response.status_code == 303  # ...the cached page's token is not


def star(app, client, ids):
    post(client, f"/partials/gallery/images/{ids[0]}/favorite", {"favorite": "1"}, htmx=True)


def trash(app, client, ids):
    post(client, "/partials/gallery/bulk", {"action": "delete", "ids": [ids[0]]}, htmx=True)


def new_image(app, client, ids):
    insert_images(app, 1, prompt="newer")


def delete_job(app, client, ids):
    with app.app_context():
        job_id = curation.db.session.get(curation.Image, ids[0]).job_id
    assert client.delete(f"/api/jobs/{job_id}").status_code == 204


def newer_in_another_process(app, client, ids):
    """The worker process storing an image: another app on the same data folder and database."""
    other = make_app(app.config["ATELIER_DATA_DIR"])
    insert_images(other, 1, prompt="from the worker")


CHANGES: dict[str, tuple[str, Callable, Callable[[list[int], list[int]], bool]]] = {
    "new image": ("/gallery", new_image, lambda ids, shown: len(shown) == 4),
    "new image, another process": (
        "/gallery",
        newer_in_another_process,
        lambda ids, shown: len(shown) == 4,
    ),
    "star": ("/gallery?favorites=1", star, lambda ids, shown: shown == [ids[0]]),
    "trash": ("/gallery", trash, lambda ids, shown: ids[0] not in shown),
    "job deleted": ("/gallery", delete_job, lambda ids, shown: ids[0] not in shown),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_cached_page_changes_after_the_change(app, renders, change):
    url, make_change, expected = CHANGES[change]
    ids = older_images(app, 3)
    client = app.test_client()
    before = cells(page(client, url))
    assert cells(page(client, url)) == before  # now cached
    assert len(renders) == 1

    make_change(app, client, ids)

    after = cells(page(client, url))
    assert expected(ids, after), (before, after)


def test_restore_and_purge_show_in_cached_pages(app, renders):
    ids = older_images(app, 3)
    client = app.test_client()
    post(client, "/partials/gallery/bulk", {"action": "delete", "ids": [ids[0]]}, htmx=True)
    assert ids[0] not in cells(page(client))
    assert cells(page(client, "/gallery?trash=1")) == [ids[0]]

    post(client, "/partials/gallery/bulk", {"action": "restore", "ids": [ids[0]]}, htmx=True)
    assert ids[0] in cells(page(client))
    assert cells(page(client, "/gallery?trash=1")) == []

    post(client, "/partials/gallery/bulk", {"action": "delete", "ids": [ids[1]]}, htmx=True)
    assert cells(page(client, "/gallery?trash=1")) == [ids[1]]
    post(client, "/gallery/trash/empty")
    page(client, "/gallery")  # shows the message once (never cached)
    assert cells(page(client, "/gallery?trash=1")) == []


def test_collection_changes_show_in_cached_pages(app, renders):
    ids = older_images(app, 3)
    client = app.test_client()
    collection_id = make_collection(app, "Seaside")
    url = f"/gallery?collection={collection_id}"
    assert cells(page(client, url)) == []
    assert "Seaside" in page(client, "/gallery")

    add = {"action": "add", "ids": [ids[0]], "collection_id": str(collection_id)}
    post(client, "/partials/gallery/bulk", add, htmx=True)
    assert cells(page(client, url)) == [ids[0]]

    remove = {"action": "remove", "ids": [ids[0]], "from_collection": str(collection_id)}
    post(client, "/partials/gallery/bulk", remove, htmx=True)
    assert cells(page(client, url)) == []

    with app.app_context(), write_transaction() as session:  # a rename
        session.execute(
            update(Collection).where(Collection.id == collection_id).values(name="Harbour")
        )
    assert "Collection: Harbour" in page(client, url)

    with app.app_context():
        curation.delete_collection(collection_id)
    assert "Harbour" not in page(client, "/gallery")


def test_each_viewer_has_their_own_cached_pages(app, renders):
    older_images(app, 2)
    client = app.test_client()

    page(client, X_Test_Viewer="alice")
    page(client, X_Test_Viewer="alice")
    page(client, X_Test_Viewer="bob")

    assert renders == ["/gallery?", "/gallery?"]


def test_a_message_is_shown_once_and_never_cached(app, renders):
    ids = older_images(app, 2)
    client = app.test_client()
    page(client)

    post(client, "/gallery/bulk", {"action": "favorite", "ids": [ids[0]]})

    assert "Starred 1 image." in page(client)
    assert "Starred 1 image." not in page(client)


def test_the_new_marker_follows_each_visitors_last_look(app, renders):
    client = app.test_client()
    page(client)  # the last look: the cookie says now
    insert_images(app, 1)

    marked = page(client)
    unmarked = page(app.test_client())  # never looked: nothing is "new"
    again = page(client)  # looked a moment ago: nothing is new any more

    assert "badge-new" in marked
    assert "badge-new" not in unmarked
    assert "badge-new" not in again


# --- job cards ------------------------------------------------------------------------------------


def create_job(client) -> int:
    response = client.post("/api/jobs", json={"prompt": "a lighthouse at dusk"})
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def create_old_job(app, client) -> int:
    """A job ten minutes old (tests.helpers.age_job: its card's ETag stays put)."""
    job_id = create_job(client)
    age_job(app, job_id)
    return job_id


def test_a_repeat_poll_of_an_unchanged_card_is_not_modified(app):
    client = app.test_client()
    job_id = create_old_job(app, client)

    first = client.get(f"/partials/jobs/{job_id}")
    etag = first.headers["ETag"]
    repeat = client.get(f"/partials/jobs/{job_id}", headers={"If-None-Match": etag})

    assert first.status_code == 200
    assert first.headers["Cache-Control"] == "private, no-cache"
    assert "hx-trigger" in first.get_data(as_text=True)
    assert repeat.status_code == 304
    assert repeat.get_data() == b""
    assert repeat.headers["ETag"] == etag
    assert repeat.headers["Cache-Control"] == "private, no-cache"


def test_a_changed_card_is_sent_again_and_the_final_one_stops_polling(app):
    client = app.test_client()
    job_id = create_job(client)
    etag = client.get(f"/partials/jobs/{job_id}").headers["ETag"]

    client.post(f"/api/jobs/{job_id}/cancel")
    changed = client.get(f"/partials/jobs/{job_id}", headers={"If-None-Match": etag})

    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    body = changed.get_data(as_text=True)
    assert "Canceled" in body
    assert "hx-get" not in body


def test_a_card_changed_by_another_process_is_sent_again(app):
    client = app.test_client()
    job_id = create_job(client)
    etag = client.get(f"/partials/jobs/{job_id}").headers["ETag"]
    other = make_app(app.config["ATELIER_DATA_DIR"])  # the worker process

    with other.app_context(), write_transaction() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(status="running", phase="polling")
        )
    changed = client.get(f"/partials/jobs/{job_id}", headers={"If-None-Match": etag})

    assert changed.status_code == 200
    assert "Generating" in changed.get_data(as_text=True)


def test_card_tags_differ_by_viewer_and_session(app):
    client = app.test_client()
    job_id = create_old_job(app, client)
    url = f"/partials/jobs/{job_id}"
    csrf_token(client)  # a session with a token, as after any page

    mine = client.get(url).headers["ETag"]
    theirs = client.get(url, headers={"X-Test-Viewer": "bob"}).headers["ETag"]
    another_session = app.test_client().get(url).headers["ETag"]

    assert len({mine, theirs, another_session}) == 3
    assert client.get(url, headers={"If-None-Match": mine}).status_code == 304
    other_viewer = {"If-None-Match": mine, "X-Test-Viewer": "bob"}
    assert client.get(url, headers=other_viewer).status_code == 200


def test_a_missing_job_is_404_whatever_the_tag(app):
    client = app.test_client()
    job_id = create_job(client)
    etag = client.get(f"/partials/jobs/{job_id}").headers["ETag"]
    assert client.delete(f"/api/jobs/{job_id}").status_code in (204, 409)

    gone = client.get(f"/partials/jobs/{job_id + 1000}", headers={"If-None-Match": etag})

    assert gone.status_code == 404


def test_a_card_is_never_rendered_from_data_older_than_its_state(idle_app):
    """A request that read the database before the card (as the sign-in check will) must not
    render an older snapshot than the state its card is cached under."""
    job_id = None
    other = make_app(idle_app.config["ATELIER_DATA_DIR"])  # the worker process

    @idle_app.before_request
    def _read_then_another_process_writes() -> None:
        if job_id is None or not request.path.startswith("/partials/"):
            return
        db.session.scalar(select(Job.status).where(Job.id == job_id))  # a read transaction
        with other.app_context(), write_transaction() as session:
            session.execute(
                update(Job).where(Job.id == job_id).values(status="running", phase="polling")
            )

    client = idle_app.test_client()
    job_id = create_job(client)

    card = client.get(f"/partials/jobs/{job_id}").get_data(as_text=True)

    assert "Generating" in card


def test_a_gallery_page_is_never_rendered_from_data_older_than_its_version(idle_app):
    """The same for the gallery: a page is cached under the version read before its queries."""
    armed = False
    other = make_app(idle_app.config["ATELIER_DATA_DIR"])  # the worker process

    @idle_app.before_request
    def _read_then_another_process_writes() -> None:
        if armed:
            db.session.scalar(select(Job.id).limit(1))  # a read transaction
            insert_images(other, 1, prompt="stored meanwhile")

    older_images(idle_app, 2)
    client = idle_app.test_client()
    armed = True

    shown = cells(page(client))
    armed = False

    assert len(shown) == 3
    assert len(cells(page(client))) == 3
