"""The emulator's synchronous image routes, over real loopback HTTP with `requests`.

Azure's deployment route (`/openai/deployments/{deployment}/images/generations`) and OpenAI's
route (`/v1/images/generations`): images, validation, authentication, api-versions, prompt
triggers, latency, the request log and the command line. The tests share one emulator whose
request log is cleared before each test; `[ratelimit]` remembers prompts for the emulator's
lifetime, so every test that uses it sends a prompt of its own.
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from PIL import Image

from app.emulator import EmulatorConfig, EmulatorServer
from app.emulator.__main__ import config_from_args, parse_args
from tests.emulator_client import (
    OVER_1_MIB,
    REFUSED_SIGN_INS,
    TIMEOUT,
    accepted_sign_ins,
    assert_access_denied,
    assert_azure_429,
    assert_resource_not_found,
    post_raw,
    post_signed_in,
    reset,
    serving,
    session_fixture,
)

API_KEY = "azure-test-key-0123456789"
OPENAI_KEY = "sk-emulator-test-key-wxyz"
GPT_VERSION = "2025-04-01-preview"
DALLE_VERSION = "2024-10-21"
LATENCY = 0.05
HANG_SECONDS = 0.5
DEPLOYMENTS = {
    "gpt-image-1": "gpt-image-1",
    "dall-e-3": "dall-e-3",
    "mini": "gpt-image-1-mini",
    "classic": "dall-e-2",
}
DEPLOYMENT_NOT_FOUND = {
    "error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the "
        "deployment within the last 5 minutes, please wait a moment and try again.",
    }
}
SAFETY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
SAFE = {"filtered": False, "severity": "safe"}


SETTINGS = {
    "api_key": API_KEY,
    "latency": LATENCY,
    "hang_seconds": HANG_SECONDS,
    "openai_api_key": OPENAI_KEY,
    "deployments": DEPLOYMENTS,
}


def _config(**overrides: object) -> EmulatorConfig:
    return EmulatorConfig(**{**SETTINGS, "deployments": dict(DEPLOYMENTS), **overrides})


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    yield from serving(SETTINGS, deployments=dict(DEPLOYMENTS))


@pytest.fixture
def emulator(shared_emulator: EmulatorServer) -> EmulatorServer:
    """The module's emulator with its request log (and so its counts) cleared for this test."""
    return reset(shared_emulator)


# Sessions: `azure` authenticates like an Azure client (api-key header), `openai` like an
# OpenAI client (bearer key).
azure = session_fixture({"api-key": API_KEY})
openai = session_fixture({"Authorization": f"Bearer {OPENAI_KEY}"})
anonymous = session_fixture()


def azure_url(
    server: EmulatorServer, deployment: str = "gpt-image-1", version: str | None = GPT_VERSION
) -> str:
    query = "" if version is None else f"?api-version={version}"
    return f"{server.url}openai/deployments/{deployment}/images/generations{query}"


def azure_generate(
    server: EmulatorServer,
    http: requests.Session,
    deployment: str = "gpt-image-1",
    version: str | None = None,
    **body: object,
) -> requests.Response:
    if version is None:
        version = (
            GPT_VERSION if DEPLOYMENTS.get(deployment, "").startswith("gpt") else DALLE_VERSION
        )
    body.setdefault("prompt", "An avocado armchair")
    return http.post(azure_url(server, deployment, version), json=body, timeout=TIMEOUT)


def async_submit_url(server: EmulatorServer) -> str:
    """The asynchronous (DALL-E 2) submit route, which the same gateway guards."""
    return f"{server.url}openai/images/generations:submit?api-version=2023-06-01-preview"


def openai_url(server: EmulatorServer) -> str:
    return f"{server.url}v1/images/generations"


def openai_generate(
    server: EmulatorServer, http: requests.Session, **body: object
) -> requests.Response:
    body.setdefault("prompt", "An avocado armchair")
    return http.post(openai_url(server), json=body, timeout=TIMEOUT)


def ok_json(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def decoded(b64_json: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def generate_count(server: EmulatorServer) -> int:
    return server.request_counts()["generate"]


# --- Azure deployment route: gpt-image ------------------------------------------------


def test_azure_gpt_image_returns_a_png_of_the_requested_size(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, size="1536x1024"))

    image = decoded(body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("PNG", (1536, 1024))


def test_azure_gpt_image_auto_size_draws_1024_square(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, size="auto"))

    assert decoded(body["data"][0]["b64_json"]).size == (1024, 1024)


def test_azure_gpt_image_defaults_to_an_opaque_png(emulator, azure):
    body = ok_json(azure_generate(emulator, azure))

    image = decoded(body["data"][0]["b64_json"])
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (1024, 1024))


def test_azure_gpt_image_jpeg_output_is_a_jpeg(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, output_format="jpeg", size="1024x1536"))

    image = decoded(body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("JPEG", (1024, 1536))


def test_azure_output_compression_changes_the_jpeg_bytes(emulator, azure):
    full, low = (
        ok_json(azure_generate(emulator, azure, output_format="jpeg", output_compression=value))
        for value in (100, 10)
    )

    full_bytes = base64.b64decode(full["data"][0]["b64_json"])
    low_bytes = base64.b64decode(low["data"][0]["b64_json"])
    assert len(low_bytes) < len(full_bytes)


def test_azure_transparent_background_is_a_png_with_transparent_pixels(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, background="transparent"))

    image = decoded(body["data"][0]["b64_json"])
    assert (image.format, image.mode) == ("PNG", "RGBA")
    assert image.getchannel("A").getextrema() == (0, 255)


