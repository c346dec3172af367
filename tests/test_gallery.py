"""The gallery: keyset paging and infinite scroll, filters and search, favourites, collections,
bulk actions, the trash with undo, ZIP downloads, content-addressed files, "new since"."""

from __future__ import annotations

import hashlib
import html
import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import event, func, select

from app import curation
from app.models import Collection, Image, db, utcnow
from app.views.display import placeholder_class
from tests.helpers import cells, csrf_token, generate, get, insert_images, post

SMALL_PAGES = {"GALLERY_PAGE_SIZE": 3}
DALLE3 = {"AZURE_OPENAI_DEPLOYMENT": "dall-e-3=dall-e-3", "AZURE_OPENAI_ASYNC_DALLE2": "on"}


# --- helpers ------------------------------------------------------------------------------------


def stored_ids(job: dict) -> list[int]:
    return [image["id"] for image in job["images"] if image["status"] == "stored"]


def older_link(page: str) -> str | None:
    match = re.search(r'<a rel="next"[^>]* href="([^"]+)"', page)
    return match.group(1).replace("&amp;", "&") if match else None


def sentinel(page: str) -> str | None:
    match = re.search(r'<li class="sentinel"[^>]*>', page, re.S)
    return match.group(0).replace("&amp;", "&") if match else None


def attribute(tag: str, name: str) -> str:
    match = re.search(rf'{name}="([^"]*)"', tag)
    assert match, f"{name} missing in {tag}"
    return match.group(1)


def form_fields(form: str) -> dict[str, str]:
    """The hidden fields of a rendered form (csrf_token left out: `post` adds a fresh one)."""
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    fields.pop("csrf_token", None)
    return {name: html.unescape(value) for name, value in fields.items()}


def favorite_of(app, image_id: int) -> bool:
    with app.app_context():
        return db.session.get(Image, image_id).favorite


def trashed(app, image_ids) -> list[bool]:
    with app.app_context():
        return [db.session.get(Image, i).deleted_at is not None for i in image_ids]


def make_collection(app, name: str) -> int:
    with app.app_context():
        return curation.create_collection(name, owner_id=None).id


# --- paging -------------------------------------------------------------------------------------


@pytest.fixture
def small_app(app_factory):
    """No worker; pages of three images."""
    return app_factory(**SMALL_PAGES)


def test_keyset_paging_shows_every_image_once_while_new_ones_arrive(small_app):
    client = small_app.test_client()
    original = insert_images(small_app, 8, prompt="old", start=utcnow() - timedelta(hours=1))
    seen: list[int] = []

    url = "/gallery"
    while url:
        status, page, _ = get(client, url)
        assert status == 200
        seen += cells(page)
        insert_images(small_app, 2, prompt="new")  # arrive between pages, newest of all
        url = older_link(page)

    assert seen == list(reversed(original))


def test_infinite_scroll_partial_brings_the_next_cells_and_a_new_sentinel(small_app):
    client = small_app.test_client()
    ids = list(reversed(insert_images(small_app, 7)))

    _, first, _ = get(client, "/gallery")
    first_sentinel = sentinel(first)
    assert first_sentinel is not None
    assert attribute(first_sentinel, "hx-trigger") == "revealed"
    assert attribute(first_sentinel, "hx-swap") == "outerHTML"
    assert attribute(first_sentinel, "hx-target") == "this"
    partial_url = attribute(first_sentinel, "hx-get")
    assert partial_url.startswith("/partials/gallery?")
    cursor = parse_qs(urlsplit(partial_url).query)["after"][0]
    assert attribute(first_sentinel, "hx-replace-url") == f"/gallery?after={cursor}"

    _, second, _ = get(client, partial_url)
    _, third, _ = get(client, attribute(sentinel(second), "hx-get"))

    assert cells(first) == ids[:3]
    assert cells(second) == ids[3:6]
    assert cells(third) == ids[6:]
    assert "<html" not in second
    assert sentinel(third) is None  # the last page ends the scrolling
    assert 'rel="next"' not in third


