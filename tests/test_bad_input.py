"""Malformed input is refused with the usual error shape (400, 404 or a form's 422), never a 500,
and it changes nothing: ids past int64, Unicode digits, cursors without a time zone, dates at
the end of the calendar, JSON nested too deep or with a lone surrogate, a newline in `next`,
and share links in open mode.

Each case runs against the real app and database (SQLite, or PostgreSQL with
ATELIER_TEST_DB=postgresql, where a number past int64 is a DataError instead of an
OverflowError)."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from werkzeug.routing import IntegerConverter

from app.auth import accounts
from app.models import (
    Collection,
    CollectionImage,
    Image,
    Job,
    ShareLink,
    db,
    utcnow,
)
from tests.helpers import csrf_token, insert_images

TOO_BIG = "9223372036854775808"  # 2**63: past what SQLite's INTEGER holds
TOO_BIG_FOR_POSTGRESQL = "2147483648"  # 2**31: past PostgreSQL's integer, the id columns' type
UNICODE_DIGITS = ("²", "①", "١")  # str.isdigit() is True for each; int() refuses two of them
PASSWORD = "correct horse battery"


# --- helpers ------------------------------------------------------------------------------------


def snapshot(app) -> dict[str, Any]:
    """What a refused request must leave as it was."""
    with app.app_context():
        count = lambda model: db.session.scalar(select(func.count()).select_from(model))  # noqa: E731
        return {
            "jobs": count(Job),
            "images": count(Image),
            "collections": count(Collection),
            "in_collections": count(CollectionImage),
            "shares": count(ShareLink),
            "favorites": db.session.scalar(
                select(func.count()).select_from(Image).where(Image.favorite.is_(True))
            ),
            "trashed": db.session.scalar(
                select(func.count()).select_from(Image).where(Image.deleted_at.is_not(None))
            ),
        }


def assert_error_shape(response, statuses: tuple[int, ...]) -> None:
    assert response.status_code in statuses, (response.status_code, response.get_data()[:400])
    if response.request.path.startswith("/api/"):
        error = response.get_json()["error"]
        assert error["code"] and error["message"]
    else:
        assert 'role="alert"' in response.get_data(as_text=True)


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture
def app(idle_app):
    """No worker: nothing changes the database behind the test's back."""
    insert_images(idle_app, 1, prompt="a quiet harbour")
    with idle_app.app_context():
        from app import curation

        curation.create_collection("harbours", owner_id=None)
    return idle_app


@pytest.fixture
def client(app):
    return app.test_client()


# --- ids and whole numbers in URLs --------------------------------------------------------------


def int_routes(app, value: str = TOO_BIG) -> list[tuple[str, str, str]]:
    """(method, URL with every int argument set to `value`, endpoint) for every `<int:...>`
    route."""
    routes = []
    for rule in app.url_map.iter_rules():
        ints = [
            name
            for name, converter in rule._converters.items()
            if isinstance(converter, IntegerConverter)
        ]
        if not ints:
            continue
        url = rule.rule
        for name in ints:
            url = re.sub(rf"<int(\([^)]*\))?:{name}>", value, url)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, url, rule.endpoint))
    return routes


def test_every_int_route_is_found(app):
    # The sweep below must not pass because it found nothing to sweep.
    endpoints = {endpoint for _method, _url, endpoint in int_routes(app)}
    assert {"api.get_job", "files.image", "images.page", "shares.revoke"} <= endpoints


@pytest.mark.parametrize("too_big", [TOO_BIG, TOO_BIG_FOR_POSTGRESQL])
def test_ids_too_big_for_the_database_in_every_url_are_404_and_change_nothing(app, client, too_big):
    before = snapshot(app)
    token = csrf_token(client)
    for method, url, _endpoint in int_routes(app, too_big):
        response = client.open(
            url, method=method, data={"csrf_token": token}, headers={"X-CSRFToken": token}
        )
        assert response.status_code == 404, (method, url, response.status_code)
        assert_error_shape(response, (404,))
    assert snapshot(app) == before


@pytest.mark.parametrize("digit", UNICODE_DIGITS)
@pytest.mark.parametrize("url", ["/api/jobs/{}", "/images/{}", "/jobs/{}", "/files/images/{}"])
def test_unicode_digits_in_a_url_id_are_404(client, url, digit):
    response = client.get(url.format(digit))

    assert_error_shape(response, (404,))


