"""Today's models: Azure deployments (gpt-image-1, DALL-E 3) and OpenAI's API, end to end
through the worker and the emulator over HTTP."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import pytest
import requests
from PIL import Image as PILImage

from tests.helpers import EMULATOR_KEY, emulator_counts, generate

ALL_APIS = {
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3",
    "AZURE_OPENAI_ASYNC_DALLE2": "on",
    "OPENAI_IMAGE_MODELS": "gpt-image-1,dall-e-3",
}


@pytest.fixture
def app_settings(emulator):
    return {"OPENAI_API_KEY": EMULATOR_KEY, "OPENAI_BASE_URL": emulator.url + "v1/", **ALL_APIS}


@pytest.fixture
def idle_client(idle_app):
    return idle_app.test_client()


def requests_to(emulator, fragment: str) -> int:
    """Every request the emulator received on a route, whatever it answered."""
    log = requests.get(emulator.url + "_emulator/requests", timeout=5).json()["requests"]
    return sum(1 for entry in log if fragment in entry["path"])


def stored_bytes(client, image) -> bytes:
    with client.get(image["url"]) as response:
        assert response.status_code == 200
        return response.data


def test_providers_are_listed_first_configured_first(client):
    items = client.get("/api/providers").get_json()["items"]

    assert [item["id"] for item in items] == [
        "azure:gpt-image-1",
        "azure:dall-e-3",
        "openai:gpt-image-1",
        "openai:dall-e-3",
        "azure-async",
    ]
    dalle3 = items[1]
    assert dalle3["max_images"] == 1
    assert dalle3["options"]["style"] == {"default": "vivid", "choices": ["vivid", "natural"]}
    assert "webp" not in items[0]["options"]["output_format"]["choices"]
    assert "webp" in items[2]["options"]["output_format"]["choices"]


def test_default_provider_is_the_first_configured(client):
    job = generate(client, prompt="a default choice")

    assert (job["provider"], job["model"]) == ("azure:gpt-image-1", "gpt-image-1")
    assert job["status"] == "succeeded"


def test_gpt_image_deployment_stores_b64_images_byte_exactly_with_usage(client, emulator):
    options = {"quality": "low", "output_format": "jpeg", "output_compression": 60}
    job = generate(client, prompt="two pears", provider="azure:gpt-image-1", n=2, options=options)

    assert job["status"] == "succeeded"
    assert job["options"] == {
        **options,
        "background": "auto",
        "moderation": "auto",
        "partial_images": 0,
        "input_fidelity": "low",
    }
    assert job["usage"]["total_tokens"] > 0
    assert [image["content_type"] for image in job["images"]] == ["image/jpeg"] * 2
    direct = requests.post(
        emulator.url + "openai/deployments/gpt-image-1/images/generations",
        params={"api-version": "2025-04-01-preview"},
        headers={"api-key": EMULATOR_KEY},
        json={"prompt": "two pears", "n": 2, "size": "1024x1024", **options},
        timeout=10,
    ).json()
    for image, item in zip(job["images"], direct["data"], strict=True):
        assert stored_bytes(client, image) == base64.b64decode(item["b64_json"])


def test_dalle3_deployment_downloads_the_url_and_keeps_revised_prompt_and_filters(client):
    job = generate(
        client,
        prompt="a red lighthouse",
        provider="azure:dall-e-3",
        size="1792x1024",
        options={"quality": "hd", "style": "natural"},
    )

    assert job["status"] == "succeeded"
    image = job["images"][0]
    assert (image["width"], image["height"]) == (1792, 1024)
    assert image["revised_prompt"] and image["revised_prompt"] != "a red lighthouse"
    assert set(image["filter_results"]) == {"content_filter_results", "prompt_filter_results"}
    data = stored_bytes(client, image)
    assert hashlib.sha256(data).hexdigest() == image["sha256"]


def test_openai_gpt_image_can_return_webp(client):
    job = generate(
        client,
        prompt="a blue kite",
        provider="openai:gpt-image-1",
        size="1536x1024",
        options={"output_format": "webp", "background": "transparent"},
    )

    assert job["status"] == "succeeded"
    with PILImage.open(io.BytesIO(stored_bytes(client, job["images"][0]))) as image:
        assert image.format == "WEBP"
        assert image.size == (1536, 1024)


def test_openai_dalle3_url_result_is_stored(client):
    job = generate(client, prompt="a moth", provider="openai:dall-e-3")

    assert job["status"] == "succeeded"
    assert job["images"][0]["revised_prompt"]


def test_image_page_shows_provider_options_revised_prompt_and_usage(client):
    gpt = generate(client, prompt="a fig", options={"quality": "high"})
    dalle = generate(client, prompt="a plum", provider="azure:dall-e-3")

    gpt_page = client.get(f"/images/{gpt['images'][0]['id']}").get_data(as_text=True)
    dalle_page = client.get(f"/images/{dalle['images'][0]['id']}").get_data(as_text=True)

    assert "gpt-image-1 · Azure deployment gpt-image-1" in gpt_page
    assert "<dt>Quality</dt><dd>high</dd>" in gpt_page
    assert f"{gpt['usage']['total_tokens']} in all" in gpt_page
    assert "Revised prompt" in dalle_page
    assert dalle["images"][0]["revised_prompt"] in dalle_page


AZ_GPT, AZ_DALLE3, OA_GPT, JPEG = (
    "azure:gpt-image-1",
    "azure:dall-e-3",
    "openai:gpt-image-1",
    "jpeg",
)
INVALID = [
    ({"provider": AZ_DALLE3, "n": 2}, "n"),
    ({"provider": AZ_DALLE3, "size": "1536x1024"}, "size"),
    ({"provider": AZ_DALLE3, "options": {"background": "opaque"}}, "options.background"),
    ({"provider": AZ_DALLE3, "options": {"quality": "high"}}, "options.quality"),
    ({"provider": AZ_DALLE3, "prompt": "x" * 4001}, "prompt"),
    ({"provider": AZ_GPT, "prompt": "x" * 32001}, "prompt"),
    ({"provider": AZ_GPT, "n": 11}, "n"),
    ({"provider": AZ_GPT, "size": "1792x1024"}, "size"),
    ({"provider": AZ_GPT, "options": {"quality": "hd"}}, "options.quality"),
    ({"provider": AZ_GPT, "options": {"style": "vivid"}}, "options.style"),
    ({"provider": AZ_GPT, "options": {"output_format": "webp"}}, "options.output_format"),
    (
        {"provider": AZ_GPT, "options": {"background": "transparent", "output_format": JPEG}},
        "options.background",
    ),
    ({"provider": AZ_GPT, "options": {"output_compression": 50}}, "options.output_compression"),
    (
        {"provider": OA_GPT, "options": {"output_format": JPEG, "output_compression": 101}},
        "options.output_compression",
    ),
    (
        {"provider": OA_GPT, "options": {"output_format": JPEG, "output_compression": "50"}},
        "options.output_compression",
    ),
    ({"provider": "azure-async", "size": "1024x1536"}, "size"),
    ({"provider": "azure-async", "options": {"quality": "hd"}}, "options.quality"),
    ({"provider": "nowhere"}, "provider"),
    ({"options": ["quality"]}, "options"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), INVALID)
def test_invalid_combination_is_refused_before_any_upstream_call(
    idle_client, emulator, body, field
):
    response = idle_client.post("/api/jobs", json={"prompt": "valid", **body})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == field
    assert error["message"]
    assert idle_client.get("/api/jobs").get_json()["items"] == []
    assert requests.get(emulator.url + "_emulator/requests", timeout=5).json()["requests"] == []


@pytest.mark.parametrize(
    ("prompt", "provider"),
    [
        ("a thing [refuse]", "azure:gpt-image-1"),
        ("a thing [refuse-legacy]", "azure:dall-e-3"),
        ("a thing [filter]", "azure:dall-e-3"),
        ("a thing [refuse]", "openai:gpt-image-1"),
    ],
)
def test_every_refusal_shape_becomes_one_clear_refusal(client, emulator, prompt, provider):
    job = generate(client, prompt=prompt, provider=provider)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "contentFilter"
    assert "refused this prompt" in job["error"]["message"]
    assert "safety system" in job["error"]["message"]
    assert requests_to(emulator, "images/generations") == 1  # a refusal is never retried


def test_refusal_names_the_flagged_categories(client):
    job = generate(client, prompt="nope [refuse]")

    assert "flagged: sexual" in job["error"]["message"]


def test_rate_limit_is_honoured_then_the_job_succeeds(client, emulator):
    job = generate(client, prompt="busy hour [ratelimit]")

    assert job["status"] == "succeeded"
    assert requests_to(emulator, "images/generations") == 2
    assert emulator_counts(emulator)["generate"] == 1


def test_endless_rate_limit_gives_up_with_a_readable_error(client, emulator):
    job = generate(client, prompt="always busy [ratelimit-always]", timeout=30)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "rate_limited"
    assert "Gave up after" in job["error"]["message"]
    assert 1 < requests_to(emulator, "images/generations") <= 15


def test_wrong_key_is_a_readable_configuration_error_and_not_retried(app_factory, emulator):
    client = app_factory(AZURE_OPENAI_API_KEY="not-the-key", **ALL_APIS).test_client()

    job = generate(client, prompt="locked out")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "unauthorized"
    assert "AZURE_OPENAI_API_KEY" in job["error"]["message"]
    assert requests_to(emulator, "images/generations") == 1


def test_missing_deployment_is_explained(app_factory, emulator):
    client = app_factory(AZURE_OPENAI_DEPLOYMENT="gone=gpt-image-1").test_client()

    job = generate(client, prompt="where is it")

    assert job["error"]["code"] == "not_found"
    assert "'gone'" in job["error"]["message"]
    assert "AZURE_OPENAI_DEPLOYMENT" in job["error"]["message"]


def test_entra_id_token_is_sent_as_bearer(app_factory, emulator):
    client = app_factory(
        AZURE_OPENAI_API_KEY="", AZURE_OPENAI_AD_TOKEN="eyJ.fake.token", **ALL_APIS
    ).test_client()

    job = generate(client, prompt="signed in")

    assert job["status"] == "succeeded"


def test_read_timeout_of_a_generation_is_interrupted_not_resent(app_factory, emulator):
    client = app_factory(ATELIER_GENERATION_TIMEOUT_SECONDS=0.5, **ALL_APIS).test_client()

    job = generate(client, prompt="too slow [hang]")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "interrupted"
    assert "Retry" in job["error"]["message"]
    assert requests_to(emulator, "images/generations") == 1


def test_model_options_partial_follows_the_chosen_provider(client):
    dalle = client.get("/partials/model-options?provider=azure:dall-e-3").get_data(as_text=True)
    gpt = client.get("/partials/model-options?provider=openai:gpt-image-1").get_data(as_text=True)

    assert 'name="style"' in dalle and 'name="background"' not in dalle
    assert "makes one image per request" in dalle
    assert 'value="1792x1024"' in dalle
    assert 'name="background"' in gpt and 'name="style"' not in gpt
    assert 'value="webp"' in gpt


def test_form_submits_options_for_the_chosen_provider(client):
    from tests.helpers import csrf_token

    response = client.post(
        "/jobs",
        data={
            "csrf_token": csrf_token(client),
            "prompt": "a heron",
            "provider": "azure:dall-e-3",
            "size": "1024x1792",
            "n": "1",
            "quality": "hd",
            "style": "natural",
            "background": "opaque",  # left over from another model's fields: ignored
        },
    )

    job_id = int(response.headers["Location"].rsplit("/", 1)[1])
    job = client.get(f"/api/jobs/{job_id}").get_json()
    assert response.status_code == 303
    assert (job["provider"], job["size"], job["options"]) == (
        "azure:dall-e-3",
        "1024x1792",
        {"quality": "hd", "style": "natural"},
    )


def test_form_error_for_the_model_is_shown_beside_its_field(client):
    from tests.helpers import csrf_token

    response = client.post(
        "/jobs",
        data={
            "csrf_token": csrf_token(client),
            "prompt": "a heron",
            "provider": "azure:gpt-image-1",
            "output_format": "jpeg",
            "background": "transparent",
        },
    )

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "A transparent background needs PNG or WebP output" in page
    chosen = re.search(r'<option[^>]*value="azure:gpt-image-1"[^>]*>', page).group(0)
    assert "selected" in chosen


def test_option_fields_show_their_defaults(client):
    page = client.get("/").get_data(as_text=True)

    compression = re.search(r'<input id="output_compression"[^>]*>', page).group(0)
    assert 'value="100"' in compression
    assert re.search(r'<option value="auto"\s+selected>auto</option>', page)


def test_delete_keeps_files_another_job_still_uses(client):
    # The emulator draws the same request identically; JPEGs carry no per-job metadata, so
    # both jobs share one stored file.
    body = {"prompt": "twin", "options": {"output_format": "jpeg", "output_compression": 70}}
    first = generate(client, **body)
    second = generate(client, **body)
    assert first["images"][0]["sha256"] == second["images"][0]["sha256"]

    client.delete(f"/api/jobs/{first['id']}")

    with client.get(f"/files/images/{second['images'][0]['id']}") as response:
        assert response.status_code == 200