def test_azure_gpt_image_items_are_base64_only_without_annotations(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, n=2))

    assert set(body) == {"created", "data", "usage"}
    assert isinstance(body["created"], int)
    assert [set(item) for item in body["data"]] == [{"b64_json"}, {"b64_json"}]


def test_azure_gpt_image_usage_totals_are_consistent(emulator, azure):
    prompt = "A lighthouse at dusk, oil on canvas"
    usage = ok_json(azure_generate(emulator, azure, prompt=prompt, n=2, quality="high"))["usage"]

    text_tokens = math.ceil(len(prompt) / 4)
    assert usage == {
        "input_tokens": text_tokens,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
        "output_tokens": 2 * 4160,
        "total_tokens": text_tokens + 2 * 4160,
    }


def test_azure_gpt_image_usage_counts_auto_quality_as_medium(emulator, azure):
    usage = ok_json(azure_generate(emulator, azure))["usage"]

    assert usage["output_tokens"] == 1056


def test_azure_gpt_image_usage_grows_with_image_size(emulator, azure):
    square, wide = (
        ok_json(azure_generate(emulator, azure, size=size, quality="low"))["usage"]
        for size in ("1024x1024", "1536x1024")
    )

    assert square["output_tokens"] == 272
    assert wide["output_tokens"] > 1.4 * square["output_tokens"]


def test_azure_deployment_decides_the_model_not_the_body(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, "gpt-image-1", model="dall-e-3"))

    assert "usage" in body
    assert set(body["data"][0]) == {"b64_json"}


def test_azure_gpt_image_1_mini_deployment_generates(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, "mini", quality="low"))

    assert body["usage"]["output_tokens"] == 272


def test_azure_gpt_image_accepts_every_valid_field(emulator, azure):
    response = azure_generate(
        emulator,
        azure,
        prompt="x" * 32000,
        n=3,
        size="1024x1536",
        quality="low",
        background="opaque",
        output_format="JPEG",
        output_compression=0,
        moderation="low",
        partial_images=0,
        stream=False,
        user="someone",
        model="gpt-image-1",
        unknown_field="ignored",
    )

    body = ok_json(response)
    assert len(body["data"]) == 3
    assert decoded(body["data"][2]["b64_json"]).format == "JPEG"


def test_azure_success_carries_request_id_and_remaining_requests(emulator, azure):
    response = azure_generate(emulator, azure)

    assert response.status_code == 200
    assert response.headers["apim-request-id"]
    assert int(response.headers["x-ratelimit-remaining-requests"]) >= 0


# --- Azure deployment route: DALL-E ---------------------------------------------------


def test_azure_dall_e_3_url_downloads_a_png_of_the_requested_size(emulator, azure, anonymous):
    body = ok_json(azure_generate(emulator, azure, "dall-e-3", size="1792x1024"))

    url = body["data"][0]["url"]
    assert url.startswith(f"{emulator.url}blobs/private/images/")
    download = anonymous.get(url, timeout=TIMEOUT)
    assert download.status_code == 200
    image = Image.open(io.BytesIO(download.content))
    assert (image.format, image.size) == ("PNG", (1792, 1024))


def test_azure_dall_e_3_url_is_signed(emulator, azure, anonymous):
    url = ok_json(azure_generate(emulator, azure, "dall-e-3"))["data"][0]["url"]

    response = anonymous.get(url.split("?")[0], timeout=TIMEOUT)

    assert response.status_code == 403
    assert "<Code>AuthenticationFailed</Code>" in response.text


def test_azure_dall_e_3_revises_the_prompt(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, "dall-e-3", prompt="A red fox in snow"))

    assert (
        body["data"][0]["revised_prompt"] == "A detailed, vivid illustration of a red fox in snow"
    )


def test_azure_dall_e_3_natural_style_revises_the_prompt_differently(emulator, azure):
    vivid, natural = (
        ok_json(azure_generate(emulator, azure, "dall-e-3", prompt="A red fox", style=style))
        for style in ("vivid", "natural")
    )

    natural_prompt = natural["data"][0]["revised_prompt"]
    assert natural_prompt != vivid["data"][0]["revised_prompt"]
    assert natural_prompt.endswith("a red fox")


def test_azure_dall_e_3_items_carry_both_filter_annotations(emulator, azure):
    item = ok_json(azure_generate(emulator, azure, "dall-e-3"))["data"][0]

    categories = {"sexual": SAFE, "violence": SAFE, "hate": SAFE, "self_harm": SAFE}
    assert item["content_filter_results"] == categories
    assert item["prompt_filter_results"] == {
        **categories,
        "profanity": {"detected": False, "filtered": False},
        "jailbreak": {"detected": False, "filtered": False},
        "custom_blocklists": {"filtered": False, "details": []},
    }


def test_azure_dall_e_3_b64_json_returns_the_png_inline(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, "dall-e-3", response_format="b64_json"))

    item = body["data"][0]
    assert "url" not in item
    assert "revised_prompt" in item
    image = decoded(item["b64_json"])
    assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_azure_dall_e_3_has_no_usage(emulator, azure):
    body = ok_json(azure_generate(emulator, azure, "dall-e-3", quality="hd"))

    assert set(body) == {"created", "data"}


def test_azure_dall_e_2_deployment_serves_small_sizes(emulator, azure):
    body = ok_json(
        azure_generate(
            emulator,
            azure,
            "classic",
            version="2024-05-01-preview",
            size="256x256",
            n=2,
            response_format="b64_json",
        )
    )

    assert [decoded(item["b64_json"]).size for item in body["data"]] == [(256, 256)] * 2
    assert "revised_prompt" not in body["data"][0]


