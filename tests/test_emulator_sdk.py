"""The emulator driven by an independent client: the official `openai` SDK, over loopback.

`AzureOpenAI` on Azure's deployment route, the plain `OpenAI` client on Azure's v1 route
(`/openai/v1/`, deployment name in `model`) and on OpenAI's own route (`/v1/`). Where the SDK
and the emulator disagree, the emulator is wrong: these tests pin what a real client parses
(exception classes, `.code`, `.param`, retry headers, `x-should-retry`). Clients in tests that
expect an error get `max_retries=0` unless the test is about retrying; the emulator asks for
0.1 s between retries, so those stay fast too.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from collections.abc import Iterator

import openai
import pytest
import requests
from PIL import Image

from app.emulator import EmulatorConfig, EmulatorServer
from tests.emulator_client import reset
from tests.helpers import EMULATOR_KEY

API_KEY = "azure-sdk-test-key-0123456789"
OPENAI_KEY = "sk-emulator-sdk-test-key-wxyz"
API_VERSION = "2025-04-01-preview"
RETRY_SECONDS = 0.1
TIMEOUT = 10  # seconds for every SDK call, so a hung emulator fails the test instead
DEPLOYMENTS = {
    "classic": "dall-e-2",
    "dall-e-3": "dall-e-3",
    "gpt-image-1": "gpt-image-1",
    "gpt-image-2": "gpt-image-2",
    "studio": "gpt-image-2",
    "sunburst": "gpt-image-2.5-sunburst",
    "flare-2.6": "gpt-image-2.6-flare",
}
# (deployment, extra fields, size of the image that comes back) for every model family.
FAMILIES = [
    pytest.param("classic", {"size": "256x256", "response_format": "b64_json"}, (256, 256)),
    pytest.param("dall-e-3", {"size": "1792x1024", "response_format": "b64_json"}, (1792, 1024)),
    pytest.param("gpt-image-1", {"size": "1024x1536"}, (1024, 1536)),
    pytest.param("gpt-image-2", {"size": "1280x720"}, (1280, 720)),
    pytest.param("sunburst", {"size": "1024x1024", "quality": "xhigh"}, (1024, 1024)),
]
# (size, words the 400 must contain): one per gpt-image-2 size rule.
BROKEN_SIZES = [
    pytest.param("1000x1000", "multiples of 16", id="not-multiple-of-16"),
    pytest.param("4096x1536", "long side may be at most 3840", id="long-side"),
    pytest.param("3840x1024", "at most 3 times the short side", id="ratio"),
    pytest.param("768x768", "at least 655,360 pixels", id="min-pixels"),
    pytest.param("3840x2176", "at most 8,294,400 pixels", id="max-pixels"),
    pytest.param("big", "'auto' or WIDTHxHEIGHT", id="not-a-size"),
]
# Sizes at the edges of the rules, all valid.
VALID_SIZES = [
    pytest.param("auto", (1024, 1024), id="auto"),
    pytest.param("1280x720", (1280, 720), id="custom"),
    pytest.param("1024x640", (1024, 640), id="min-pixels-exactly"),
    pytest.param("3840x2160", (3840, 2160), id="max-pixels-and-long-side-exactly"),
    pytest.param("2304x768", (2304, 768), id="ratio-3-exactly"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        api_key=API_KEY,
        latency=0.0,
        openai_api_key=OPENAI_KEY,
        deployments=dict(DEPLOYMENTS),
        rate_limit_retry_seconds=RETRY_SECONDS,
    )
    with EmulatorServer(config) as running:
        yield running


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    """The module's emulator with its request log cleared for this test."""
    return reset(server)


def azure_client(
    server: EmulatorServer, *, api_key: str = API_KEY, max_retries: int = 0
) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.url,
        api_key=api_key,
        api_version=API_VERSION,
        max_retries=max_retries,
        timeout=TIMEOUT,
    )


def azure_v1_client(
    server: EmulatorServer, *, api_key: str = API_KEY, max_retries: int = 0, **options: object
) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}openai/v1/",
        api_key=api_key,
        max_retries=max_retries,
        timeout=TIMEOUT,
        **options,
    )


def openai_client(
    server: EmulatorServer, *, api_key: str = OPENAI_KEY, max_retries: int = 0
) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}v1/", api_key=api_key, max_retries=max_retries, timeout=TIMEOUT
    )


# Both Azure routes take a deployment name in `model`; the SDK builds the deployment route's
# path from it (azure-image-apis.md §4.5).
AZURE_ROUTES = {"deployment": azure_client, "v1": azure_v1_client}