def test_a_page_opened_deep_links_back_to_newer_images(small_app):
    client = small_app.test_client()
    ids = list(reversed(insert_images(small_app, 6)))
    _, first, _ = get(client, "/gallery")

    _, second, _ = get(client, older_link(first))
    newer = re.search(r'<a rel="prev"[^>]* href="([^"]+)"', second).group(1).replace("&amp;", "&")
    _, back, _ = get(client, newer)

    assert cells(second) == ids[3:]
    assert cells(back) == ids[:3]


def test_gallery_page_costs_the_same_queries_for_few_or_many_images(app_factory):
    app = app_factory()
    client = app.test_client()
    client.get("/gallery").close()  # warm up the engine and the templates
    statements: list[str] = []

    def count(*args):
        statements.append(args[2])

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        insert_images(app, 2)
        statements.clear()
        client.get("/gallery").close()
        few = len(statements)
        insert_images(app, 40, prompt="more")
        statements.clear()
        client.get("/gallery").close()
        many = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert few == many
    assert sum("FROM images" in s and "JOIN jobs" in s for s in statements) == 1


# --- filters and search -------------------------------------------------------------------------


def test_each_filter_narrows_the_gallery_and_filters_combine(small_app):
    client = small_app.test_client()
    start = datetime(2026, 3, 10, 12, tzinfo=UTC)
    plain = insert_images(small_app, 2, prompt="plain", start=start)
    big = insert_images(small_app, 1, prompt="big", size="1024x1024", start=start)
    dalle3 = insert_images(
        small_app, 1, prompt="three", model="dall-e-3", size="1024x1024", start=start
    )
    later = insert_images(small_app, 1, prompt="later", start=start + timedelta(days=5))
    filtered = insert_images(
        small_app, 1, prompt="refused", status="filtered", error_message="The safety system said no"
    )
    with small_app.app_context():
        curation.set_favorite([plain[0], dalle3[0]], True)
        holiday = curation.create_collection("Holiday", owner_id=None).id
        curation.add_to_collection(holiday, [plain[1], big[0]])
        curation.trash([later[0]])

    def shown(query: str) -> set[int]:
        found: set[int] = set()
        url = f"/gallery?{query}"
        while url:
            status, page, _ = get(client, url)
            assert status == 200, page
            found |= set(cells(page))
            url = older_link(page)
        return found

    assert shown("") == {*plain, *big, *dalle3}
    assert shown("size=1024x1024") == {*big, *dalle3}
    assert shown("model=dall-e-3") == set(dalle3)
    assert shown("model=dall-e-2&size=1024x1024") == set(big)
    assert shown("favorites=1") == {plain[0], *dalle3}
    assert shown("favorites=1&model=dall-e-2") == {plain[0]}
    assert shown(f"collection={holiday}") == {plain[1], *big}
    assert shown("since=2026-03-15") == set()
    assert shown("since=2026-03-15&trash=1") == set(later)
    assert shown("until=2026-03-10") == {*plain, *big, *dalle3}
    assert shown("trash=1") == set(later)
    assert shown("status=filtered") == set(filtered)
    _, refused_page, _ = get(client, "/gallery?status=filtered")
    assert "The safety system said no" in refused_page


def test_filters_stay_in_the_paging_links(small_app):
    client = small_app.test_client()
    insert_images(small_app, 5, prompt="wide", size="1024x1024")

    _, page, _ = get(client, "/gallery?size=1024x1024&favorites=0")

    link = parse_qs(urlsplit(older_link(page)).query)
    partial = parse_qs(urlsplit(attribute(sentinel(page), "hx-get")).query)
    replace = parse_qs(urlsplit(attribute(sentinel(page), "hx-replace-url")).query)
    for query in (link, partial, replace):
        assert query["size"] == ["1024x1024"]
        assert "after" in query