def test_azure_dall_e_2_deployment_needs_2024_05_01_preview(emulator, azure):
    response = azure_generate(emulator, azure, "classic", version="2024-04-01-preview")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "api-version"


# --- Azure deployment route: validation -----------------------------------------------

AZURE_INVALID_BODIES = {
    "dalle3-missing-prompt": ("dall-e-3", {"prompt": None}, "prompt"),
    "dalle3-empty-prompt": ("dall-e-3", {"prompt": ""}, "prompt"),
    "dalle3-whitespace-prompt": ("dall-e-3", {"prompt": " \n\t "}, "prompt"),
    "dalle3-prompt-4001": ("dall-e-3", {"prompt": "a" * 4001}, "prompt"),
    "dalle3-prompt-number": ("dall-e-3", {"prompt": 42}, "prompt"),
    "dalle3-n-2": ("dall-e-3", {"n": 2}, "n"),
    "dalle3-n-0": ("dall-e-3", {"n": 0}, "n"),
    "dalle3-n-true": ("dall-e-3", {"n": True}, "n"),
    "dalle3-n-float": ("dall-e-3", {"n": 1.0}, "n"),
    "dalle3-size-gpt": ("dall-e-3", {"size": "1536x1024"}, "size"),
    "dalle3-size-dalle2": ("dall-e-3", {"size": "512x512"}, "size"),
    "dalle3-size-auto": ("dall-e-3", {"size": "auto"}, "size"),
    "dalle3-quality-high": ("dall-e-3", {"quality": "high"}, "quality"),
    "dalle3-style": ("dall-e-3", {"style": "bold"}, "style"),
    "dalle3-response-format": ("dall-e-3", {"response_format": "png"}, "response_format"),
    "dalle3-background": ("dall-e-3", {"background": "transparent"}, "background"),
    "dalle3-output-format": ("dall-e-3", {"output_format": "png"}, "output_format"),
    "dalle3-compression": ("dall-e-3", {"output_compression": 50}, "output_compression"),
    "dalle3-moderation": ("dall-e-3", {"moderation": "low"}, "moderation"),
    "dalle3-partial-images": ("dall-e-3", {"partial_images": 1}, "partial_images"),
    "dalle3-stream": ("dall-e-3", {"stream": True}, "stream"),
    "dalle3-user": ("dall-e-3", {"user": 7}, "user"),
    "gpt-prompt-32001": ("gpt-image-1", {"prompt": "a" * 32001}, "prompt"),
    "gpt-n-11": ("gpt-image-1", {"n": 11}, "n"),
    "gpt-n-string": ("gpt-image-1", {"n": "2"}, "n"),
    "gpt-n-float": ("gpt-image-1", {"n": 1.5}, "n"),
    "gpt-size-dalle3": ("gpt-image-1", {"size": "1792x1024"}, "size"),
    "gpt-size-small": ("gpt-image-1", {"size": "256x256"}, "size"),
    "gpt-quality-hd": ("gpt-image-1", {"quality": "hd"}, "quality"),
    "gpt-quality-standard": ("gpt-image-1", {"quality": "standard"}, "quality"),
    "gpt-background": ("gpt-image-1", {"background": "clear"}, "background"),
    "gpt-output-format-webp": ("gpt-image-1", {"output_format": "webp"}, "output_format"),
    "gpt-output-format-gif": ("gpt-image-1", {"output_format": "gif"}, "output_format"),
    "gpt-compression-101": ("gpt-image-1", {"output_compression": 101}, "output_compression"),
    "gpt-compression-neg": ("gpt-image-1", {"output_compression": -1}, "output_compression"),
    "gpt-compression-true": ("gpt-image-1", {"output_compression": True}, "output_compression"),
    "gpt-compression-float": ("gpt-image-1", {"output_compression": 50.0}, "output_compression"),
    "gpt-transparent-jpeg": (
        "gpt-image-1",
        {"background": "transparent", "output_format": "jpeg"},
        "background",
    ),
    "gpt-response-format": ("gpt-image-1", {"response_format": "b64_json"}, "response_format"),
    "gpt-style": ("gpt-image-1", {"style": "vivid"}, "style"),
    "gpt-stream-n-2": ("gpt-image-1", {"stream": True, "n": 2}, "n"),
    "gpt-stream-string": ("gpt-image-1", {"stream": "yes"}, "stream"),
    "gpt-partial-images-4": ("gpt-image-1", {"partial_images": 4}, "partial_images"),
    "gpt-moderation": ("gpt-image-1", {"moderation": "strict"}, "moderation"),
    "gpt-user": ("gpt-image-1", {"user": ["a"]}, "user"),
}


@pytest.mark.parametrize(
    ("deployment", "fields", "param"),
    AZURE_INVALID_BODIES.values(),
    ids=AZURE_INVALID_BODIES.keys(),
)
def test_azure_invalid_field_is_400_naming_the_field(emulator, azure, deployment, fields, param):
    body = {"prompt": "x", **fields}
    if body["prompt"] is None:
        del body["prompt"]

    response = azure.post(azure_url(emulator, deployment, GPT_VERSION), json=body, timeout=TIMEOUT)

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error) == ["code", "message", "param", "type"]
    assert (error["code"], error["param"], error["type"]) == (
        "invalid_value",
        param,
        "invalid_request_error",
    )
    assert param in error["message"]
    assert generate_count(emulator) == 0