# --- ids and whole numbers in forms and query strings -------------------------------------------


BAD_NUMBERS = (TOO_BIG, TOO_BIG_FOR_POSTGRESQL, *UNICODE_DIGITS, "1" * 5000)


@pytest.mark.parametrize("raw", BAD_NUMBERS)
@pytest.mark.parametrize(
    "url",
    [
        "/api/jobs?limit={}",
        "/history?limit={}",
        "/refusals?limit={}",
        "/gallery?collection={}",
        "/partials/gallery?collection={}",
    ],
)
def test_bad_numbers_in_query_strings_are_refused(client, url, raw):
    response = client.get(url.format(raw))

    assert_error_shape(response, (400, 422))


@pytest.mark.parametrize("raw", BAD_NUMBERS)
@pytest.mark.parametrize("url", ["/?reuse={}", "/partials/history/active?rows={}"])
def test_bad_numbers_where_unknown_ids_are_ignored_are_ignored(client, url, raw):
    # These take ids the page itself wrote; one that is no id is skipped, like "abc" is.
    assert client.get(url.format(raw)).status_code == 200


@pytest.mark.parametrize("raw", BAD_NUMBERS)
@pytest.mark.parametrize(
    "fields",
    [
        {"action": "favorite", "ids": "{}"},
        {"action": "delete", "ids": "{}"},
        {"action": "add", "ids": "1", "collection_id": "{}"},
        {"action": "remove", "ids": "1", "from_collection": "{}"},
    ],
)
def test_bad_numbers_in_gallery_forms_are_refused_and_change_nothing(app, client, fields, raw):
    before = snapshot(app)
    form = {name: value.format(raw) for name, value in fields.items()}

    response = client.post("/gallery/bulk", data={**form, "csrf_token": csrf_token(client)})

    assert_error_shape(response, (400, 422))
    assert snapshot(app) == before


@pytest.mark.parametrize("raw", BAD_NUMBERS)
def test_bad_numbers_in_the_zip_form_are_refused(app, client, raw):
    response = client.post("/gallery/zip", data={"ids": raw, "csrf_token": csrf_token(client)})

    assert_error_shape(response, (400, 422))


@pytest.mark.parametrize("raw", BAD_NUMBERS)
def test_a_bad_parent_in_the_prompt_form_is_dropped_not_a_crash(app, client, raw):
    form = {"prompt": "a lighthouse", "parent": raw, "csrf_token": csrf_token(client)}

    response = client.post("/jobs", data=form)

    assert response.status_code == 303  # the job is made, without a lineage link
    with app.app_context():
        assert db.session.scalars(select(Job.parent_id).order_by(Job.id.desc())).first() is None


# --- cursors and dates --------------------------------------------------------------------------


BAD_CURSORS = [
    cursor("2026-01-01T00:00:00|1"),  # no time zone
    cursor(f"2026-01-01T00:00:00+00:00|{TOO_BIG}"),
    cursor(f"2026-01-01T00:00:00+00:00|{TOO_BIG_FOR_POSTGRESQL}"),
    cursor("2026-01-01T00:00:00+00:00|²"),
    cursor("0001-01-01T00:00:00+01:00|1"),  # before year 1 in UTC
    cursor("9999-12-31T23:00:00-05:00|1"),  # after year 9999 in UTC
    cursor("2026-01-01T00:00:00+00:00|1|2"),
    "!!not base64!!",
]


@pytest.mark.parametrize("bad", BAD_CURSORS)
@pytest.mark.parametrize(
    "url",
    [
        "/api/jobs?cursor={}",
        "/history?after={}",
        "/history?before={}",
        "/refusals?after={}",
        "/gallery?after={}",
        "/gallery?before={}",
        "/partials/gallery?after={}",
    ],
)
def test_bad_cursors_are_refused(client, url, bad):
    response = client.get(url.format(bad))

    assert_error_shape(response, (400, 422))


def test_a_good_cursor_still_pages(app, client):
    good = cursor(f"{(utcnow() + timedelta(days=1)).isoformat()}|{2**31 - 1}")

    response = client.get(f"/api/jobs?cursor={good}")

    assert response.status_code == 200
    assert len(response.get_json()["items"]) == 1