@pytest.fixture(params=sorted(AZURE_ROUTES))
def azure(request: pytest.FixtureRequest, emulator: EmulatorServer) -> openai.OpenAI:
    """A client on one of Azure's two routes (each test runs on both)."""
    return AZURE_ROUTES[request.param](emulator)


def image_of(b64_json: str | None) -> Image.Image:
    assert b64_json, "no image in the answer"
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def unique(prompt: str) -> str:
    """`prompt` made unique, for "first time only" triggers the emulator remembers."""
    return f"{prompt} {uuid.uuid4().hex[:8]}"


def logged_generations(server: EmulatorServer) -> list[dict]:
    entries = requests.get(f"{server.url}_emulator/requests", timeout=TIMEOUT).json()["requests"]
    return [entry for entry in entries if entry["path"].endswith("/images/generations")]


# --- every model family, on both Azure routes ------------------------------------------


@pytest.mark.parametrize(("deployment", "fields", "expected_size"), FAMILIES)
def test_every_model_family_generates_an_image_of_the_requested_size(
    azure, deployment, fields, expected_size
):
    response = azure.images.generate(model=deployment, prompt="a lighthouse at dusk", **fields)

    assert len(response.data) == 1
    assert image_of(response.data[0].b64_json).size == expected_size


def test_dall_e_2_deployment_answers_a_url_that_downloads(azure):
    response = azure.images.generate(model="classic", prompt="a red kite", size="512x512")

    downloaded = requests.get(response.data[0].url, timeout=TIMEOUT)
    assert downloaded.status_code == 200
    assert Image.open(io.BytesIO(downloaded.content)).size == (512, 512)


def test_dall_e_3_revises_the_prompt(azure):
    response = azure.images.generate(model="dall-e-3", prompt="A fox", response_format="b64_json")

    assert response.data[0].revised_prompt
    assert response.data[0].revised_prompt != "A fox"


def test_gpt_image_2_reports_token_usage_that_grows_with_the_size(azure):
    small = azure.images.generate(model="gpt-image-2", prompt="a fox", size="1024x1024")
    large = azure.images.generate(model="gpt-image-2", prompt="a fox", size="2048x2048")

    assert small.usage is not None and large.usage is not None
    assert large.usage.output_tokens > small.usage.output_tokens
    assert large.usage.total_tokens == large.usage.input_tokens + large.usage.output_tokens


def test_xhigh_quality_costs_more_tokens_than_high(azure):
    high = azure.images.generate(model="sunburst", prompt="a fox", quality="high")
    xhigh = azure.images.generate(model="sunburst", prompt="a fox", quality="xhigh")

    assert xhigh.usage.output_tokens > high.usage.output_tokens


def test_default_demo_deployments_offer_gpt_image_2_first(emulator_server):
    """The conftest emulator uses the default deployments, as demo mode does."""
    client = openai.AzureOpenAI(
        azure_endpoint=emulator_server.url,
        api_key=EMULATOR_KEY,
        api_version=API_VERSION,
        max_retries=0,
        timeout=TIMEOUT,
    )

    assert list(emulator_server.config.deployments)[0] == "gpt-image-2"
    response = client.images.generate(model="gpt-image-2", prompt="a fox", size="1536x864")
    assert image_of(response.data[0].b64_json).size == (1536, 864)


# --- gpt-image-2 sizes ------------------------------------------------------------------


@pytest.mark.parametrize(("size", "expected"), VALID_SIZES)
def test_gpt_image_2_accepts_sizes_within_every_rule(azure, size, expected):
    response = azure.images.generate(model="gpt-image-2", prompt="a fox", size=size)

    assert image_of(response.data[0].b64_json).size == expected


@pytest.mark.parametrize(("size", "rule"), BROKEN_SIZES)
def test_gpt_image_2_size_breaking_a_rule_is_400_naming_size_and_the_rule(azure, size, rule):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="a fox", size=size)

    assert (caught.value.code, caught.value.param) == ("invalid_value", "size")
    assert rule in caught.value.message


@pytest.mark.parametrize(("size", "rule"), BROKEN_SIZES)
def test_openai_route_names_the_broken_size_rule_too(emulator, size, rule):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(emulator).images.generate(model="gpt-image-2", prompt="a fox", size=size)

    assert (caught.value.code, caught.value.param, caught.value.type) == (
        "invalid_value",
        "size",
        "invalid_request_error",
    )
    assert rule in caught.value.message