def test_azure_webp_is_refused_with_azures_wording(emulator, azure):
    response = azure_generate(emulator, azure, output_format="webp")

    assert "WEBP images aren't supported" in response.json()["error"]["message"]


def test_azure_stream_answers_server_sent_events(emulator, azure):
    response = azure_generate(emulator, azure, stream=True, partial_images=1)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.text.startswith("event: image_generation.partial_image\ndata: {")


def test_azure_prompt_at_the_dall_e_3_limit_is_accepted(emulator, azure):
    assert azure_generate(emulator, azure, "dall-e-3", prompt="x" * 4000).status_code == 200


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"prompt": "x"', "application/json"),
        (b'["prompt", "x"]', "application/json"),
        (b'{"prompt": "x"}', "text/plain"),
    ],
    ids=["bad-json", "json-array", "not-json-content-type"],
)
def test_azure_body_that_is_not_a_json_object_is_400(emulator, azure, data, content_type):
    response = post_raw(azure, azure_url(emulator), data, content_type)

    assert response.status_code == 400
    assert response.json()["error"]["param"] is None
    assert generate_count(emulator) == 0


def test_azure_body_over_1_mib_is_413(emulator, azure):
    response = post_raw(azure, azure_url(emulator), OVER_1_MIB)

    assert response.status_code == 413
    assert generate_count(emulator) == 0


# --- Azure deployment route: auth, deployments, api-versions --------------------------


# Azure's gateway signs in the same way on the deployment route and the asynchronous route.
AZURE_ROUTES = [
    pytest.param(azure_url, 200, id="deployment"),
    pytest.param(async_submit_url, 202, id="async-submit"),
]


@pytest.mark.parametrize("headers", REFUSED_SIGN_INS)
@pytest.mark.parametrize(("route", "status"), AZURE_ROUTES)
def test_azure_without_the_right_key_is_401_with_azures_exact_body(
    emulator, route, status, headers
):
    assert_access_denied(post_signed_in(route(emulator), headers))
    assert set(emulator.request_counts().values()) == {0}


@pytest.mark.parametrize("headers", accepted_sign_ins(API_KEY))
@pytest.mark.parametrize(("route", "status"), AZURE_ROUTES)
def test_azure_with_a_bearer_token_is_accepted(emulator, route, status, headers):
    assert post_signed_in(route(emulator), headers).status_code == status
    assert sum(emulator.request_counts().values()) == 1


def test_azure_unknown_deployment_is_404_deployment_not_found(emulator, azure):
    response = azure_generate(emulator, azure, "dalle3", version=DALLE_VERSION)

    assert response.status_code == 404
    assert response.json() == DEPLOYMENT_NOT_FOUND
    assert generate_count(emulator) == 0


@pytest.mark.parametrize(
    "version",
    [
        None,
        "",
        "2023-06-01-preview",
        "2023-10-01-preview",
        "2025-03-15-preview",
        "2026-13-01",
        "latest",
    ],
    ids=["missing", "empty", "async-only", "async-last", "unlisted-old", "bad-date", "word"],
)
def test_azure_unsupported_api_version_is_404_resource_not_found(emulator, azure, version):
    response = azure.post(
        azure_url(emulator, "dall-e-3", version), json={"prompt": "x"}, timeout=TIMEOUT
    )

    assert_resource_not_found(response)


@pytest.mark.parametrize(
    "version",
    [
        "2023-12-01-preview",
        "2024-02-01",
        "2024-06-01",
        "2024-10-21",
        "2025-04-01-preview",
        "2025-06-01",
        "2026-01-15-preview",
    ],
)
def test_azure_dall_e_3_accepts_listed_and_later_api_versions(emulator, azure, version):
    response = azure_generate(emulator, azure, "dall-e-3", version=version)

    assert response.status_code == 200


def test_azure_gpt_image_before_2025_04_01_preview_is_400_naming_api_version(emulator, azure):
    response = azure_generate(emulator, azure, "gpt-image-1", version="2025-03-01-preview")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "api-version"
    assert "api-version" in error["message"]
    assert generate_count(emulator) == 0


def test_azure_gpt_image_accepts_later_ga_versions(emulator, azure):
    assert azure_generate(emulator, azure, version="2025-06-01").status_code == 200


# --- Azure deployment route: prompt triggers ------------------------------------------


def test_azure_refuse_trigger_is_400_content_policy_violation(emulator, azure):
    response = azure_generate(emulator, azure, "dall-e-3", prompt="a cat [refuse]")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "content_policy_violation",
            "inner_error": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_results": {
                    "jailbreak": {"detected": False, "filtered": False},
                    "sexual": {"filtered": True, "severity": "high"},
                    "violence": SAFE,
                    "hate": SAFE,
                    "self_harm": SAFE,
                },
            },
            "message": SAFETY_MESSAGE,
            "type": "invalid_request_error",
        }
    }


def test_azure_refuse_legacy_trigger_is_400_content_filter(emulator, azure):
    response = azure_generate(emulator, azure, prompt="a cat [refuse-legacy]")

    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["created", "error"]
    assert isinstance(body["created"], int)
    assert body["error"] == {
        "code": "contentFilter",
        "message": "Your task failed as a result of our safety system.",
    }


def test_azure_filter_trigger_is_400_generated_image_filtered(emulator, azure):
    response = azure_generate(emulator, azure, "dall-e-3", prompt="[filter] dogs")

    assert response.status_code == 400
    body = response.json()
    assert isinstance(body["created"], int)
    assert body["error"] == {
        "code": "contentFilter",
        "message": "Generated image was filtered as a result of our safety system.",
    }


