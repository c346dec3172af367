"""Edits in the HTML pages (issue #15): the prompt form's reference images and mask (multipart,
plain file inputs), `/?edit=<image id>`, the image page's Edit button and mask painter form,
the gallery selection's Edit, the form saying when a model cannot edit, and refused inputs shown
on their field with nothing stored."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from app.auth import accounts
from tests.helpers import csrf_token, wait_for_job

DEPLOYMENTS = {
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3",
    "AZURE_OPENAI_ASYNC_DALLE2": "on",
}
EDITS = "azure:gpt-image-1"
NO_EDITS = "azure:dall-e-3"
PASSWORD = "correct horse battery"


@pytest.fixture
def app(app_factory):
    return app_factory(**DEPLOYMENTS)


def page_of(client: FlaskClient, url: str) -> str:
    with client.get(url) as response:
        assert response.status_code == 200, url
        return response.get_data(as_text=True)


def made_image(client: FlaskClient, prompt: str, **headers: str) -> int:
    body = {"prompt": prompt, "provider": EDITS}
    response = client.post("/api/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job["images"][0]["id"]


def chosen_provider(page: str) -> str | None:
    found = re.search(r'<option selected value="([^"]+)">', page)
    return found.group(1) if found else None


def reference_ids(page: str) -> list[int]:
    return [int(i) for i in re.findall(r'name="reference_image" value="(\d+)"', page)]


def references_section(page: str) -> str:
    return page[page.index('<fieldset class="references') : page.index("</fieldset>")]


# --- the prompt form ----------------------------------------------------------------------------


def test_prompt_form_posts_multipart_with_plain_file_inputs(client):
    page = page_of(client, "/")

    form = page[page.index('<form id="prompt-form"') :]
    assert 'enctype="multipart/form-data"' in form[: form.index(">")]
    assert (
        '<input id="image-upload" type="file" name="image" multiple '
        'accept="image/png,image/jpeg,image/webp"' in page
    )
    assert '<input id="mask-upload" type="file" name="mask" accept="image/png"' in page
    assert '<script src="/static/references.js" defer></script>' in page
    assert reference_ids(page) == []


def test_edit_link_opens_the_form_with_those_images_and_the_first_prompt(client):
    first = made_image(client, "a harbour at noon")
    second = made_image(client, "a red boat")

    page = page_of(client, f"/?edit={second}&edit={first}")

    assert reference_ids(page) == [second, first]
    assert f'src="/files/thumbs/{second}"' in page
    assert re.search(r'name="prompt"[^>]*>\s*a red boat</textarea>', page)
    # Each reference can be removed: without JavaScript a link to the form without it.
    assert re.search(rf'href="/\?edit={first}"\s+aria-label="Remove gallery image {second}"', page)


def test_edit_link_chooses_a_provider_that_can_edit(app_factory):
    client = app_factory(AZURE_OPENAI_DEPLOYMENT="dall-e-3=dall-e-3,gpt-image-1=gpt-image-1")
    client = client.test_client()
    image = made_image(client, "a kite")

    assert chosen_provider(page_of(client, "/")) is None  # the default: dall-e-3, first

    page = page_of(client, f"/?edit={image}")

    assert chosen_provider(page) == EDITS


def test_edit_link_leaves_out_ids_of_no_image_and_malformed_ids_alike(client):
    image = made_image(client, "a lantern")

    page = page_of(client, f"/?edit=999999&edit=abc&edit={image}&edit={image}")

    assert reference_ids(page) == [image]


def test_edit_link_never_shows_another_users_image(app_factory):
    app = app_factory(ATELIER_AUTH="on", **DEPLOYMENTS)
    clients = {}
    for name in ("alice", "bob"):
        with app.app_context():
            accounts.create_user(name, PASSWORD)
        client = app.test_client()
        form = {"username": name, "password": PASSWORD, "csrf_token": csrf_token(client, "/login")}
        assert client.post("/login", data=form).status_code == 303
        clients[name] = client
    bob = clients["bob"]
    bobs = made_image(bob, "bob's secret garden", **{"X-CSRFToken": csrf_token(bob)})

    foreign = page_of(clients["alice"], f"/?edit={bobs}")
    missing = page_of(clients["alice"], "/?edit=999999")

    assert reference_ids(foreign) == []
    assert "secret garden" not in foreign
    assert f"/files/thumbs/{bobs}" not in foreign
    # The same page as for an id of no image: nothing tells them apart.
    assert references_section(foreign) == references_section(missing)


def test_model_fields_say_when_the_model_cannot_take_reference_images(client):
    cannot = page_of(client, f"/partials/model-options?provider={NO_EDITS}")
    can = page_of(client, f"/partials/model-options?provider={EDITS}")

    assert 'class="field-help edits-unsupported"' in cannot
    assert "dall-e-3 makes images from the prompt alone" in cannot
    assert "edits-unsupported" not in can


# --- the image page -----------------------------------------------------------------------------


def test_image_page_has_an_edit_button_and_the_mask_painter(client):
    image = made_image(client, "a sky over fields")

    page = page_of(client, f"/images/{image}")

    assert f'<a class="button" href="/?edit={image}">Edit</a>' in page
    assert '<script src="/static/mask-painter.js" defer></script>' in page
    form = page[page.index('<form id="mask-form"') : page.index("</form>", page.index("mask-form"))]
    assert 'action="/jobs" enctype="multipart/form-data"' in form
    assert f'<input type="hidden" name="reference_image" value="{image}">' in form
    assert 'name="csrf_token"' in form
    assert 'name="idempotency_key"' in form
    assert '<input id="mask-file" type="file" name="mask" accept="image/png"' in form
    assert 'name="prompt"' in form
    # The painter, hidden until its script runs, with the image's own size.
    assert '<div class="mask-painter" data-width="1024" data-height="1024" hidden>' in form
    for control in ("Brush", "Eraser", "Undo", "Clear", "Invert"):
        assert f">{control}</button>" in form
    assert '<input id="mask-size" class="mask-size" type="range"' in form
    assert '<canvas id="mask-canvas" class="mask-canvas"' in form


def test_mask_form_offers_only_providers_that_can_edit(client):
    image = made_image(client, "a field")

    page = page_of(client, f"/images/{image}")

    form = page[page.index('<form id="mask-form"') : page.index("</form>", page.index("mask-form"))]
    assert f'<input type="hidden" name="provider" value="{EDITS}">' in form
    assert NO_EDITS not in form


def test_image_page_of_a_trashed_image_has_no_edit(client):
    image = made_image(client, "a dune")
    token = csrf_token(client)
    client.post("/gallery/bulk", data={"action": "delete", "ids": image, "csrf_token": token})

    page = page_of(client, f"/images/{image}")

    assert "This image is in the trash" in page
    assert 'id="mask-form"' not in page
    assert f'href="/?edit={image}"' not in page


# --- the gallery --------------------------------------------------------------------------------


def test_gallery_selection_has_an_edit_button(client):
    made_image(client, "a cat")

    page = page_of(client, "/gallery")

    assert '<button type="submit" name="action" value="edit" class="button small">Edit</button>' in page


def test_edit_on_a_gallery_selection_opens_the_form_with_those_images(client):
    one = made_image(client, "a cat")
    two = made_image(client, "a dog")
    token = csrf_token(client)

    response = client.post(
        "/gallery/bulk", data={"action": "edit", "ids": [str(two), str(one)], "csrf_token": token}
    )

    assert response.status_code == 303
    assert response.headers["Location"] == f"/?edit={one}&edit={two}"
    assert reference_ids(page_of(client, response.headers["Location"])) == [one, two]


def test_edit_through_htmx_redirects_the_browser(client):
    one = made_image(client, "a cat")
    token = csrf_token(client)

    response = client.post(
        "/partials/gallery/bulk",
        data={"action": "edit", "ids": str(one), "csrf_token": token},
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 204
    assert response.headers["HX-Redirect"] == f"/?edit={one}"


def test_edit_of_more_images_than_an_edit_takes_is_refused(client):
    token = csrf_token(client)

    response = client.post(
        "/gallery/bulk",
        data={"action": "edit", "ids": [str(i) for i in range(1, 18)], "csrf_token": token},
    )

    assert response.status_code == 422
    assert "An edit takes at most 16 images; 17 are selected." in response.get_data(as_text=True)


def test_edit_of_an_empty_selection_is_refused(client):
    token = csrf_token(client)

    response = client.post("/gallery/bulk", data={"action": "edit", "csrf_token": token})

    assert response.status_code == 422
    assert "Select at least one image." in response.get_data(as_text=True)
