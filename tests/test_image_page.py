"""The image page: prompt, revised prompt, parameters, timings, actions, the star, the prompt
family with its diffs; and app.diffs, the word-level diff behind it."""

from __future__ import annotations

import re

import pytest

from app import curation
from app.diffs import has_changes, word_diff
from tests.helpers import generate, post, wait_for_job

DEPLOYMENTS = {
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3",
    "AZURE_OPENAI_ASYNC_DALLE2": "on",
}


@pytest.fixture
def app_settings():
    return DEPLOYMENTS


def page_of(client, url: str) -> str:
    with client.get(url) as response:
        assert response.status_code == 200, url
        return response.get_data(as_text=True)


def image_page(client, job: dict, index: int = 0) -> str:
    return page_of(client, f"/images/{job['images'][index]['id']}")


def posted_job(client, url: str, data: dict | None = None) -> dict:
    """POST a form that makes a job (it answers 303 to the job); the job once final."""
    status, text, headers = post(client, url, data)
    assert status == 303, text[:300]
    return wait_for_job(client, int(headers["Location"].rsplit("/", 1)[1]))


# --- what the page shows ------------------------------------------------------------------------


def test_page_shows_the_prompt_revised_prompt_and_every_parameter(client):
    job = generate(
        client,
        prompt="a red lighthouse",
        provider="azure:dall-e-3",
        size="1792x1024",
        options={"quality": "hd", "style": "natural"},
    )

    page = image_page(client, job)

    image = job["images"][0]
    assert '<p class="prompt" id="prompt-text">a red lighthouse</p>' in page
    assert "Revised prompt" in page
    assert image["revised_prompt"] in page
    assert "<dt>Provider</dt><dd>dall-e-3 · Azure deployment dall-e-3 (retired)</dd>" in page
    assert "<dt>Model</dt><dd>dall-e-3</dd>" in page
    assert "<dt>Size</dt><dd>1792x1024</dd>" in page
    assert "<dt>Quality</dt><dd>hd</dd>" in page
    assert "<dt>Style</dt><dd>natural</dd>" in page
    assert "<dt>Images asked for</dt><dd>1</dd>" in page
    assert f'<img src="/files/images/{image["id"]}" width="1792" height="1024"' in page


def test_page_shows_how_the_model_revised_the_prompt_word_by_word(client):
    job = generate(client, prompt="a red lighthouse", provider="azure:dall-e-3")

    page = image_page(client, job)

    assert "What the model changed" in page
    assert '<ins><span class="visually-hidden">added: </span>' in page


def test_page_shows_token_usage_and_timings(client):
    job = generate(client, prompt="a fig", options={"quality": "high"})

    page = image_page(client, job)

    assert f"{job['usage']['total_tokens']} in all" in page
    for label in ("Created", "Started", "Finished", "Queued for", "Generation time"):
        assert f"<dt>{label}</dt>" in page
    assert re.search(r"<dt>Generation time</dt><dd>\d+\.\d s</dd>", page)
    assert "Revised prompt" not in page  # gpt-image-1 does not revise prompts


def test_page_offers_download_copy_reuse_and_generate_again(client):
    job = generate(client, prompt="a quiet harbour")
    image_id = job["images"][0]["id"]

    page = image_page(client, job)

    assert f'href="/files/images/{image_id}/original">Download original</a>' in page
    assert f'href="/files/images/{image_id}/with-prompt"' in page
    assert "its Content Credentials no\n      longer validate" in page
    # Copying needs JavaScript: the button is hidden until static/image.js shows it.
    assert 'class="button small copy-button" data-copy="prompt-text" hidden>' in page
    assert f'href="/?reuse={job["id"]}">Use this prompt</a>' in page
    again_form = rf'<form method="post" action="/jobs/{job["id"]}/again">(.*?)</form>'
    again = re.search(again_form, page, re.S)
    assert again and 'name="csrf_token"' in again.group(1)
    assert "/static/image.js" in page


def test_page_links_newer_and_older_images_for_the_arrow_keys(client):
    first, second, third = (generate(client, prompt=f"frame {n}") for n in range(3))

    page = image_page(client, second)

    assert f'<a rel="prev" href="/images/{third["images"][0]["id"]}">' in page
    assert f'<a rel="next" href="/images/{first["images"][0]["id"]}">' in page
    assert '<dialog id="shortcuts"' in page


def test_unknown_filtered_and_failed_images_are_404(client):
    filtered = generate(client, prompt="a cat [filter]", provider="azure-async", n=2)["images"][1]
    assert filtered["status"] == "filtered"

    for url in ("/images/999", f"/images/{filtered['id']}"):
        with client.get(url) as response:
            assert response.status_code == 404


def test_image_in_the_trash_is_shown_with_a_notice_and_no_star(app, client):
    job = generate(client, prompt="a bin")
    image_id = job["images"][0]["id"]
    with app.app_context():
        curation.trash([image_id])

    page = image_page(client, job)

    assert "This image is in the trash" in page
    assert 'id="star-button"' not in page


# --- the star -----------------------------------------------------------------------------------


def test_star_toggles_without_javascript_and_comes_back_to_the_image(client):
    job = generate(client, prompt="a star")
    image_id = job["images"][0]["id"]
    assert 'aria-pressed="false"' in image_page(client, job)

    status, _, headers = post(client, f"/images/{image_id}/favorite")
    assert status == 303
    assert headers["Location"] == f"/images/{image_id}"

    assert 'aria-pressed="true"' in image_page(client, job)