def test_filter_form_is_a_plain_get_form_with_a_label_for_every_control(idle_app):
    _, page, _ = get(idle_app.test_client(), "/gallery")

    form = re.search(r'<form id="gallery-filters".*?</form>', page, re.S).group(0)
    assert 'method="get"' in form and 'action="/gallery"' in form
    for control in re.findall(r'<(?:input|select)[^>]*\bid="([^"]+)"', form):
        assert f'for="{control}"' in form, control
    search_box = re.search(r'<input type="search"[^>]*>', form, re.S).group(0)
    assert attribute(search_box, "hx-get") == "/partials/gallery/results"
    assert attribute(search_box, "hx-trigger") == "input changed delay:300ms, search"
    assert attribute(search_box, "hx-target") == "#gallery-results"
    assert attribute(search_box, "hx-include") == "#gallery-filters"
    # Model and size choices come from the configured providers.
    assert '<option value="dall-e-2"' in form and '<option value="1024x1024"' in form


def test_search_as_you_type_returns_results_and_the_page_url(app_factory):
    app = app_factory()
    client = app.test_client()
    insert_images(app, 2)

    status, body, headers = get(client, "/partials/gallery/results?q=&size=256x256")

    assert status == 200
    assert 'id="gallery-grid"' in body and "<html" not in body
    assert headers["HX-Replace-Url"] == "/gallery?size=256x256"


@pytest.fixture
def dalle3_client(app_factory):
    return app_factory(**DALLE3).test_client()


def test_search_finds_by_prompt_and_by_revised_prompt_until_deleted_and_purged(dalle3_client):
    client = dalle3_client
    lighthouse = generate(
        client, prompt="a lighthouse at dusk", provider="azure:dall-e-3", size=None
    )
    kettle = generate(client, size="256x256", prompt="a copper kettle", provider="azure-async")
    [lighthouse_image] = stored_ids(lighthouse)
    [kettle_image] = stored_ids(kettle)
    assert "illustration" in lighthouse["images"][0]["revised_prompt"]

    assert cells(get(client, "/gallery?q=lighthouse")[1]) == [lighthouse_image]
    assert cells(get(client, "/gallery?q=copp")[1]) == [kettle_image]  # words match as prefixes
    assert cells(get(client, "/gallery?q=vivid+illustration")[1]) == [lighthouse_image]
    assert cells(get(client, "/partials/gallery/results?q=illustration")[1]) == [lighthouse_image]

    status, _, _ = post(client, "/gallery/bulk", {"action": "delete", "ids": lighthouse_image})
    assert status == 303
    assert cells(get(client, "/gallery?q=illustration")[1]) == []
    assert cells(get(client, "/gallery?q=illustration&trash=1")[1]) == [lighthouse_image]

    post(client, "/gallery/trash/empty")
    assert cells(get(client, "/gallery?q=illustration&trash=1")[1]) == []
    assert cells(get(client, "/gallery?q=kettle")[1]) == [kettle_image]


# --- favourites ---------------------------------------------------------------------------------


def test_star_through_htmx_swaps_only_the_button_and_toggles(client, app):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="a star to give"))

    status, star, _ = post(
        client, f"/partials/gallery/images/{image_id}/favorite", {"favorite": "1"}, htmx=True
    )
    assert status == 200
    assert star.lstrip().startswith("<form") and "<li" not in star
    assert f'id="star-{image_id}"' in star and 'aria-pressed="true"' in star
    assert favorite_of(app, image_id) is True

    _, unstarred, _ = post(client, f"/partials/gallery/images/{image_id}/favorite", htmx=True)
    assert 'aria-pressed="false"' in unstarred  # no `favorite` field: a toggle
    assert favorite_of(app, image_id) is False


def test_star_without_javascript_comes_back_to_the_same_gallery_url(client, app):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="a star without scripts"))
    _, page, _ = get(client, "/gallery?q=scripts&size=256x256")
    form = re.search(rf'<form class="star-form" id="star-{image_id}".*?</form>', page, re.S)

    status, _, headers = post(
        client, attribute(form.group(0), "action"), form_fields(form.group(0))
    )

    assert status == 303
    assert headers["Location"] == f"/gallery?q=scripts&size=256x256#image-{image_id}"
    assert favorite_of(app, image_id) is True


def test_star_never_redirects_to_another_site(client):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="a careful star"))

    _, _, headers = post(
        client, f"/gallery/images/{image_id}/favorite", {"next": "//evil.example/gallery"}
    )

    assert headers["Location"] == f"/gallery#image-{image_id}"


