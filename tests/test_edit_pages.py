"""Edits in the HTML pages (issue #15): the prompt form's reference images and mask (multipart,
plain file inputs), `/?edit=<image id>`, the image page's Edit button and mask painter form,
the gallery selection's Edit, the form saying when a model cannot edit, and refused inputs shown
on their field with nothing stored."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage
from sqlalchemy import func, select

from app import storage
from app.auth import accounts
from app.models import Job, JobPhase, JobStatus, db, write_transaction
from tests.helpers import csrf_token, signed_in, wait_for_job

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


def alice_and_bobs_image(app_factory) -> tuple[Flask, FlaskClient, int]:
    """An app with sign-in on, Alice's signed-in client, and the id of an image of Bob's."""
    app = app_factory(ATELIER_AUTH="on", **DEPLOYMENTS)
    with app.app_context():
        for name in ("alice", "bob"):
            accounts.create_user(name, PASSWORD)
    alice, bob = signed_in(app, "alice", PASSWORD), signed_in(app, "bob", PASSWORD)
    bobs = made_image(bob, "bob's secret garden", **{"X-CSRFToken": csrf_token(bob)})
    return app, alice, bobs


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
    _, alice, bobs = alice_and_bobs_image(app_factory)

    foreign = page_of(alice, f"/?edit={bobs}")
    missing = page_of(alice, "/?edit=999999")

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

    assert (
        '<button type="submit" name="action" value="edit" class="button small">Edit</button>'
        in page
    )


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


# --- sending the form ---------------------------------------------------------------------------


def png(width: int, height: int, *, alpha: bool = False, hole: bool = False) -> bytes:
    """A PNG of that size; with `hole`, transparent in its top half (a mask)."""
    picture = PILImage.new("RGBA" if alpha else "RGB", (width, height), "white")
    if hole:
        picture.paste((0, 0, 0, 0), (0, 0, width, height // 2))
    out = io.BytesIO()
    picture.save(out, "PNG")
    return out.getvalue()


def post_form(client: FlaskClient, url: str = "/jobs", **fields) -> tuple[int, str, dict]:
    data = {"prompt": "make the sky stormy", "provider": EDITS, "csrf_token": csrf_token(client)}
    data.update(fields)
    response = client.post(url, data=data, content_type="multipart/form-data")
    return response.status_code, response.get_data(as_text=True), response.headers


def job_made_by_form(client: FlaskClient, **fields) -> dict:
    """Send the prompt form with `fields`: it must redirect (303) to the new job; its JSON."""
    status, _, headers = post_form(client, **fields)
    assert status == 303
    return client.get(f"/api/jobs/{int(headers['Location'].rsplit('/', 1)[1])}").get_json()


def painted_mask() -> tuple[io.BytesIO, str]:
    """A mask as the painter sends it for a 1024×1024 image: its top half painted."""
    return io.BytesIO(png(1024, 1024, alpha=True, hole=True)), "mask.png"


def job_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job))


def stored_files(app) -> set[str]:
    data = Path(app.config["ATELIER_DATA_DIR"])
    return {str(path.relative_to(data)) for path in (data / "images").rglob("*") if path.is_file()}


def test_form_with_a_gallery_image_and_a_painted_mask_creates_an_edit(app, client):
    image = made_image(client, "a wide sky")

    job = job_made_by_form(client, reference_image=str(image), mask=painted_mask())

    assert job["kind"] == "edit"
    assert [item["role"] for item in job["inputs"]] == ["image", "mask"]
    assert job["prompt"] == "make the sky stormy"


def test_form_with_uploaded_images_creates_an_edit(client):
    job = job_made_by_form(
        client,
        image=[(io.BytesIO(png(64, 64)), "one.png"), (io.BytesIO(png(32, 32)), "two.png")],
    )

    assert [(item["role"], item["width"]) for item in job["inputs"]] == [
        ("image", 64),
        ("image", 32),
    ]


def test_form_without_files_still_makes_a_plain_generation(client):
    job = job_made_by_form(client, image=(io.BytesIO(b""), ""))

    assert job["kind"] == "generate"
    assert job["inputs"] == []


@pytest.mark.parametrize("url", ["/jobs", "/partials/jobs"])
def test_a_file_that_is_not_an_image_is_refused_on_the_image_field(app, client, url):
    before = stored_files(app)

    status, page, headers = post_form(
        client, url, image=(io.BytesIO(b"<script>x</script>"), "x.png")
    )

    assert status == 422
    assert re.search(r'<p class="field-error" id="image-error">[^<]*not a PNG, JPEG or WebP', page)
    assert 'aria-invalid="true"' in page[page.index('id="image-upload"') :][:400]
    assert 'id="prompt-error"' not in page
    assert job_count(app) == 0
    assert stored_files(app) == before
    if url == "/partials/jobs":
        assert headers["HX-Retarget"] == "#prompt-form"


def test_a_mask_of_the_wrong_size_is_refused_on_the_mask_field(app, client):
    image = made_image(client, "a wide sky")
    jobs_before = job_count(app)

    status, page, _ = post_form(
        client,
        reference_image=str(image),
        mask=(io.BytesIO(png(100, 100, alpha=True, hole=True)), "m.png"),
    )

    assert status == 422
    error = re.search(r'<p class="field-error" id="mask-error">([^<]*)</p>', page)
    assert error and "1024" in error.group(1)
    assert 'id="image-error"' not in page
    assert job_count(app) == jobs_before
    # The gallery reference is kept in the form sent back; the files must be chosen again.
    assert reference_ids(page) == [image]
    assert "Files are not kept after an error: choose them again." in page


def test_another_users_image_is_refused_like_one_that_does_not_exist(app_factory):
    app, alice, bobs = alice_and_bobs_image(app_factory)
    jobs_before = job_count(app)

    _, foreign, _ = post_form(alice, reference_image=str(bobs))
    status, missing, _ = post_form(alice, reference_image=str(bobs + 1000))

    assert status == 422
    foreign_error = re.search(r'id="image-error">([^<]*)<', foreign).group(1)
    missing_error = re.search(r'id="image-error">([^<]*)<', missing).group(1)
    assert foreign_error == missing_error.replace(str(bobs + 1000), str(bobs))
    assert "secret garden" not in foreign
    assert reference_ids(foreign) == []
    assert job_count(app) == jobs_before


def test_a_model_that_cannot_edit_is_refused_on_the_image_field(app, client):
    status, page, _ = post_form(client, provider=NO_EDITS, image=(io.BytesIO(png(64, 64)), "a.png"))

    assert status == 422
    assert 'id="image-error"' in page
    assert job_count(app) == 0


# --- live previews on the job card --------------------------------------------------------------


def card_of(page: str, job_id: int) -> str:
    start = page.rindex("<article", 0, page.index(f'id="job-{job_id}"'))
    return page[start : page.index("</article>", start)]


def running_job_with_preview(app, client: FlaskClient, frame: int = 1) -> int:
    """A job the worker is making (running, no image yet) whose latest partial frame is kept."""
    job_id = client.post(
        "/api/jobs", json={"prompt": "a storm rolling in", "provider": EDITS}
    ).get_json()["id"]
    with app.app_context():
        name = storage.current().write_preview(job_id, png(64, 64))
        with write_transaction() as session:
            job = session.get(Job, job_id)
            job.status, job.phase = JobStatus.RUNNING, JobPhase.POLLING
            job.preview_name, job.preview_index = name, frame
    return job_id


def test_a_running_jobs_card_shows_its_preview_blurred_and_labelled(app, client):
    job_id = running_job_with_preview(app, client, frame=2)

    for url in (f"/partials/jobs/{job_id}", f"/jobs/{job_id}", "/"):
        card = card_of(page_of(client, url), job_id)
        assert 'hx-trigger="load delay:' in card  # it still polls
        assert '<figure class="job-preview">' in card, url
        assert f'<img src="/jobs/{job_id}/preview?frame=2"' in card
        assert '<figcaption class="preview-label">preview</figcaption>' in card
    with client.get(f"/jobs/{job_id}/preview?frame=2") as response:
        assert response.status_code == 200
        assert response.mimetype == "image/png"


def test_a_finished_jobs_card_has_no_preview_and_no_trigger(app, client):
    job = wait_for_job(
        client, client.post("/api/jobs", json={"prompt": "a storm"}).get_json()["id"]
    )
    assert job["status"] == "succeeded"
    with app.app_context(), write_transaction() as session:  # a frame left behind, say
        session.get(Job, job["id"]).preview_name = "previews/1.png"

    card = page_of(client, f"/partials/jobs/{job['id']}")
    assert "job-preview" not in card
    assert "hx-trigger" not in card
    assert '<ul class="thumbs"' in card


def test_a_running_job_without_a_preview_shows_the_progress_bar_only(app, client):
    job_id = client.post("/api/jobs", json={"prompt": "a calm sea", "provider": EDITS}).get_json()[
        "id"
    ]

    card = page_of(client, f"/partials/jobs/{job_id}")

    assert "job-preview" not in card
    assert 'class="progress"' in card


# --- the job page -------------------------------------------------------------------------------


def test_job_page_shows_the_inputs_with_their_roles_and_where_they_came_from(app, client):
    image = made_image(client, "a wide sky")
    job = job_made_by_form(client, reference_image=str(image), mask=painted_mask())
    job_id = job["id"]

    page = page_of(client, f"/jobs/{job_id}")

    inputs = page[page.index('<section class="job-inputs"') :]
    inputs = inputs[: inputs.index("</section>")]
    ids = [int(i) for i in re.findall(r'href="/files/inputs/(\d+)"', inputs)]
    assert len(ids) == 2
    assert f'src="/files/inputs/{ids[0]}/thumb"' in inputs
    assert re.findall(r'<span class="input-role">([^<]+)</span>', inputs) == ["Image 1", "Mask"]
    assert '<li class="input-item input-mask">' in inputs
    assert [item["url"].rsplit("/", 1)[1] for item in job["inputs"]] == [str(i) for i in ids]
    edited = page[page.index('<section class="lineage lineage-edits"') :]
    assert f'href="/images/{image}"' in edited[: edited.index("</section>")]
    assert "a wide sky" in edited


def test_image_page_of_an_edit_shows_its_inputs_and_what_it_was_edited_from(app, client):
    image = made_image(client, "a wide sky")
    job = wait_for_job(client, job_made_by_form(client, reference_image=str(image))["id"])
    assert job["status"] == "succeeded", job

    page = page_of(client, f"/images/{job['images'][0]['id']}")

    assert '<h2 id="edited-from-title">Edited from</h2>' in page
    edited = page[page.index('<section class="lineage lineage-edits"') :]
    edited = edited[: edited.index("</section>")]
    assert f'href="/images/{image}"' in edited
    assert f'src="/files/thumbs/{image}"' in edited
    assert re.findall(r'<span class="input-role">([^<]+)</span>', page) == ["Image 1"]


def test_a_generation_has_no_inputs_or_edited_from(client):
    image = made_image(client, "a plain field")

    page = page_of(client, f"/images/{image}")

    assert "job-inputs" not in page
    assert "Edited from" not in page


def test_mask_form_asks_for_live_previews_by_default(client):
    image = made_image(client, "a field")

    page = page_of(client, f"/images/{image}")

    assert '<input type="checkbox" name="partial_images" value="2" checked>' in page
    job = job_made_by_form(client, reference_image=str(image), partial_images="2")
    assert job["options"]["partial_images"] == 2
