"""The image page's neighbours inside the gallery's filter (issue #18, point 4): the Newer and
Older links (and so ← →) pick the next image the filtered gallery shows, and keep the filter in
their query; a filter the gallery refuses is refused here too. Also the siblings strip (the
job's other images) and its links."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from sqlalchemy import select, update

from app import curation, search
from app.auth import accounts
from app.models import Image, Job, utcnow, write_transaction
from tests.helpers import generate, get, insert_images, signed_in

BASE = utcnow().replace(microsecond=0) - timedelta(days=1)


def add(app: Flask, prompt: str, second: int, **job: Any) -> int:
    """One stored image (one job, in the search index) made `second` seconds after BASE; its
    id. Its prompt is `prompt` and a number."""
    [image_id] = insert_images(app, 1, prompt=prompt, start=BASE + timedelta(seconds=second), **job)
    with app.app_context(), write_transaction() as session:
        job_id, text = session.execute(
            select(Job.id, Job.prompt).join(Image).where(Image.id == image_id)
        ).one()
        search.index_job(session, job_id, text, None)
    return image_id


def neighbour_links(client, image_id: int, query: str = "") -> dict[str, tuple[int, dict]]:
    """The page's Newer (prev) and Older (next) links: {rel: (image id, query parameters)}."""
    status, page, _ = get(client, f"/images/{image_id}{query}")
    assert status == 200, page[:300]
    nav = re.search(r'<nav class="image-nav".*?</nav>', page, re.S).group(0)
    links = {}
    for rel, href in re.findall(r'<a rel="(prev|next)" href="([^"]+)"', nav):
        url = urlsplit(href.replace("&amp;", "&"))
        links[rel] = (int(url.path.rsplit("/", 1)[1]), parse_qs(url.query))
    return links


def set_favorite(app: Flask, *image_ids: int) -> None:
    with app.app_context(), write_transaction() as session:
        session.execute(update(Image).where(Image.id.in_(image_ids)).values(favorite=True))


def test_without_a_filter_the_neighbours_are_the_whole_gallery_and_links_have_no_query(app):
    ids = [add(app, "row", second) for second in range(3)]

    links = neighbour_links(app.test_client(), ids[1])

    assert links == {"prev": (ids[2], {}), "next": (ids[0], {})}


def test_favourites_filter_skips_unstarred_images_and_keeps_the_filter(app):
    ids = [add(app, "row", second) for second in range(5)]
    set_favorite(app, ids[0], ids[2], ids[4])
    client = app.test_client()

    links = neighbour_links(client, ids[2], "?favorites=1")

    assert links == {"prev": (ids[4], {"favorites": ["1"]}), "next": (ids[0], {"favorites": ["1"]})}
    # At the ends of the filtered gallery there is nothing further, although the unfiltered
    # gallery goes on.
    assert neighbour_links(client, ids[4], "?favorites=1") == {
        "next": (ids[2], {"favorites": ["1"]})
    }
    assert neighbour_links(client, ids[0], "?favorites=1") == {
        "prev": (ids[2], {"favorites": ["1"]})
    }


def test_search_filter_moves_between_matching_images_only(app):
    fox = [add(app, "red fox", second) for second in (0, 2, 4)]
    [add(app, "blue whale", second) for second in (1, 3, 5)]

    links = neighbour_links(app.test_client(), fox[1], "?q=fox")

    assert links == {"prev": (fox[2], {"q": ["fox"]}), "next": (fox[0], {"q": ["fox"]})}


def test_model_filter_and_a_second_filter_both_hold(app):
    gpt = [add(app, "cat", second, model="gpt-image-1") for second in (0, 2, 4, 6)]
    [add(app, "cat", second) for second in (1, 3, 5)]  # dall-e-2
    set_favorite(app, gpt[0], gpt[2], gpt[3])

    assert neighbour_links(app.test_client(), gpt[1], "?model=gpt-image-1") == {
        "prev": (gpt[2], {"model": ["gpt-image-1"]}),
        "next": (gpt[0], {"model": ["gpt-image-1"]}),
    }
    both = {"model": ["gpt-image-1"], "favorites": ["1"]}
    assert neighbour_links(app.test_client(), gpt[2], "?model=gpt-image-1&favorites=1") == {
        "prev": (gpt[3], both),
        "next": (gpt[0], both),
    }


def test_an_image_outside_the_filter_still_gets_neighbours_inside_it(app):
    ids = [add(app, "row", second) for second in range(3)]
    set_favorite(app, ids[0], ids[2])

    links = neighbour_links(app.test_client(), ids[1], "?favorites=1")

    assert links == {"prev": (ids[2], {"favorites": ["1"]}), "next": (ids[0], {"favorites": ["1"]})}