def test_starring_an_unknown_image_is_404(idle_app):
    client = idle_app.test_client()

    assert post(client, "/gallery/images/999/favorite")[0] == 404
    assert post(client, "/partials/gallery/images/999/favorite", htmx=True)[0] == 404


# --- collections --------------------------------------------------------------------------------


def test_collections_are_created_listed_with_counts_and_deleted(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="a set of postcards", n=3))

    status, _, headers = post(client, "/collections", {"name": "  Postcards  "})
    assert (status, headers["Location"]) == (303, "/collections")
    with app.app_context():
        collection_id = db.session.scalar(
            select(Collection.id).where(Collection.name == "Postcards")
        )

    post(
        client,
        "/gallery/bulk",
        {"action": "add", "ids": images[:2], "collection_id": collection_id},
    )
    _, listing, _ = get(client, "/collections")
    # The link shows the collection's newest image as its cover, then its name.
    link = re.search(
        rf'href="/gallery\?collection={collection_id}">'
        r'<img class="collection-cover" src="/files/thumbs/(\d+)"[^>]*> Postcards</a>',
        listing,
    )
    assert link is not None and int(link[1]) == max(images[:2])
    assert "2 images" in listing
    assert set(cells(get(client, f"/gallery?collection={collection_id}")[1])) == set(images[:2])

    status, _, _ = post(client, f"/collections/{collection_id}/delete")
    assert status == 303
    _, listing, _ = get(client, "/collections")
    assert "Deleted the collection Postcards; its images stay." in listing
    assert ">Postcards</a>" not in listing
    assert set(cells(get(client, "/gallery")[1])) == set(images)  # the images stay


def test_a_duplicate_collection_name_is_refused_with_a_message(idle_app):
    client = idle_app.test_client()
    make_collection(idle_app, "Birds")

    status, page, _ = post(client, "/collections", {"name": "Birds"})
    htmx_status, fragment, headers = post(
        client, "/partials/collections", {"name": "Birds"}, htmx=True
    )

    assert status == 422 and "There is already a collection called &#39;Birds&#39;" in page
    assert htmx_status == 422 and 'id="collections"' in fragment
    assert headers["HX-Retarget"] == "#collections" and headers["HX-Reswap"] == "outerHTML"
    assert post(client, "/collections", {"name": "   "})[0] == 422
    with idle_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Collection)) == 1


def test_creating_a_collection_through_htmx_returns_the_updated_section(idle_app):
    client = idle_app.test_client()

    status, fragment, _ = post(client, "/partials/collections", {"name": "Maps"}, htmx=True)

    assert status == 201
    assert fragment.lstrip().startswith('<section id="collections"')
    assert ">Maps</a>" in fragment and "0 images" in fragment


def test_an_image_can_be_in_several_collections_and_leave_one(client, app):
    [image_id, other] = stored_ids(generate(client, size="256x256", prompt="a shared image", n=2))
    first, second = make_collection(app, "First"), make_collection(app, "Second")

    for collection_id in (first, second):
        post(
            client,
            "/gallery/bulk",
            {"action": "add", "ids": [image_id], "collection_id": collection_id},
        )
    status, fragment, _ = post(
        client,
        "/partials/gallery/bulk",
        {"action": "remove", "ids": [image_id], "from_collection": first},
        htmx=True,
    )

    assert status == 200 and "Removed 1 image from First." in fragment
    assert f'id="image-{image_id}" hx-swap-oob="true"' in fragment
    assert cells(get(client, f"/gallery?collection={first}")[1]) == []
    assert cells(get(client, f"/gallery?collection={second}")[1]) == [image_id]
    assert other not in cells(get(client, f"/gallery?collection={second}")[1])