def test_star_through_htmx_answers_with_the_new_star_form(client):
    job = generate(client, prompt="a star")
    image_id = job["images"][0]["id"]

    _, starred, _ = post(client, f"/partials/images/{image_id}/star")
    _, unstarred, _ = post(client, f"/partials/images/{image_id}/star")

    assert starred.lstrip().startswith('<form id="star-form"')
    assert 'aria-pressed="true"' in starred
    assert f'hx-post="/partials/images/{image_id}/star" hx-target="this" hx-swap="outerHTML"' in (
        starred
    )
    assert 'aria-pressed="false"' in unstarred


def test_star_of_a_missing_image_is_404(client):
    assert post(client, "/images/999/favorite")[0] == 404


# --- lineage ------------------------------------------------------------------------------------


def test_generate_again_makes_a_linked_job_whose_page_shows_the_family(client):
    parent = generate(client, prompt="a paper lantern")

    child = posted_job(client, f"/jobs/{parent['id']}/again")

    assert (child["parent"], child["origin"]) == (parent["id"], "again")
    page = image_page(client, child)
    assert "Prompt family" in page
    assert f'<a class="lineage-link" href="/images/{parent["images"][0]["id"]}">' in page
    assert "Generated again · this image" in page
    assert f"Same prompt as job #{parent['id']}." in page
    parent_page = image_page(client, parent)
    assert "Made from this job" in parent_page
    assert f'href="/images/{child["images"][0]["id"]}"' in parent_page


def test_use_this_prompt_prefills_the_form_with_the_parent(client):
    job = generate(client, prompt="a paper lantern on a lake")

    page = page_of(client, f"/?reuse={job['id']}")

    assert "a paper lantern on a lake</textarea>" in page
    assert f'name="parent" type="hidden" value="{job["id"]}"' in page


def test_reused_prompt_records_its_parent_and_shows_a_word_diff(client):
    parent = generate(client, prompt="a paper lantern on a lake")

    form = {
        "prompt": "a red paper lantern on a frozen lake",
        "provider": "azure:gpt-image-1",
        "size": "1024x1024",
        "n": "1",
        "parent": str(parent["id"]),
    }

    child = posted_job(client, "/jobs", form)

    assert (child["parent"], child["origin"]) == (parent["id"], "reuse")
    page = image_page(client, child)
    assert "Prompt reused · this image" in page
    assert f"Prompt changes since job #{parent['id']}" in page
    assert '<ins><span class="visually-hidden">added: </span>red</ins> ' in page
    assert '<ins><span class="visually-hidden">added: </span>frozen</ins> ' in page


def test_family_shows_every_ancestor_root_first(client):
    root = generate(client, prompt="a kite")
    chain = [root]
    for _ in range(2):
        chain.append(posted_job(client, f"/jobs/{chain[-1]['id']}/again"))

    page = image_page(client, chain[-1])

    links = re.findall(r'<span class="lineage-id">Job #(\d+)', page)
    assert [int(n) for n in links] == [job["id"] for job in chain]


def test_job_without_family_shows_no_family_section(client):
    assert "Prompt family" not in image_page(client, generate(client, prompt="an only child"))


# --- app.diffs ----------------------------------------------------------------------------------


def test_diff_of_identical_prompts_is_one_equal_piece():
    assert word_diff("a red boat", "a red boat") == [("equal", "a red boat")]
    assert not has_changes(word_diff("a red boat", "a red boat"))


def test_diff_finds_inserted_words():
    assert word_diff("a boat", "a red boat") == [
        ("equal", "a "),
        ("insert", "red "),
        ("equal", "boat"),
    ]


def test_diff_finds_deleted_words():
    assert word_diff("a small red boat", "a boat") == [
        ("equal", "a "),
        ("delete", "small red "),
        ("equal", "boat"),
    ]


def test_diff_shows_a_replacement_as_a_delete_then_an_insert():
    assert word_diff("a red boat", "a blue boat") == [
        ("equal", "a "),
        ("delete", "red "),
        ("insert", "blue "),
        ("equal", "boat"),
    ]


def test_diff_treats_punctuation_as_words_and_ignores_respacing():
    assert word_diff("a boat, at sea", "a boat at  sea!") == [
        ("equal", "a boat "),
        ("delete", ", "),
        ("equal", "at  sea"),
        ("insert", "!"),
    ]


def test_diff_with_empty_prompts():
    assert word_diff("", "") == []
    assert word_diff("", "a boat") == [("insert", "a boat")]
    assert word_diff("a boat", "") == [("delete", "a boat")]


def test_diff_pieces_rebuild_the_new_prompt():
    old, new = "A fox, reading a map.", "A sly fox reading an old map by lantern light."
    pieces = word_diff(old, new)

    assert "".join(text for op, text in pieces if op != "delete") == new
    old_again = "".join(text for op, text in pieces if op != "insert")
    assert old_again.replace(" ", "") == old.replace(" ", "")  # the same words, new spacing


def test_with_sign_in_off_the_page_offers_no_share_link(client):
    # A link belongs to an account; with sign-in off there is none to own it (POST is a 404).
    page = image_page(client, generate(client, prompt="a quiet harbour"))

    assert "Share link" not in page
    assert 'action="/shares"' not in page