def test_azure_ratelimit_trigger_throttles_the_first_request_only(emulator, azure):
    first = azure_generate(emulator, azure, prompt="retry me [ratelimit]")
    second = azure_generate(emulator, azure, prompt="retry me [ratelimit]")

    assert (first.status_code, second.status_code) == (429, 200)
    assert generate_count(emulator) == 1


def test_azure_ratelimit_trigger_remembers_each_prompt_separately(emulator, azure):
    azure_generate(emulator, azure, prompt="one [ratelimit]")

    assert azure_generate(emulator, azure, prompt="two [ratelimit]").status_code == 429


def test_azure_429_carries_both_retry_headers_and_names_the_api_version(emulator, azure):
    response = azure_generate(emulator, azure, prompt="[ratelimit-always]")

    assert_azure_429(response, "Images_Generations_Create", GPT_VERSION)


def test_azure_ratelimit_always_trigger_never_lets_through(emulator, azure):
    statuses = [
        azure_generate(emulator, azure, prompt="[ratelimit-always]").status_code for _ in range(3)
    ]

    assert statuses == [429, 429, 429]


def test_azure_fail_trigger_is_500_internal_server_error(emulator, azure):
    response = azure_generate(emulator, azure, prompt="boom [fail]")

    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "InternalServerError", "message": SERVER_ERROR_MESSAGE}
    }


def test_azure_hang_trigger_waits_hang_seconds_then_500(emulator, azure):
    started = time.monotonic()
    response = azure_generate(emulator, azure, prompt="[hang]")

    assert time.monotonic() - started >= HANG_SECONDS
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "InternalServerError"


def test_azure_hanging_request_does_not_block_others(azure):
    # A hang far longer than any answer, so "not blocked" is not a race with a loaded machine:
    # the other request is answered while the hanging one is still waiting.
    with EmulatorServer(_config(hang_seconds=2.0)) as emulator:
        hung: list[requests.Response] = []
        hanging = threading.Thread(
            target=lambda: hung.append(
                requests.post(
                    azure_url(emulator),
                    json={"prompt": "[hang]"},
                    headers={"api-key": API_KEY},
                    timeout=TIMEOUT,
                )
            )
        )
        hanging.start()
        try:
            time.sleep(0.05)
            other = azure_generate(emulator, azure, "dall-e-3")
            still_hanging = hanging.is_alive()
        finally:
            hanging.join()

    assert other.status_code == 200
    assert still_hanging
    assert hung[0].status_code == 500


def test_azure_triggers_are_case_insensitive(emulator, azure):
    assert azure_generate(emulator, azure, prompt="a cat [REFUSE]").status_code == 400


def test_azure_trigger_answers_are_not_counted(emulator, azure):
    for prompt in ("[refuse]", "[refuse-legacy]", "[filter]", "[fail]", "[ratelimit-always]"):
        azure_generate(emulator, azure, prompt=prompt)

    assert generate_count(emulator) == 0


# --- OpenAI's route: images -----------------------------------------------------------


def test_openai_defaults_to_dall_e_2_with_a_url(emulator, openai, anonymous):
    body = ok_json(openai_generate(emulator, openai))

    item = body["data"][0]
    assert set(item) == {"url"}
    image = Image.open(io.BytesIO(anonymous.get(item["url"], timeout=TIMEOUT).content))
    assert (image.format, image.size) == ("PNG", (1024, 1024))


def test_openai_dall_e_2_b64_json_returns_n_pngs_of_the_size(emulator, openai):
    body = ok_json(
        openai_generate(emulator, openai, n=3, size="256x256", response_format="b64_json")
    )

    assert [decoded(item["b64_json"]).size for item in body["data"]] == [(256, 256)] * 3


def test_openai_dall_e_3_revises_the_prompt_without_annotations(emulator, openai):
    body = ok_json(openai_generate(emulator, openai, model="dall-e-3", prompt="A red fox"))

    assert set(body) == {"created", "data"}
    assert set(body["data"][0]) == {"revised_prompt", "url"}
    assert body["data"][0]["revised_prompt"] == "A detailed, vivid illustration of a red fox"


def test_openai_gpt_image_echoes_the_resolved_settings(emulator, openai):
    body = ok_json(openai_generate(emulator, openai, model="gpt-image-1"))

    assert {key: body[key] for key in ("background", "output_format", "quality", "size")} == {
        "background": "opaque",
        "output_format": "png",
        "quality": "medium",
        "size": "1024x1024",
    }


def test_openai_gpt_image_echoes_explicit_settings(emulator, openai):
    body = ok_json(
        openai_generate(
            emulator,
            openai,
            model="gpt-image-1",
            background="transparent",
            output_format="webp",
            quality="low",
            size="1024x1536",
        )
    )

    assert {key: body[key] for key in ("background", "output_format", "quality", "size")} == {
        "background": "transparent",
        "output_format": "webp",
        "quality": "low",
        "size": "1024x1536",
    }


def test_openai_gpt_image_is_base64_with_usage_and_no_annotations(emulator, openai):
    body = ok_json(openai_generate(emulator, openai, model="gpt-image-1", n=2, quality="high"))

    assert [set(item) for item in body["data"]] == [{"b64_json"}, {"b64_json"}]
    usage = body["usage"]
    assert usage["output_tokens"] == 2 * 4160
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens"] == usage["input_tokens_details"]["text_tokens"]