def test_unknown_collections_are_refused_and_nothing_changes(client, app):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="a lonely image"))

    status, page, _ = post(
        client, "/gallery/bulk", {"action": "add", "ids": [image_id], "collection_id": "999"}
    )
    htmx_status, fragment, headers = post(
        client,
        "/partials/gallery/bulk",
        {"action": "add", "ids": [image_id], "collection_id": "999"},
        htmx=True,
    )

    assert status == 422 and "There is no collection 999." in page
    assert 'id="gallery-grid"' in page  # the gallery again, with the reason
    assert htmx_status == 422 and "There is no collection 999." in fragment
    assert headers["HX-Retarget"] == "#gallery-message"
    assert get(client, "/gallery?collection=999")[0] == 404
    assert post(client, "/collections/999/delete")[0] == 404
    with app.app_context():
        assert db.session.get(Image, image_id).collections == []


# --- bulk actions, trash and undo ---------------------------------------------------------------


def test_bulk_star_and_unstar_through_htmx_update_the_stars_out_of_band(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="a row of teacups", n=3))

    status, fragment, _ = post(
        client, "/partials/gallery/bulk", {"action": "favorite", "ids": images[:2]}, htmx=True
    )

    assert status == 200 and "Starred 2 images." in fragment
    for image_id in images[:2]:
        assert f'id="star-{image_id}"' in fragment
    assert fragment.count('hx-swap-oob="true"') == 2
    assert [favorite_of(app, i) for i in images] == [True, True, False]

    post(client, "/partials/gallery/bulk", {"action": "unfavorite", "ids": images}, htmx=True)
    assert [favorite_of(app, i) for i in images] == [False, False, False]


def test_bulk_actions_without_javascript_come_back_to_the_same_url(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="a shelf of jars", n=2))

    status, _, headers = post(
        client,
        "/gallery/bulk",
        {"action": "favorite", "ids": images, "next": "/gallery?q=jars&after=abc"},
    )

    assert status == 303
    assert headers["Location"].startswith("/gallery?q=jars&after=abc#image-")
    assert all(favorite_of(app, i) for i in images)


def test_delete_moves_to_the_trash_and_undo_through_htmx_puts_the_cells_back(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="three paper lanterns", n=3))

    _, fragment, _ = post(
        client, "/partials/gallery/bulk", {"action": "delete", "ids": images[:2]}, htmx=True
    )

    assert "Moved 2 images to the trash." in fragment
    undo = re.search(r"<form[^>]*>.*?</form>", fragment, re.S).group(0)
    assert attribute(undo, "hx-post") == "/partials/gallery/bulk"
    assert 'name="action" value="undo"' in undo
    assert sorted(int(i) for i in re.findall(r'name="ids" value="(\d+)"', undo)) == images[:2]
    for image_id in images[:2]:  # the cells say where they went, in place
        # with the cell's shape (a square: ar-0), so its justified row keeps still
        assert (
            f'<li class="cell cell-gone ar-0" id="image-{image_id}" hx-swap-oob="true">' in fragment
        )
    assert trashed(app, images) == [True, True, False]
    assert set(cells(get(client, "/gallery")[1])) == {images[2]}

    undo_fields = {**form_fields(undo), "ids": images[:2]}
    _, restored, _ = post(client, "/partials/gallery/bulk", undo_fields, htmx=True)

    assert "Restored 2 images." in restored
    for image_id in images[:2]:
        assert re.search(
            f'<li class="cell ar-0" id="image-{image_id}" data-job-id="\\d+"'
            '[^>]* hx-swap-oob="true">',
            restored,
        )
    assert trashed(app, images) == [False, False, False]


def test_delete_without_javascript_flashes_the_message_with_an_undo_form(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="a pair of gloves", n=2))

    status, _, headers = post(
        client, "/gallery/bulk", {"action": "delete", "ids": images, "next": "/gallery?q=gloves"}
    )
    assert (status, headers["Location"]) == (303, "/gallery?q=gloves")
    _, page, _ = get(client, headers["Location"])

    assert "Moved 2 images to the trash." in page
    undo = re.search(r'<div class="notice".*?</div>', page, re.S).group(0)
    assert 'action="/gallery/bulk"' in undo and 'value="undo"' in undo
    assert "Moved 2 images" not in get(client, "/gallery")[1]  # shown once

    post(client, "/gallery/bulk", {"action": "undo", "ids": images})
    assert trashed(app, images) == [False, False]