def test_gpt_image_1_keeps_its_three_sizes(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-1", prompt="a fox", size="1280x720")

    assert caught.value.param == "size"


# --- gpt-image-2 options ----------------------------------------------------------------


def test_gpt_image_2_refuses_a_transparent_background_naming_background(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="a fox", background="transparent")

    assert caught.value.param == "background"
    assert "transparent" in caught.value.message


def test_openai_route_refuses_a_transparent_background_for_gpt_image_2(emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(emulator).images.generate(
            model="gpt-image-2", prompt="a fox", background="transparent", output_format="webp"
        )

    assert caught.value.param == "background"


def test_gpt_image_2_5_draws_a_transparent_background(azure):
    """openai-python 3.51's docstring: the 2.5 models support transparent backgrounds."""
    response = azure.images.generate(model="sunburst", prompt="a fox", background="transparent")

    image = image_of(response.data[0].b64_json)
    assert image.mode == "RGBA"
    assert image.getpixel((0, image.height // 2))[3] == 0


@pytest.mark.parametrize("quality", ["xhigh", "max"])
@pytest.mark.parametrize("deployment", ["gpt-image-2", "flare-2.6"])
def test_only_the_2_5_models_take_xhigh_and_max(azure, deployment, quality):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model=deployment, prompt="a fox", quality=quality)

    assert caught.value.param == "quality"


def test_azure_routes_refuse_webp_for_gpt_image_2(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="a fox", output_format="webp")

    assert caught.value.param == "output_format"


def test_openai_route_answers_gpt_image_2_webp_at_a_custom_size(emulator):
    response = openai_client(emulator).images.generate(
        model="gpt-image-2", prompt="a fox", size="1536x864", output_format="webp"
    )

    assert (response.size, response.output_format, response.quality) == (
        "1536x864",
        "webp",
        "medium",
    )
    image = image_of(response.data[0].b64_json)
    assert (image.format, image.size) == ("WEBP", (1536, 864))


def test_openai_route_echoes_the_2_5_models_xhigh_quality(emulator):
    response = openai_client(emulator).images.generate(
        model="gpt-image-2.5-flare-2026-09-08", prompt="a fox", quality="xhigh"
    )

    assert response.quality == "xhigh"


def test_gpt_image_2_takes_n_up_to_10(azure):
    response = azure.images.generate(model="gpt-image-2", prompt="a fox", n=10, quality="low")

    assert len(response.data) == 10


def test_gpt_image_2_refuses_n_above_10(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="a fox", n=11)

    assert caught.value.param == "n"


# --- moderation, safety_identifier and user ---------------------------------------------


def test_moderation_and_safety_identifier_are_accepted_and_logged(azure, emulator):
    azure.images.generate(
        model="gpt-image-2",
        prompt="a fox",
        moderation="low",
        safety_identifier="user-7f3a9c",
        user="legacy-user",
    )

    (entry,) = logged_generations(emulator)
    assert entry["status"] == 200
    assert entry["fields"]["moderation"] == "low"
    assert entry["fields"]["safety_identifier"] == "user-7f3a9c"
    assert entry["fields"]["user"] == "legacy-user"
    assert "prompt" not in entry["fields"]


def test_openai_route_accepts_moderation_and_safety_identifier(emulator):
    openai_client(emulator).images.generate(
        model="gpt-image-2", prompt="a fox", moderation="low", safety_identifier="hash-123"
    )

    (entry,) = logged_generations(emulator)
    assert (entry["status"], entry["fields"]["safety_identifier"]) == (200, "hash-123")


def test_gpt_image_1_accepts_moderation_too(azure):
    response = azure.images.generate(model="gpt-image-1", prompt="a fox", moderation="low")

    assert len(response.data) == 1


def test_unknown_moderation_value_is_400_naming_moderation(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(
            model="gpt-image-2", prompt="a fox", extra_body={"moderation": "strict"}
        )

    assert caught.value.param == "moderation"


def test_safety_identifier_longer_than_64_characters_is_400(azure):
    with pytest.raises(openai.BadRequestError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="a fox", safety_identifier="x" * 65)

    assert caught.value.param == "safety_identifier"


# --- errors: authentication, deployments, api-versions ----------------------------------


def test_unknown_deployment_is_not_found(azure):
    with pytest.raises(openai.NotFoundError) as caught:
        azure.images.generate(model="no-such-deployment", prompt="a fox")

    assert caught.value.code == "DeploymentNotFound"


@pytest.mark.parametrize("route", sorted(AZURE_ROUTES))
def test_wrong_azure_key_is_an_authentication_error(emulator, route):
    client = AZURE_ROUTES[route](emulator, api_key="not-the-key")

    with pytest.raises(openai.AuthenticationError) as caught:
        client.images.generate(model="gpt-image-2", prompt="a fox")

    assert caught.value.code == "401"


def test_wrong_openai_key_is_an_authentication_error(emulator):
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(emulator, api_key="sk-not-the-key-000000").images.generate(
            model="gpt-image-2", prompt="a fox"
        )

    assert caught.value.code == "invalid_api_key"


def test_azure_v1_route_takes_an_entra_id_token_as_bearer(emulator):
    token = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL2NvZ25pdGl2ZXNlcnZpY2VzIn0.c2ln"
    client = azure_v1_client(emulator, api_key=token)

    assert len(client.images.generate(model="gpt-image-2", prompt="a fox").data) == 1


@pytest.mark.parametrize("version", [None, "preview", "v1", "2025-04-01-preview"])
def test_azure_v1_route_takes_no_or_a_known_api_version(emulator, version):
    query = {} if version is None else {"api-version": version}
    client = azure_v1_client(emulator, default_query=query)

    assert len(client.images.generate(model="gpt-image-2", prompt="a fox").data) == 1


def test_azure_v1_route_refuses_an_unknown_api_version(emulator):
    client = azure_v1_client(emulator, default_query={"api-version": "latest"})

    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="gpt-image-2", prompt="a fox")

    assert caught.value.code == "404"


def test_azure_v1_and_openai_routes_do_not_share_keys(emulator):
    """`/openai/v1/` is Azure's (api key), `/v1/` OpenAI's (openai key): no collision."""
    with pytest.raises(openai.AuthenticationError):
        azure_v1_client(emulator, api_key=OPENAI_KEY).images.generate(
            model="gpt-image-2", prompt="a fox"
        )
    with pytest.raises(openai.AuthenticationError):
        openai_client(emulator, api_key=API_KEY).images.generate(
            model="gpt-image-2", prompt="a fox"
        )


def test_azure_v1_answers_carry_azures_headers_and_openai_answers_openais(emulator):
    azure_v1 = azure_v1_client(emulator).images.with_raw_response.generate(
        model="gpt-image-2", prompt="a fox"
    )
    own = openai_client(emulator).images.with_raw_response.generate(
        model="gpt-image-2", prompt="a fox"
    )

    assert "apim-request-id" in azure_v1.headers and "x-request-id" not in azure_v1.headers
    assert "x-request-id" in own.headers and "apim-request-id" not in own.headers


# --- rate limits and retries ------------------------------------------------------------


def test_azure_429_is_a_rate_limit_error_whose_retry_headers_agree(azure):
    with pytest.raises(openai.RateLimitError) as caught:
        azure.images.generate(model="gpt-image-2", prompt="busy [ratelimit-always]")

    headers = caught.value.response.headers
    assert caught.value.code == "429"
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("0.1", "100")
    assert "Please retry after 0.1 seconds." in caught.value.message


def test_openai_429_is_a_rate_limit_error_with_retry_after(emulator):
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(emulator).images.generate(model="gpt-image-2", prompt="[ratelimit-always]")

    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "0.1"


@pytest.mark.parametrize("route", sorted(AZURE_ROUTES))
def test_sdk_waits_retry_after_ms_then_succeeds(emulator, route):
    client = AZURE_ROUTES[route](emulator, max_retries=2)

    started = time.monotonic()
    response = client.images.generate(model="gpt-image-2", prompt=unique("[ratelimit]"))

    assert len(response.data) == 1
    assert time.monotonic() - started >= RETRY_SECONDS
    assert [entry["status"] for entry in logged_generations(emulator)] == [429, 200]


def test_sdk_gives_up_after_its_retries_on_an_endless_rate_limit(emulator):
    client = azure_client(emulator, max_retries=1)

    with pytest.raises(openai.RateLimitError):
        client.images.generate(model="gpt-image-2", prompt="[ratelimit-always]")

    assert len(logged_generations(emulator)) == 2


@pytest.mark.parametrize("make_client", [azure_client, azure_v1_client, openai_client])
def test_no_retry_trigger_stops_the_sdk_retrying(emulator, make_client):
    client = make_client(emulator, max_retries=2)

    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-2", prompt="[no-retry]")

    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(logged_generations(emulator)) == 1


def test_azure_v1_request_without_a_deployment_is_400_naming_model(emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        azure_v1_client(emulator).images.generate(prompt="a fox")

    assert caught.value.param == "model"