def test_openai_webp_output_is_a_webp_image(emulator, openai):
    body = ok_json(openai_generate(emulator, openai, model="gpt-image-1", output_format="webp"))

    image = decoded(body["data"][0]["b64_json"])
    assert (image.format, image.size) == ("WEBP", (1024, 1024))


def test_openai_transparent_webp_has_transparent_pixels(emulator, openai):
    body = ok_json(
        openai_generate(
            emulator, openai, model="gpt-image-1", output_format="webp", background="transparent"
        )
    )

    image = decoded(body["data"][0]["b64_json"])
    assert image.mode == "RGBA"
    assert image.getchannel("A").getextrema()[0] == 0


def test_openai_jpeg_output_compression_changes_the_bytes(emulator, openai):
    full, low = (
        ok_json(
            openai_generate(
                emulator,
                openai,
                model="gpt-image-1",
                output_format="jpeg",
                output_compression=value,
            )
        )
        for value in (100, 5)
    )

    assert decoded(low["data"][0]["b64_json"]).format == "JPEG"
    assert len(low["data"][0]["b64_json"]) < len(full["data"][0]["b64_json"])


def test_openai_gpt_only_field_without_model_means_gpt_image_1(emulator, openai):
    body = ok_json(openai_generate(emulator, openai, background="opaque"))

    assert "usage" in body
    assert set(body["data"][0]) == {"b64_json"}


@pytest.mark.parametrize("model", ["gpt-image-1-mini", "gpt-image-1.5"])
def test_openai_accepts_the_newer_gpt_image_models(emulator, openai, model):
    assert "usage" in ok_json(openai_generate(emulator, openai, model=model, moderation="low"))


def test_openai_route_has_request_id_but_no_azure_headers(emulator, openai):
    response = openai_generate(emulator, openai, response_format="b64_json", size="256x256")

    assert response.headers["x-request-id"].startswith("req_")
    assert "apim-request-id" not in response.headers


# --- OpenAI's route: validation -------------------------------------------------------

OPENAI_INVALID_BODIES = {
    "missing-prompt": ({"prompt": None}, "prompt", "invalid_value"),
    "dalle2-prompt-1001": ({"prompt": "a" * 1001}, "prompt", "invalid_value"),
    "dalle2-n-11": ({"n": 11}, "n", "invalid_value"),
    "dalle2-n-true": ({"n": True}, "n", "invalid_value"),
    "dalle2-size": ({"size": "1792x1024"}, "size", "invalid_value"),
    "dalle2-quality": ({"quality": "hd"}, "quality", "invalid_value"),
    "dalle2-style": ({"style": "vivid"}, "style", "invalid_value"),
    "dalle2-response-format": ({"response_format": "jpeg"}, "response_format", "invalid_value"),
    "dalle3-n-2": ({"model": "dall-e-3", "n": 2}, "n", "invalid_value"),
    "dalle3-background": (
        {"model": "dall-e-3", "background": "opaque"},
        "background",
        "invalid_value",
    ),
    "dalle3-prompt-4001": ({"model": "dall-e-3", "prompt": "a" * 4001}, "prompt", "invalid_value"),
    "unknown-model": ({"model": "dall-e-4"}, "model", "invalid_value"),
    "model-not-string": ({"model": 3}, "model", "invalid_value"),
    "unknown-field": ({"colour": "red"}, "colour", "unknown_parameter"),
    "gpt-response-format": (
        {"model": "gpt-image-1", "response_format": "url"},
        "response_format",
        "unknown_parameter",
    ),
    "gpt-output-format": (
        {"model": "gpt-image-1", "output_format": "gif"},
        "output_format",
        "invalid_value",
    ),
    "gpt-transparent-jpeg": (
        {"model": "gpt-image-1", "background": "transparent", "output_format": "jpeg"},
        "background",
        "invalid_value",
    ),
    "gpt-compression": (
        {"model": "gpt-image-1", "output_compression": 200},
        "output_compression",
        "invalid_value",
    ),
    "gpt-moderation": (
        {"model": "gpt-image-1", "moderation": "off"},
        "moderation",
        "invalid_value",
    ),
    "gpt-size": ({"model": "gpt-image-1", "size": "512x512"}, "size", "invalid_value"),
}


@pytest.mark.parametrize(
    ("fields", "param", "code"), OPENAI_INVALID_BODIES.values(), ids=OPENAI_INVALID_BODIES.keys()
)
def test_openai_invalid_field_is_400_naming_the_field(emulator, openai, fields, param, code):
    body = {"prompt": "x", **fields}
    if body["prompt"] is None:
        del body["prompt"]

    response = openai.post(openai_url(emulator), json=body, timeout=TIMEOUT)

    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error) == ["message", "type", "param", "code"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert param in error["message"]
    assert generate_count(emulator) == 0


def test_openai_dall_e_3_invalid_size_is_exactly_invalid_size(emulator, openai):
    response = openai_generate(emulator, openai, model="dall-e-3", size="512x512")

    assert response.status_code == 400
    assert response.text == (
        '{"error":{"code":"invalid_size","message":"The size is not supported by this model.",'
        '"param":null,"type":"invalid_request_error"}}'
    )


def test_openai_unparsable_body_is_400_without_param(emulator, openai):
    response = post_raw(openai, openai_url(emulator), b'{"prompt": ')

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (None, None)
    assert "JSON" in error["message"]


def test_openai_body_over_1_mib_is_413(emulator, openai):
    response = post_raw(openai, openai_url(emulator), OVER_1_MIB)

    assert response.status_code == 413
    assert generate_count(emulator) == 0


# --- OpenAI's route: authentication and routes ----------------------------------------


def test_openai_missing_key_is_401_without_a_code(emulator, anonymous):
    response = anonymous.post(openai_url(emulator), json={"prompt": "x"}, timeout=TIMEOUT)

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"].startswith("You didn't provide an API key.")
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        None,
    )