def test_trash_view_restores_and_empties_for_good(client, app):
    images = stored_ids(generate(client, size="256x256", prompt="a box of old letters", n=3))
    post(client, "/gallery/bulk", {"action": "delete", "ids": images})
    _, trash, _ = get(client, "/gallery?trash=1")
    assert set(cells(trash)) == set(images)
    assert 'action="/gallery/trash/empty"' in trash and 'value="restore"' in trash

    post(
        client,
        "/gallery/bulk",
        {"action": "restore", "ids": [images[0]], "next": "/gallery?trash=1"},
    )
    assert trashed(app, images) == [False, True, True]
    with app.app_context():
        rows = db.session.scalars(select(Image).where(Image.id.in_(images[1:]))).all()
        names = [name for row in rows for name in (row.file_name, row.thumbnail_name)]
        data_dir = Path(app.config["ATELIER_DATA_DIR"])
        shas = [row.sha256 for row in rows]
    assert all((data_dir / name).is_file() for name in names)

    status, _, headers = post(client, "/gallery/trash/empty")

    assert (status, headers["Location"]) == (303, "/gallery?trash=1")
    assert "Deleted 2 images for good." in get(client, "/gallery?trash=1")[1]
    with app.app_context():
        assert db.session.scalars(select(Image.id).where(Image.id.in_(images))).all() == [images[0]]
    assert not any((data_dir / name).exists() for name in names)
    for sha in shas:
        assert get(client, f"/files/{sha}.png")[0] == 404


def test_empty_or_bad_selections_are_refused_and_change_nothing(client, app):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="an untouched image"))

    for data in (
        {"action": "delete"},
        {"action": "delete", "ids": ["x1"]},
        {"action": "explode", "ids": [image_id]},
        {"action": "add", "ids": [image_id]},
    ):
        status, page, _ = post(client, "/gallery/bulk", data)
        assert status == 422, data
        assert 'role="alert"' in page
        status, fragment, headers = post(client, "/partials/gallery/bulk", data, htmx=True)
        assert status == 422 and headers["HX-Retarget"] == "#gallery-message"
        assert "notice-error" in fragment
    assert post(client, "/gallery/zip", {})[0] == 422
    assert "Select at least one image." in post(client, "/gallery/bulk", {"action": "delete"})[1]
    assert trashed(app, [image_id]) == [False]
    assert favorite_of(app, image_id) is False


def test_bad_query_strings_are_refused_with_a_message(idle_app):
    client = idle_app.test_client()

    for url, message in (
        ("/gallery?after=%%%", "The cursor is not valid"),
        ("/gallery?since=yesterday", "Dates look like 2026-11-25."),
        ("/gallery?since=2026-05-02&until=2026-05-01", "The end date is before the start date."),
        ("/gallery?status=lost", "The status must be one of"),
        ("/gallery?collection=abc", "The collection must be a collection id."),
    ):
        status, page, _ = get(client, url)
        assert status == 400, url
        assert message in page
    status, fragment, headers = get(client, "/partials/gallery?after=%%%")
    assert status == 422 and "The cursor is not valid" in fragment
    assert headers["HX-Retarget"] == "#gallery-message"
    assert headers["HX-Replace-Url"] == "false"


CSRF_GUARDED = (
    "/gallery/bulk",
    "/partials/gallery/bulk",
    "/gallery/images/{image}/favorite",
    "/partials/gallery/images/{image}/favorite",
    "/gallery/zip",
    "/gallery/trash/empty",
    "/collections",
    "/partials/collections",
    "/collections/{collection}/delete",
)


def test_posts_without_a_csrf_token_are_refused_and_change_nothing(client, app):
    [image_id] = stored_ids(generate(client, size="256x256", prompt="a guarded image"))
    collection_id = make_collection(app, "Guarded")
    with app.app_context():
        curation.trash([image_id])

    for url in CSRF_GUARDED:
        status, page, _ = post(
            client,
            url.format(image=image_id, collection=collection_id),
            {"action": "restore", "ids": [image_id], "name": "Sneaky", "favorite": "1"},
            token=False,
        )
        assert status == 400, url
        assert "Reload the page" in page

    assert trashed(app, [image_id]) == [True]
    with app.app_context():
        assert [c.id for c in curation.own_collections(None)] == [collection_id]
        assert db.session.get(Image, image_id).favorite is False


