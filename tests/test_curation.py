"""The curation domain: favourites, collections, trash and purge, and the gallery's filters and
full-text search underneath the pages."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from app import curation, library
from app.library import GalleryFilters
from app.models import Image, db
from app.validation import ValidationError
from tests.helpers import wait_for_job


def make_images(client, prompt: str, n: int = 2) -> list[int]:
    response = client.post("/api/jobs", json={"prompt": prompt, "size": "256x256", "n": n})
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded"
    return [image["id"] for image in job["images"]]


def shown(filters: GalleryFilters | None = None) -> list[int]:
    return [image.id for image in library.gallery_page(filters, limit=100).items]


@pytest.fixture
def ctx(app):
    """The app, with an app context pushed for domain calls. Each client request commits and
    removes the session it shares with the test, so the test never reads a stale snapshot."""
    with app.app_context():
        yield app


@pytest.fixture(autouse=True)
def fresh_reads(request):
    """Requests made while the test's app context is pushed reuse its session; end its read
    transaction after each request so the next read sees what the worker wrote since."""
    if "ctx" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("ctx")

    @app.after_request
    def _end_read(response):
        db.session.commit()
        return response

    yield


def test_favourites_filter_and_toggle(ctx, client):
    first, second = make_images(client, "two swans")

    assert curation.set_favorite([first], True) == 1
    assert curation.set_favorite([first], True) == 0  # already a favourite
    assert shown(GalleryFilters(favorites=True)) == [first]
    assert curation.toggle_favorite(first).favorite is False
    assert shown(GalleryFilters(favorites=True)) == []
    assert second in shown()


def test_trash_hides_images_and_undo_restores_them(ctx, client):
    first, second = make_images(client, "a glass vase")

    moved = curation.trash([first, 999_999])

    assert moved == [first]
    assert shown() == [second]
    assert shown(GalleryFilters(trash=True)) == [first]
    assert curation.restore([first]) == 1
    assert set(shown()) == {first, second}


def test_purge_removes_expired_trash_rows_and_their_files(ctx, client):
    first, second = make_images(client, "an old letter")
    image = db.session.get(Image, first)
    files = [image.file_name, image.thumbnail_name, image.thumbnail_large_name]
    data_dir = Path(ctx.config["ATELIER_DATA_DIR"])
    curation.trash([first])

    assert curation.purge(timedelta(days=30)) == 0  # trashed just now: kept
    assert curation.purge() == 1

    assert db.session.get(Image, first) is None
    assert not any((data_dir / name).exists() for name in files)
    assert db.session.get(Image, second) is not None


def test_job_prompt_stays_searchable_after_its_images_are_purged(ctx, client):
    ids = make_images(client, "a forgotten lighthouse")
    curation.trash(ids)
    curation.purge()

    page = library.job_page(status=None, q="forgotten", limit=10, after=None)

    assert [job.prompt for job in page.items] == ["a forgotten lighthouse"]


def test_collections_hold_images_and_an_image_can_be_in_several(ctx, client):
    first, second = make_images(client, "autumn leaves")
    autumn = curation.create_collection("  Autumn   walks ", owner_id=None)
    best = curation.create_collection("Best", owner_id=None)

    assert autumn.name == "Autumn walks"
    assert curation.add_to_collection(autumn.id, [first, second]) == 2
    assert curation.add_to_collection(autumn.id, [first]) == 0
    assert curation.add_to_collection(best.id, [first]) == 1
    assert set(shown(GalleryFilters(collection=autumn.id))) == {first, second}
    assert shown(GalleryFilters(collection=best.id)) == [first]
    assert curation.remove_from_collection(autumn.id, [second]) == 1
    assert shown(GalleryFilters(collection=autumn.id)) == [first]
    assert curation.delete_collection(best.id) is True
    assert shown() and first in shown()  # images stay in the library


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_bad_collection_names_are_refused(ctx, name):
    with pytest.raises(ValidationError) as refused:
        curation.create_collection(name, owner_id=None)

    assert refused.value.field == "name"


def test_duplicate_collection_name_is_refused(ctx):
    curation.create_collection("Birds", owner_id=None)

    with pytest.raises(ValidationError, match="already"):
        curation.create_collection("Birds", owner_id=None)


def test_empty_selection_and_unknown_collection_are_refused(ctx, client):
    (image,) = make_images(client, "a single leaf", n=1)

    with pytest.raises(ValidationError):
        curation.trash([])
    with pytest.raises(ValidationError):
        curation.add_to_collection(12345, [image])


def test_search_finds_words_by_prefix_in_any_order(ctx, client):
    lighthouse = make_images(client, "A red lighthouse on a cliff", n=1)
    make_images(client, "a blue boat", n=1)

    assert shown(GalleryFilters(q="light")) == lighthouse
    assert shown(GalleryFilters(q="cliff RED")) == lighthouse
    assert shown(GalleryFilters(q="lighthouse boat")) == []
    assert len(shown(GalleryFilters(q="  ?!  "))) == 2  # no words: no filter


def test_search_finds_revised_prompts(app_factory, emulator):
    app = app_factory(AZURE_OPENAI_DEPLOYMENT="dall-e-3")
    client = app.test_client()
    job = wait_for_job(client, client.post("/api/jobs", json={"prompt": "a pear"}).get_json()["id"])
    revised_word = job["images"][0]["revised_prompt"].split()[1]  # e.g. "detailed"

    with app.app_context():
        assert shown(GalleryFilters(q=revised_word)) == [job["images"][0]["id"]]


def test_filters_combine_and_round_trip_through_the_url(ctx, client):
    filters = GalleryFilters.from_args(
        {"q": "fox", "favorites": "1", "model": "dall-e-2", "since": "2026-01-01"}
    )

    assert GalleryFilters.from_args(filters.to_args()) == filters
    assert filters.since == date(2026, 1, 1)
    assert GalleryFilters().to_args() == {}


@pytest.mark.parametrize(
    "args",
    [
        {"status": "lost"},
        {"collection": "abc"},
        {"since": "yesterday"},
        {"since": "2026-02-01", "until": "2026-01-01"},
    ],
)
def test_bad_filters_are_refused(args):
    with pytest.raises(ValidationError):
        GalleryFilters.from_args(args)


def test_date_range_filter(ctx, client):
    ids = make_images(client, "a sunrise", n=1)
    today = date.today()

    assert shown(GalleryFilters(since=today, until=today)) == ids
    assert shown(GalleryFilters(until=today - timedelta(days=1))) == []