def test_openai_wrong_key_is_401_with_the_key_masked(emulator, anonymous):
    wrong_key = "sk-proj-this-is-the-wrong-key-9f3c"

    response = anonymous.post(
        openai_url(emulator),
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {wrong_key}"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": "Incorrect API key provided: sk-...9f3c. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert wrong_key not in response.text
    assert "wrong-key" not in response.text


def test_openai_short_wrong_key_is_not_echoed_at_all(emulator, anonymous):
    response = anonymous.post(
        openai_url(emulator),
        json={"prompt": "x"},
        headers={"Authorization": "Bearer abc123"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 401
    assert "abc123" not in response.text
    assert "c123" not in response.text


def test_openai_route_ignores_the_azure_api_key_header(emulator, anonymous):
    response = anonymous.post(
        openai_url(emulator), json={"prompt": "x"}, headers={"api-key": API_KEY}, timeout=TIMEOUT
    )

    assert response.status_code == 401


def test_openai_route_refuses_the_azure_key_when_an_openai_key_is_set(emulator, anonymous):
    response = anonymous.post(
        openai_url(emulator),
        json={"prompt": "x"},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_openai_route_takes_the_azure_key_when_no_openai_key_is_set(anonymous):
    with EmulatorServer(_config(openai_api_key=None)) as server:
        response = anonymous.post(
            openai_url(server),
            json={"prompt": "x", "size": "256x256", "response_format": "b64_json"},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=TIMEOUT,
        )

    assert response.status_code == 200


def test_openai_unknown_url_is_404_invalid_url(emulator, openai):
    response = openai.post(f"{emulator.url}v1/images/variations", json={}, timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/images/variations)"


# --- OpenAI's route: prompt triggers --------------------------------------------------

OPENAI_POLICY_VIOLATION = {
    "error": {
        "code": "content_policy_violation",
        "message": SAFETY_MESSAGE,
        "param": None,
        "type": "invalid_request_error",
    }
}


@pytest.mark.parametrize("trigger", ["[refuse]", "[refuse-legacy]", "[filter]"])
def test_openai_refusals_are_400_content_policy_violation(emulator, openai, trigger):
    response = openai_generate(emulator, openai, prompt=f"a cat {trigger}")

    assert response.status_code == 400
    assert response.json() == OPENAI_POLICY_VIOLATION


def test_openai_ratelimit_trigger_throttles_the_first_request_only(emulator, openai):
    body = {"prompt": "again [ratelimit]", "size": "256x256", "response_format": "b64_json"}
    first = openai.post(openai_url(emulator), json=body, timeout=TIMEOUT)
    second = openai.post(openai_url(emulator), json=body, timeout=TIMEOUT)

    assert (first.status_code, second.status_code) == (429, 200)


def test_openai_429_carries_openai_rate_limit_headers_and_body(emulator, openai):
    response = openai_generate(emulator, openai, prompt="[ratelimit-always]")

    assert response.status_code == 429
    assert {
        name: response.headers[name]
        for name in (
            "retry-after",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        )
    } == {
        "retry-after": "1",
        "x-ratelimit-limit-requests": "5",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
    }
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "requests",
        None,
        "rate_limit_exceeded",
    )
    assert error["message"].startswith(
        "Rate limit exceeded for images per minute in organization org-emulator. "
        "Limit: 5/1min. Current: 6/1min."
    )


def test_openai_fail_trigger_is_500_server_error(emulator, openai):
    response = openai_generate(emulator, openai, prompt="[fail]")

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": SERVER_ERROR_MESSAGE,
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def test_openai_hang_trigger_waits_hang_seconds_then_500(emulator, openai):
    started = time.monotonic()
    response = openai_generate(emulator, openai, prompt="[HANG]")

    assert time.monotonic() - started >= HANG_SECONDS
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"


# --- latency and the request log ------------------------------------------------------


def test_azure_generation_takes_at_least_the_latency(azure):
    with EmulatorServer(_config(latency=0.3)) as server:
        started = time.monotonic()
        response = azure_generate(server, azure, "dall-e-3")
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_openai_generation_takes_at_least_the_latency(openai):
    with EmulatorServer(_config(latency=0.3)) as server:
        started = time.monotonic()
        response = openai_generate(server, openai)
        elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_request_log_counts_answered_generations_from_both_routes(
    emulator, azure, openai, anonymous
):
    azure_generate(emulator, azure, "dall-e-3")
    openai_generate(emulator, openai)
    azure_generate(emulator, azure, n=0)
    openai_generate(emulator, openai, prompt="[fail]")

    log = anonymous.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()

    expected = {"submit": 0, "poll": 0, "delete": 0, "blob": 0, "generate": 2}
    assert log["counts"] == expected
    assert emulator.request_counts() == expected
    assert [entry["status"] for entry in log["requests"]] == [200, 200, 400, 500]


def test_hanging_request_is_listed_while_it_hangs(emulator, anonymous):
    hung: list[requests.Response] = []
    hanging = threading.Thread(
        target=lambda: hung.append(
            requests.post(
                openai_url(emulator),
                json={"prompt": "[hang]"},
                headers={"Authorization": f"Bearer {OPENAI_KEY}"},
                timeout=TIMEOUT,
            )
        )
    )
    hanging.start()
    try:
        deadline = time.monotonic() + HANG_SECONDS / 2
        listed: list[dict] = []
        while not listed and time.monotonic() < deadline:
            log = anonymous.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()
            listed = log["requests"]
    finally:
        hanging.join()
    answered = anonymous.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()

    assert [(entry["path"], entry["status"]) for entry in listed] == [
        ("/v1/images/generations", None)
    ]
    assert answered["requests"][0]["status"] == hung[0].status_code == 500


def test_synchronous_url_is_not_an_async_operation(emulator, azure):
    url = ok_json(azure_generate(emulator, azure, "dall-e-3"))["data"][0]["url"]
    operation_id = url.split("/")[-2]

    response = azure.get(
        f"{emulator.url}openai/operations/images/{operation_id}?api-version=2023-06-01-preview",
        timeout=TIMEOUT,
    )

    assert_resource_not_found(response)


# --- configuration and the command line -----------------------------------------------


def test_command_line_accepts_deployment_name_equals_model(azure):
    args = parse_args(
        ["--api-key", API_KEY, "--latency", "0", "--deployment", "art=gpt-image-1-mini"]
    )
    config = config_from_args(args)

    with EmulatorServer(config) as server:
        response = azure_generate(server, azure, "art", version=GPT_VERSION, quality="low")

    assert config.deployments == {"art": "gpt-image-1-mini"}
    assert response.json()["usage"]["output_tokens"] == 272


def test_command_line_deployments_are_repeatable(azure):
    args = parse_args(
        [
            "--api-key",
            API_KEY,
            "--deployment",
            "one=dall-e-3",
            "--deployment",
            "two=gpt-image-1.5",
        ]
    )

    assert config_from_args(args).deployments == {"one": "dall-e-3", "two": "gpt-image-1.5"}


def test_command_line_defaults_to_gpt_image_2_then_the_older_standard_deployments():
    config = config_from_args(parse_args(["--api-key", API_KEY]))

    assert list(config.deployments.items()) == [
        ("gpt-image-2", "gpt-image-2"),
        ("gpt-image-1", "gpt-image-1"),
        ("dall-e-3", "dall-e-3"),
    ]
    assert (config.openai_api_key, config.hang_seconds) == (None, 30.0)
    assert config.rate_limit_retry_seconds == 1.0


def test_command_line_sets_openai_key_and_hang_seconds():
    args = parse_args(
        ["--api-key", API_KEY, "--openai-api-key", OPENAI_KEY, "--hang-seconds", "2.5"]
    )
    config = config_from_args(args)

    assert (config.openai_key, config.hang_seconds) == (OPENAI_KEY, 2.5)


def test_command_line_rejects_a_deployment_without_a_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--api-key", API_KEY, "--deployment", "art"])

    assert exit_info.value.code == 2
    assert "NAME=MODEL" in capsys.readouterr().err


def test_command_line_rejects_an_unknown_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--api-key", API_KEY, "--deployment", "art=dall-e-4"])

    assert exit_info.value.code == 2
    assert "unknown model 'dall-e-4'" in capsys.readouterr().err


def test_config_rejects_an_unknown_model():
    with pytest.raises(ValueError, match="dall-e-4"):
        EmulatorConfig(api_key=API_KEY, deployments={"art": "dall-e-4"})


def test_config_openai_key_defaults_to_the_api_key():
    assert EmulatorConfig(api_key=API_KEY).openai_key == API_KEY


def test_command_line_sets_the_rate_limit_wait():
    args = parse_args(["--api-key", API_KEY, "--rate-limit-retry-seconds", "0.25"])

    assert config_from_args(args).rate_limit_retry_seconds == 0.25


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (0.0005, ValueError), (math.inf, ValueError), (True, TypeError)],
)
def test_config_rejects_a_rate_limit_wait_that_headers_cannot_say_exactly(value, error):
    with pytest.raises(error, match="rate_limit_retry_seconds"):
        EmulatorConfig(api_key=API_KEY, rate_limit_retry_seconds=value)


@pytest.mark.parametrize(
    ("seconds", "retry_after", "retry_after_ms"),
    [(2.25, "2.25", "2250"), (0, "0", "0"), (3, "3", "3000")],
)
def test_429_retry_headers_say_the_configured_wait_alike(seconds, retry_after, retry_after_ms):
    with EmulatorServer(_config(rate_limit_retry_seconds=seconds)) as server:
        response = requests.post(
            azure_url(server),
            json={"prompt": "[ratelimit-always]"},
            headers={"api-key": API_KEY},
            timeout=TIMEOUT,
        )

    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == (
        retry_after,
        retry_after_ms,
    )
    assert f"Please retry after {retry_after} second" in response.json()["error"]["message"]


def test_request_log_lists_a_generations_body_fields_without_the_prompt(emulator, openai):
    openai_generate(emulator, openai, model="gpt-image-1", prompt="a fox", user="u-1", n=2)

    (entry,) = requests.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()["requests"]
    assert entry["fields"] == {"model": "gpt-image-1", "user": "u-1", "n": 2}


def test_request_log_has_no_fields_for_other_requests(emulator, anonymous):
    anonymous.get(f"{emulator.url}openai/operations/images/nope", timeout=TIMEOUT)

    (entry,) = requests.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()["requests"]
    assert entry["fields"] is None