# --- ZIP ----------------------------------------------------------------------------------------


def test_zip_holds_exactly_the_selected_originals_and_a_manifest(client, app):
    job = generate(client, size="256x256", prompt="a zipped harbour", n=3)
    chosen = [job["images"][0], job["images"][2]]

    with client.post(
        "/gallery/zip",
        data={"csrf_token": csrf_token(client), "ids": [image["id"] for image in chosen]},
    ) as response:
        assert response.status_code == 200
        assert response.mimetype == "application/zip"
        assert response.is_streamed
        assert (
            response.headers["Content-Disposition"] == 'attachment; filename="atelier-2-images.zip"'
        )
        archive = zipfile.ZipFile(io.BytesIO(response.data))

    names = {f"atelier-{job['id']}-{image['index'] + 1}.png": image for image in chosen}
    assert sorted(archive.namelist()) == sorted([*names, "manifest.json"])
    for name, image in names.items():
        assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
        with client.get(image["url"]) as original:
            assert archive.read(name) == original.data
        assert hashlib.sha256(archive.read(name)).hexdigest() == image["sha256"]
    manifest = json.loads(archive.read("manifest.json"))
    entries = {entry["file"]: entry for entry in manifest["files"]}
    assert set(entries) == set(names)
    for name, image in names.items():
        entry = entries[name]
        assert entry["image_id"] == image["id"]
        assert entry["job_id"] == job["id"]
        assert entry["index"] == image["index"]
        assert entry["prompt"] == "a zipped harbour"
        assert entry["revised_prompt"] is None
        assert entry["provider"] == job["provider"]
        assert entry["model"] == "dall-e-2"
        assert entry["size"] == "256x256"
        assert entry["options"] == job["options"]
        assert entry["sha256"] == image["sha256"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["created_at"])


def test_zip_streams_members_as_they_are_written():
    from app.zipstream import Member, stream_zip

    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    big = bytes(range(256)) * 1024  # 256 KiB: several read chunks
    chunks = list(
        stream_zip(
            [
                Member(name="a.bin", modified=moment, data=b"first"),
                Member(name="b.bin", modified=moment, data=big),
            ]
        )
    )

    assert len(chunks) >= 3
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.read("a.bin") == b"first" and archive.read("b.bin") == big
    assert archive.getinfo("a.bin").date_time == (2026, 1, 2, 3, 4, 4)  # 2-second resolution


# --- files --------------------------------------------------------------------------------------


def test_content_addressed_files_are_immutable_with_strong_etags(client):
    job = generate(client, size="256x256", prompt="a cached image")
    image = job["images"][0]
    sha = image["sha256"]

    for url, content_type in (
        (f"/files/{sha}.png", "image/png"),
        (f"/files/{sha}-256.webp", "image/webp"),
        (f"/files/{sha}-512.webp", "image/webp"),
    ):
        with client.get(url) as response:
            assert response.status_code == 200, url
            assert response.mimetype == content_type
            assert response.headers["Cache-Control"] == "private, max-age=31536000, immutable"
            etag = response.headers["ETag"]
            assert etag.startswith('"') and not etag.startswith("W/")
            assert not response.headers.get("Content-Disposition", "").startswith("attachment")
        with client.get(url, headers={"If-None-Match": etag}) as again:
            assert again.status_code == 304
    with client.get(f"/files/{sha}.png") as original, client.get(image["url"]) as by_id:
        assert original.data == by_id.data
        assert hashlib.sha256(original.data).hexdigest() == sha


def test_download_asks_the_browser_to_save_the_original_under_a_readable_name(client):
    job = generate(client, size="256x256", prompt="a saved image", n=2)
    image = job["images"][1]

    with client.get(f"/files/{image['sha256']}.png?download=1") as response:
        assert response.status_code == 200
        assert (
            response.headers["Content-Disposition"]
            == f'attachment; filename="atelier-{job["id"]}-2.png"'
        )