@pytest.mark.parametrize("url", ["/gallery?until=9999-12-31", "/partials/gallery?until=9999-12-31"])
def test_until_the_last_day_of_the_calendar_shows_everything(client, url):
    response = client.get(url)

    assert response.status_code == 200
    assert 'id="image-' in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "query", ["since=0001-01-01&until=9999-12-31", "since=9999-12-31", "until=0001-01-01"]
)
def test_dates_at_the_ends_of_the_calendar_are_no_crash(client, query):
    assert client.get(f"/gallery?{query}").status_code == 200


# --- JSON bodies --------------------------------------------------------------------------------


def test_json_nested_ten_thousand_deep_is_400_and_creates_nothing(app, client):
    before = snapshot(app)
    body = "[" * 10_000 + "]" * 10_000

    response = client.post("/api/jobs", data=body, content_type="application/json")

    assert_error_shape(response, (400,))
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert snapshot(app) == before


def test_json_nested_deep_inside_an_object_is_400(client):
    body = '{"prompt": "x", "options": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}"

    response = client.post("/api/jobs", data=body, content_type="application/json")

    assert_error_shape(response, (400,))


@pytest.mark.parametrize(
    "body",
    [
        '{"prompt": "a fox \\ud800 at dusk"}',
        '{"prompt": "a fox", "size": "\\udfff"}',
        '{"prompt": "a fox", "options": {"quality": "\\ud83d"}}',
        '{"prompt": "a fox", "\\ud800": 1}',
        '{"prompt": "a fox", "provider": "\\ud800"}',
    ],
)
def test_a_lone_surrogate_in_json_is_400_and_creates_nothing(app, client, body):
    before = snapshot(app)

    response = client.post("/api/jobs", data=body, content_type="application/json")

    assert_error_shape(response, (400,))
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert snapshot(app) == before


def test_a_real_astral_character_in_json_is_fine(client):
    # An escaped surrogate *pair* is one character (🦊), not a lone surrogate.
    body = '{"prompt": "a fox \\ud83e\\udd8a at dusk"}'

    response = client.post("/api/jobs", data=body, content_type="application/json")

    assert response.status_code == 202
    assert response.get_json()["prompt"] == "a fox 🦊 at dusk"


def test_json_ids_past_int64_as_numbers_are_refused(client):
    response = client.post("/api/jobs", json={"prompt": "a fox", "n": int(TOO_BIG)})

    assert_error_shape(response, (400,))


# --- sign-in and share links --------------------------------------------------------------------


@pytest.fixture
def secure_app(app_factory):
    app = app_factory(ATELIER_AUTH="on")
    with app.app_context():
        accounts.create_user("alice", PASSWORD, admin=True)  # sees every row
    return app


@pytest.mark.parametrize("next_url", ["/\n", "/gallery\r\nSet-Cookie: x=1", "/\x00", "/\x7f"])
def test_a_control_character_in_next_is_dropped_after_signing_in(secure_app, next_url):
    client = secure_app.test_client()
    form = {"username": "alice", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}

    response = client.post("/login", query_string={"next": next_url}, data=form)

    # Signed in, and sent home: a `next` that is not a plain local path is dropped, as `//x` is.
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert "Set-Cookie: x" not in str(response.headers)


def test_a_share_link_in_open_mode_is_404_and_creates_nothing(app, client):
    before = snapshot(app)
    with app.app_context():
        image_id = db.session.scalars(select(Image.id)).first()

    response = client.post(
        "/shares", data={"image_id": str(image_id), "csrf_token": csrf_token(client)}
    )

    assert_error_shape(response, (404,))
    assert "sign-in" in response.get_data(as_text=True).lower()
    assert snapshot(app) == before


@pytest.mark.parametrize("raw", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["image_id", "collection_id", "days"])
def test_bad_numbers_in_the_share_form_are_refused(secure_app, field, raw):
    client = secure_app.test_client()
    form = {"username": "alice", "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
    assert client.post("/login", data=form).status_code == 303
    [image_id] = insert_images(secure_app, 1, prompt="alice's harbour")
    before = snapshot(secure_app)
    fields = {"image_id": str(image_id), field: raw, "csrf_token": csrf_token(client)}
    if field == "collection_id":
        fields.pop("image_id")

    response = client.post("/shares", data=fields)

    assert_error_shape(response, (400, 404))
    assert snapshot(secure_app) == before