def test_collection_and_trash_filters(app):
    ids = [add(app, "row", second) for second in range(4)]
    with app.app_context():
        holiday = curation.create_collection("Holiday", owner_id=None).id
        curation.add_to_collection(holiday, [ids[0], ids[3]])
    client = app.test_client()

    assert neighbour_links(client, ids[3], f"?collection={holiday}") == {
        "next": (ids[0], {"collection": [str(holiday)]})
    }

    with app.app_context(), write_transaction() as session:
        session.execute(update(Image).where(Image.id.in_([ids[1], ids[2]])).values(deleted_at=BASE))
    assert neighbour_links(client, ids[2], "?trash=1") == {"next": (ids[1], {"trash": ["1"]})}
    # Without the trash filter, the trash is skipped.
    assert neighbour_links(client, ids[3]) == {"next": (ids[0], {})}


def test_a_status_filter_still_links_only_to_stored_images(app):
    stored = [add(app, "row", second) for second in (0, 2)]
    add(app, "row", 1, status="filtered")

    links = neighbour_links(app.test_client(), stored[1], "?status=filtered")

    assert links == {"next": (stored[0], {"status": ["filtered"]})}


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?since=yesterday", "Dates look like 2026-11-25."),
        ("?status=lost", "The status must be one of"),
        ("?collection=abc", "The collection must be a collection id."),
        ("?since=2026-02-02&amp;until=2026-01-01", "The end date is before the start date."),
    ],
)
def test_a_filter_the_gallery_refuses_is_refused_with_its_reason(app, query, message):
    [image_id] = [add(app, "row", 0)]

    status, page, _ = get(app.test_client(), f"/images/{image_id}{query.replace('&amp;', '&')}")

    assert status == 400
    assert message in page


def test_unknown_collection_and_unknown_image_are_not_found(app):
    [image_id] = [add(app, "row", 0)]
    client = app.test_client()

    assert get(client, f"/images/{image_id}?collection=987654")[0] == 404
    assert get(client, "/images/987654?favorites=1")[0] == 404


PASSWORD = "correct horse battery"


@pytest.fixture
def two_users(app_factory: Any) -> Flask:
    app = app_factory(ATELIER_AUTH="on")
    with app.app_context():
        accounts.create_user("alice", PASSWORD)
        accounts.create_user("bob", PASSWORD)
    return app


def own(app: Flask, username: str, *image_ids: int) -> None:
    """Give these images (and their jobs) to `username`."""
    with app.app_context():
        user_id = accounts.find_user(username).id
        with write_transaction() as session:
            session.execute(update(Image).where(Image.id.in_(image_ids)).values(owner_id=user_id))
            job_ids = select(Image.job_id).where(Image.id.in_(image_ids))
            session.execute(update(Job).where(Job.id.in_(job_ids)).values(owner_id=user_id))


def test_neighbours_never_cross_to_another_users_images(two_users):
    app = two_users
    ids = [add(app, "cat", second) for second in range(3)]
    own(app, "alice", ids[0], ids[2])
    own(app, "bob", ids[1])
    set_favorite(app, *ids)
    alice = signed_in(app, "alice", PASSWORD)

    for query, args in (("", {}), ("?favorites=1&q=cat", {"favorites": ["1"], "q": ["cat"]})):
        assert neighbour_links(alice, ids[2], query) == {"next": (ids[0], args)}
        assert neighbour_links(alice, ids[0], query) == {"prev": (ids[2], args)}
    # Bob's image is not found for alice, with or without a filter.
    assert get(alice, f"/images/{ids[1]}")[0] == 404
    assert get(alice, f"/images/{ids[1]}?favorites=1")[0] == 404


# --- the siblings strip -------------------------------------------------------------------------


def test_siblings_strip_shows_the_jobs_images_and_marks_the_current_one(client):
    job = generate(client, prompt="three apples", n=3)
    first, second, third = (image["id"] for image in job["images"])

    status, page, _ = get(client, f"/images/{second}?favorites=1")

    assert status == 200
    strip = re.search(r'<nav class="siblings".*?</nav>', page, re.S).group(0)
    assert "Image 2 of 3 in this job" in strip
    assert re.search(rf'aria-current="page">\s*<img src="/files/thumbs/{second}"', strip), strip
    assert f'href="/images/{first}?favorites=1"' in strip
    assert f'href="/images/{third}?favorites=1"' in strip
    assert f'href="/images/{second}' not in strip  # the current one is no link


def test_a_one_image_job_has_no_siblings_strip(app):
    [image_id] = [add(app, "row", 0)]

    status, page, _ = get(app.test_client(), f"/images/{image_id}")

    assert status == 200
    assert 'class="siblings"' not in page


def test_image_page_without_filter_has_no_gallery_back_link(app):
    [image_id] = [add(app, "row", 0)]
    client = app.test_client()

    assert "Back to the filtered gallery" not in get(client, f"/images/{image_id}")[1]
    page = get(client, f"/images/{image_id}?q=row")[1]
    assert '<a class="image-nav-gallery" href="/gallery?q=row">' in page