def test_gallery_uses_content_addressed_thumbnails_sized_before_they_load(client):
    image = generate(client, size="256x256", prompt="a sized thumbnail")["images"][0]
    sha = image["sha256"]

    _, page, _ = get(client, "/gallery")

    img = re.search(r"<img [^>]*>", page, re.S).group(0)
    assert attribute(img, "src") == f"/files/{sha}-256.webp"
    assert attribute(img, "srcset") == f"/files/{sha}-256.webp 256w, /files/{sha}-512.webp 512w"
    assert attribute(img, "sizes")
    assert 'width="256"' in img and 'height="256"' in img and 'loading="lazy"' in img
    assert re.search(r'class="thumb ph-[0-3]{3}"', page)
    assert "style=" not in page and "hx-on" not in page


BAD_NAMES = (
    "../x",
    "..%2Fx",
    "{sha63}.png",
    "{sha_upper}.png",
    "{sha}.gif",
    "{sha}.jpg",
    "{sha}.png.png",
    "{sha}-128.webp",
    "{sha}-256.png",
    "{sha}",
    "{sha}.PNG",
    "{sha}%00.png",
    "%2e%2e%2f{sha}.png",
)


def test_content_addressed_routes_refuse_bad_names_and_path_tricks(client):
    sha = generate(client, size="256x256", prompt="an image to guard")["images"][0]["sha256"]
    with client.get(f"/files/{sha}.png") as response:
        assert response.status_code == 200  # the image itself is there

    for name in BAD_NAMES:
        url = "/files/" + name.format(sha=sha, sha63=sha[:63], sha_upper=sha.upper())
        with client.get(url) as response:
            assert response.status_code == 404, url
            assert not response.mimetype.startswith("image/")


def test_unknown_digest_is_404(idle_app):
    assert get(idle_app.test_client(), f"/files/{'0' * 64}.png")[0] == 404


def test_placeholder_colours_map_to_one_of_64_classes():
    assert placeholder_class("#000000") == "ph-000"
    assert placeholder_class("#ffffff") == "ph-333"
    assert placeholder_class("#336699") == "ph-112"
    assert placeholder_class(None) == "ph-none"
    assert placeholder_class("red") == "ph-none"
    css = (Path(__file__).parent.parent / "static" / "gallery.css").read_text()
    assert len(set(re.findall(r"\.ph-([0-3]{3}) \{", css))) == 64


# --- new since the last look --------------------------------------------------------------------


def test_images_newer_than_the_last_look_are_marked_new_and_the_cookie_moves_on(small_app):
    client = small_app.test_client()
    old = insert_images(small_app, 2, prompt="old", start=utcnow() - timedelta(hours=2))
    new = insert_images(small_app, 1, prompt="new", start=utcnow() - timedelta(minutes=5))
    looked = (utcnow() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    client.set_cookie("gallery_seen", looked)

    _, page, headers = get(client, "/gallery")

    assert cells(page) == [new[0], old[1], old[0]]
    new_cell = re.search(rf'id="image-{new[0]}".*?</li>', page, re.S).group(0)
    assert "badge-new" in new_cell and ">New<" in new_cell
    assert page.count('class="badge-new"') == 1
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("gallery_seen=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie
    seen = datetime.fromisoformat(re.match(r"gallery_seen=([^;]+)", cookie).group(1).strip('"'))
    assert abs((seen - utcnow()).total_seconds()) < 60

    _, again, _ = get(client, "/gallery")
    assert "badge-new" not in again  # now seen


def test_only_the_first_gallery_page_moves_the_last_look(small_app):
    client = small_app.test_client()
    insert_images(small_app, 5)
    _, first, _ = get(client, "/gallery")

    for url in (older_link(first), attribute(sentinel(first), "hx-get")):
        _, _, headers = get(client, url)
        assert "Set-Cookie" not in headers, url


def test_no_cookie_means_nothing_is_marked_new(small_app):
    insert_images(small_app, 2)

    _, page, _ = get(small_app.test_client(), "/gallery")

    assert "badge-new" not in page


def test_empty_gallery_says_how_to_start(idle_app):
    _, page, _ = get(idle_app.test_client(), "/gallery")

    assert "Nothing here yet." in page
