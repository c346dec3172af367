"""The emulator's image edits and streamed answers, over real loopback HTTP.

Edits on the three routes (Azure's deployment route, Azure's v1 route with the deployment in
`model`, OpenAI's `/v1`): multipart input, validation naming the field in each route's error
envelope, output that is visibly drawn from the inputs (checked pixel by pixel), token usage
with input images, the request log's record of every file received; then server-sent-event
streams on generations and edits, their partial frames, and the stream faults
(`[stream-slow]`, `[stream-cut]`, `[stream-error]`). A last part drives edits and streams with
the official `openai` SDK, `OpenAI` and `AzureOpenAI`, as an independent client.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import openai
import pytest
import requests
from PIL import Image

from app.emulator import EmulatorConfig, EmulatorServer
from app.emulator.fault_responses import bomb_png
from tests.emulator_client import reset, serving
from tests.helpers import emulator_log

API_KEY = "azure-edits-test-key-0123456789"
OPENAI_KEY = "sk-emulator-edits-test-key-wxyz"
API_VERSION = "2025-04-01-preview"
LATENCY = 0.05
SLOW_SECONDS = 0.6
TIMEOUT = 10  # seconds for every HTTP call, so a hung emulator fails the test instead
# Deployment names equal to their models, so one name works in every route's `model`.
DEPLOYMENTS = {
    name: name for name in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-2", "dall-e-3")
}
ROUTES = ("azure", "v1", "openai")
# The stripes and frame edit_drawing.py paints.
MAGENTA, YELLOW = (255, 0, 200), (255, 230, 0)
# The test pictures' colours.
SKY, SEA, SAND, GRASS = (30, 110, 220), (10, 60, 120), (230, 200, 140), (40, 160, 60)
RED = (220, 20, 20)
# A 1024x768 first image: gpt-image-2 draws `size: auto` at exactly that size, so the mask
# and the output share coordinates.
WIDTH, HEIGHT = 1024, 768
# The mask's transparent rectangle, and a region far from it, the bands, frame and tiles.
MASKED = (120, 120, 420, 360)
UNTOUCHED = (620, 260, 920, 370)


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    yield from serving(
        {
            "api_key": API_KEY,
            "latency": LATENCY,
            "openai_api_key": OPENAI_KEY,
            "deployments": dict(DEPLOYMENTS),
            "slow_seconds": SLOW_SECONDS,
            "rate_limit_retry_seconds": 0.1,
        }
    )


@pytest.fixture
def emulator(server: EmulatorServer) -> EmulatorServer:
    """The module's emulator with its request log cleared for this test."""
    return reset(server)


# --- pictures ----------------------------------------------------------------------------


def encoded(picture: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, image_format)
    return buffer.getvalue()


def quadrants(size: tuple[int, int] = (WIDTH, HEIGHT)) -> Image.Image:
    """Sky over sea on the left, sand over grass on the right: where each part ends up shows
    how the picture was scaled."""
    width, height = size
    picture = Image.new("RGB", size, SKY)
    picture.paste(SEA, (0, height // 2, width // 2, height))
    picture.paste(SAND, (width // 2, 0, width, height // 2))
    picture.paste(GRASS, (width // 2, height // 2, width, height))
    return picture


def plain(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> bytes:
    return encoded(Image.new("RGB", size, colour))


def mask_png(size: tuple[int, int] = (WIDTH, HEIGHT), box: tuple = MASKED) -> bytes:
    """Opaque everywhere except the fully transparent `box`: the area to edit."""
    mask = Image.new("RGBA", size, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), box)
    return encoded(mask)


def decoded(b64_json: str) -> Image.Image:
    picture = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    picture.load()
    return picture


def share_of(picture: Image.Image, box: tuple, colours: tuple) -> float:
    """The share of `box`'s pixels within 12 of one of `colours` in every channel."""
    data = picture.convert("RGB").crop(box).tobytes()
    pixels = [data[start : start + 3] for start in range(0, len(data), 3)]
    close = sum(
        1
        for pixel in pixels
        if any(
            all(abs(a - b) <= 12 for a, b in zip(pixel, colour, strict=True)) for colour in colours
        )
    )
    return close / len(pixels)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unique(prompt: str) -> str:
    """`prompt` made unique, for the "first time only" triggers the emulator remembers."""
    return f"{prompt} {uuid.uuid4().hex[:8]}"


# --- requests ----------------------------------------------------------------------------

FIRST = encoded(quadrants())
Files = list[tuple[str, tuple[str, bytes, str | None]]]


def image_part(data: bytes = FIRST, content_type: str | None = "image/png", name: str = "image"):
    return (name, (f"{name.strip('[]')}.bin", data, content_type))


@dataclass(frozen=True)
class Route:
    """One of the three edit routes: where to post, how to authenticate, its error keys."""

    name: str
    server: EmulatorServer

    def url(self, kind: str = "edits", deployment: str = "gpt-image-2") -> str:
        if self.name == "azure":
            return (
                f"{self.server.url}openai/deployments/{deployment}/images/{kind}"
                f"?api-version={API_VERSION}"
            )
        if self.name == "v1":
            return f"{self.server.url}openai/v1/images/{kind}"
        return f"{self.server.url}v1/images/{kind}"

    @property
    def headers(self) -> dict[str, str]:
        if self.name == "openai":
            return {"Authorization": f"Bearer {OPENAI_KEY}"}
        return {"api-key": API_KEY}

    @property
    def error_keys(self) -> list[str]:
        if self.name == "openai":
            return ["message", "type", "param", "code"]
        return ["code", "message", "param", "type"]

    def edit(
        self, files: Files | None = None, model: str = "gpt-image-2", **fields: object
    ) -> requests.Response:
        """POST an edit as multipart/form-data (even without files); `model` is the deployment
        (Azure) or model (OpenAI) either way. With `stream="true"` the answer is read as it
        arrives."""
        data = {"prompt": "make the sky stormy", **fields}
        if self.name != "azure":
            data.setdefault("model", model)
        # (None, text) parts are text fields: requests then always sends multipart.
        text_parts = [(name, (None, str(value))) for name, value in data.items()]
        return requests.post(
            self.url("edits", model),
            headers=self.headers,
            files=text_parts + ([image_part()] if files is None else files),
            timeout=TIMEOUT,
            stream=str(fields.get("stream")).lower() == "true",
        )

    def generate(self, model: str = "gpt-image-2", **body: object) -> requests.Response:
        """POST a generation as JSON; with `stream=True` the answer is read as it arrives."""
        body = {"prompt": "a lighthouse at dusk", **body}
        if self.name != "azure":
            body.setdefault("model", model)
        return requests.post(
            self.url("generations", model),
            headers=self.headers,
            json=body,
            timeout=TIMEOUT,
            stream=body.get("stream") is True,
        )


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest, emulator: EmulatorServer) -> Route:
    return Route(request.param, emulator)


@pytest.fixture
def azure(emulator: EmulatorServer) -> Route:
    return Route("azure", emulator)


def ok_json(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def generate_count(server: EmulatorServer) -> int:
    return server.request_counts()["generate"]


def assert_invalid(route: Route, response: requests.Response, param: str) -> dict:
    """`response` is the route's 400 envelope naming `param`, and nothing was made."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert list(error) == route.error_keys
    assert (error["param"], error["type"]) == (param, "invalid_request_error")
    assert generate_count(route.server) == 0
    return error


# --- edits: the happy path on each route -------------------------------------------------


def test_edit_answers_the_generations_body_shape_with_an_image(route):
    generated = ok_json(route.generate(size="1024x1024"))

    body = ok_json(route.edit(size="1024x1024"))

    assert list(body) == list(generated)
    assert list(body["data"][0]) == ["b64_json"]
    assert decoded(body["data"][0]["b64_json"]).size == (1024, 1024)
    assert generate_count(route.server) == 2


def test_openai_style_routes_echo_the_resolved_settings(emulator):
    body = ok_json(Route("openai", emulator).edit(quality="high", output_format="webp"))

    assert (body["background"], body["output_format"], body["quality"], body["size"]) == (
        "opaque",
        "webp",
        "high",
        f"{WIDTH}x{HEIGHT}",
    )
    assert decoded(body["data"][0]["b64_json"]).format == "WEBP"


def test_edit_with_auto_size_draws_the_first_images_size_on_gpt_image_2(route):
    body = ok_json(route.edit(size="auto"))

    assert decoded(body["data"][0]["b64_json"]).size == (WIDTH, HEIGHT)


def test_edit_with_auto_size_picks_the_nearest_fixed_size_on_gpt_image_1(azure):
    body = ok_json(azure.edit(model="gpt-image-1"))

    assert decoded(body["data"][0]["b64_json"]).size == (1536, 1024)


def test_edit_fits_an_oversized_first_image_into_gpt_image_2s_limits(azure):
    huge = encoded(Image.new("RGB", (4000, 3000), SKY))

    body = ok_json(azure.edit(files=[image_part(huge)], output_format="jpeg"))

    width, height = decoded(body["data"][0]["b64_json"]).size
    assert width * height <= 8_294_400 and width % 16 == height % 16 == 0
    assert abs(width / height - 4 / 3) < 0.02


def test_edit_takes_n_images(route):
    body = ok_json(route.edit(n=3, size="1024x1024"))

    assert len(body["data"]) == 3
    assert len({item["b64_json"] for item in body["data"]}) == 3


def test_edit_accepts_jpeg_and_webp_inputs(azure):
    files = [
        image_part(encoded(quadrants(), "JPEG"), "image/jpeg"),
        image_part(encoded(Image.new("RGB", (80, 80), RED), "WEBP"), "image/webp"),
    ]

    assert azure.edit(files=files).status_code == 200


def test_edit_takes_image_and_image_brackets_parts_together(route):
    files = [image_part(name="image[]"), image_part(plain(RED), name="image[]")]

    body = ok_json(route.edit(files=files))

    assert route.edit(files=[image_part(), image_part(plain(RED))]).status_code == 200
    assert decoded(body["data"][0]["b64_json"]).size == (WIDTH, HEIGHT)


def test_edit_usage_counts_the_input_images(route):
    one = ok_json(route.edit(size="1024x1024"))["usage"]
    three = ok_json(
        route.edit(files=[image_part(), image_part(plain(RED)), image_part()], size="1024x1024")
    )["usage"]

    assert one["input_tokens_details"]["image_tokens"] > 0
    assert (
        three["input_tokens_details"]["image_tokens"] > one["input_tokens_details"]["image_tokens"]
    )
    for usage in (one, three):
        details = usage["input_tokens_details"]
        assert usage["input_tokens"] == details["image_tokens"] + details["text_tokens"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_a_generation_still_counts_no_image_tokens(route):
    usage = ok_json(route.generate())["usage"]

    assert usage["input_tokens_details"]["image_tokens"] == 0


def test_high_input_fidelity_costs_more_input_tokens_on_gpt_image_1(azure):
    low = ok_json(azure.edit(model="gpt-image-1", input_fidelity="low"))["usage"]
    high = ok_json(azure.edit(model="gpt-image-1", input_fidelity="high"))["usage"]

    assert high["input_tokens"] > low["input_tokens"]


def test_gpt_image_1_mini_takes_low_input_fidelity(route):
    assert route.edit(model="gpt-image-1-mini", input_fidelity="low").status_code == 200


# --- edits: the output is drawn from the inputs ------------------------------------------


def test_masked_area_is_repainted_and_the_rest_is_the_input(azure):
    body = ok_json(
        azure.edit(files=[image_part(), ("mask", ("mask.png", mask_png(), "image/png"))])
    )

    edited = decoded(body["data"][0]["b64_json"])
    assert edited.size == (WIDTH, HEIGHT)
    # The mask's box was sky; it is now mostly stripes (and the prompt), and no sky is left.
    assert share_of(edited, MASKED, (MAGENTA, YELLOW)) > 0.6
    assert share_of(edited, MASKED, (SKY,)) == 0
    # Far from the mask, the bands, frame and tiles: the input's own pixels.
    assert share_of(edited, UNTOUCHED, (SAND,)) > 0.98
    assert share_of(edited, (40, 560, 480, 680), (SEA,)) > 0.98


def test_without_a_mask_the_input_is_kept_and_framed_as_an_edit(azure):
    edited = decoded(ok_json(azure.edit())["data"][0]["b64_json"])

    assert share_of(edited, UNTOUCHED, (SAND,)) > 0.98
    assert share_of(edited, MASKED, (MAGENTA, YELLOW)) == 0
    # The magenta frame down both sides.
    assert share_of(edited, (0, 200, 4, 600), (MAGENTA,)) == 1
    assert share_of(edited, (WIDTH - 4, 200, WIDTH, 600), (MAGENTA,)) == 1


def test_the_first_image_is_scaled_to_the_requested_size(azure):
    edited = decoded(ok_json(azure.edit(size="1536x1152"))["data"][0]["b64_json"])

    assert edited.size == (1536, 1152)
    assert share_of(edited, (900, 400, 1400, 560), (SAND,)) > 0.98
    assert share_of(edited, (900, 650, 1400, 900), (GRASS,)) > 0.98
    assert share_of(edited, (100, 650, 600, 780), (SEA,)) > 0.98


def test_the_other_images_appear_as_tiles_along_the_bottom(azure):
    files = [image_part(), image_part(plain(RED)), image_part(plain((250, 250, 250)))]

    edited = decoded(ok_json(azure.edit(files=files))["data"][0]["b64_json"])

    # Tile 2 is at the left above the footer; tile 3 next to it. The sea quadrant is there.
    assert share_of(edited, (30, 580, 130, 670), (RED,)) > 0.9
    assert share_of(edited, (170, 580, 270, 670), ((250, 250, 250),)) > 0.9


def test_a_mask_of_a_scaled_output_is_scaled_with_it(azure):
    files = [image_part(), ("mask", ("mask.png", mask_png(), "image/png"))]

    edited = decoded(ok_json(azure.edit(files=files, size="2048x1536"))["data"][0]["b64_json"])

    doubled = tuple(2 * value for value in MASKED)
    assert share_of(edited, doubled, (MAGENTA, YELLOW)) > 0.6
    assert share_of(edited, tuple(2 * value for value in UNTOUCHED), (SAND,)) > 0.98


def test_edits_of_different_inputs_differ(azure):
    first = ok_json(azure.edit())["data"][0]["b64_json"]
    other = ok_json(azure.edit(files=[image_part(encoded(quadrants().rotate(180)))]))

    assert other["data"][0]["b64_json"] != first


# --- edits: bad input --------------------------------------------------------------------

GIF = encoded(Image.new("RGB", (32, 32), RED), "GIF")
RGB_MASK = encoded(Image.new("RGB", (WIDTH, HEIGHT), (0, 0, 0)))
BAD_EDITS = {
    "no-image": ([], {}, "image"),
    "17-images": ([image_part(plain(RED))] * 17, {}, "image"),
    "image-as-text": ([], {"image": "not a file"}, "image"),
    "text-file": ([image_part(b"hello, world", "text/plain")], {}, "image"),
    "gif": ([image_part(GIF, "image/gif")], {}, "image"),
    "no-content-type": ([image_part(FIRST, None)], {}, "image"),
    "octet-stream": ([image_part(FIRST, "application/octet-stream")], {}, "image"),
    "png-labelled-jpeg": ([image_part(FIRST, "image/jpeg")], {}, "image"),
    "broken-png": ([image_part(FIRST[:200])], {}, "image"),
    "second-image-broken": ([image_part(), image_part(b"\x89PNG\r\n\x1a\nxx")], {}, "image"),
    "mask-jpeg": (
        [image_part(), ("mask", ("m.jpg", encoded(quadrants(), "JPEG"), "image/jpeg"))],
        {},
        "mask",
    ),
    "mask-without-alpha": ([image_part(), ("mask", ("m.png", RGB_MASK, "image/png"))], {}, "mask"),
    "mask-wrong-size": (
        [image_part(), ("mask", ("m.png", mask_png((512, 384), (0, 0, 10, 10)), "image/png"))],
        {},
        "mask",
    ),
    "two-masks": (
        [image_part(), ("mask", ("m.png", mask_png(), "image/png"))]
        + [("mask", ("m.png", mask_png(), "image/png"))],
        {},
        "mask",
    ),
    "input-fidelity-on-gpt-image-2": (None, {"input_fidelity": "low"}, "input_fidelity"),
    "input-fidelity-unknown": (
        None,
        {"input_fidelity": "max", "_model": "gpt-image-1"},
        "input_fidelity",
    ),
    "input-fidelity-high-on-mini": (
        None,
        {"input_fidelity": "high", "_model": "gpt-image-1-mini"},
        "input_fidelity",
    ),
    "dall-e": (None, {"_model": "dall-e-3"}, "model"),
    "n-0": (None, {"n": 0}, "n"),
    "n-11": (None, {"n": 11}, "n"),
    "n-word": (None, {"n": "two"}, "n"),
    "n-superscript": (None, {"n": "²"}, "n"),
    "n-huge": (None, {"n": "9" * 5000}, "n"),
    "mask-as-text": (None, {"mask": "not a file"}, "mask"),
    "size-not-multiple-of-16": (None, {"size": "1000x1000"}, "size"),
    "size-gpt-image-1": (None, {"size": "2048x2048", "_model": "gpt-image-1"}, "size"),
    "quality": (None, {"quality": "hd"}, "quality"),
    "compression": (None, {"output_compression": "101"}, "output_compression"),
    "stream-word": (None, {"stream": "yes"}, "stream"),
    "partial-images-4": (None, {"partial_images": 4, "stream": "true"}, "partial_images"),
    "stream-with-n-2": (None, {"stream": "true", "n": 2}, "n"),
    "empty-prompt": (None, {"prompt": " "}, "prompt"),
    "transparent-on-gpt-image-2": (None, {"background": "transparent"}, "background"),
}


@pytest.mark.parametrize(("files", "fields", "param"), BAD_EDITS.values(), ids=BAD_EDITS.keys())
def test_bad_edit_is_400_in_the_routes_envelope_naming_the_field(route, files, fields, param):
    fields = dict(fields)
    model = fields.pop("_model", "gpt-image-2")

    response = route.edit(files=files, model=model, **fields)

    error = assert_invalid(route, response, param)
    assert error["message"]


def test_dall_e_edit_says_it_cannot_edit(route):
    response = route.edit(model="dall-e-3")

    assert "cannot edit" in assert_invalid(route, response, "model")["message"]


def test_a_file_over_50_mib_is_400_naming_image(emulator):
    route = Route("openai", emulator)
    too_big = b"\x89PNG\r\n\x1a\n" + bytes(50 * 1024 * 1024)

    response = route.edit(files=[image_part(too_big)])

    assert "52,428,800" in assert_invalid(route, response, "image")["message"]
    (entry,) = emulator_log(emulator)
    assert entry["files"][0]["size"] == len(too_big)
    assert entry["files"][0]["sha256"] == sha256(too_big)


def test_large_uploads_spool_beside_the_state_file_never_to_the_system_temp_folder(
    tmp_path, monkeypatch
):
    # Demo mode keeps the emulator's state in Atelier's data folder: an edit's large parts spool
    # there too. With the system's temporary folder unusable the edit still works.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-folder"))
    noise = Image.frombytes("RGB", (1800, 1800), os.urandom(1800 * 1800 * 3))
    large = encoded(noise)
    assert len(large) > 8 * 1024 * 1024
    config = EmulatorConfig(
        api_key=API_KEY, deployments=dict(DEPLOYMENTS), state_file=str(tmp_path / "state.json")
    )
    with EmulatorServer(config) as server:
        response = Route("azure", server).edit(files=[image_part(large)], size="1024x1024")

    assert response.status_code == 200, response.text
    assert (tmp_path / ".uploads").is_dir()


def test_a_decompression_bomb_is_400_naming_image(azure):
    response = azure.edit(files=[image_part(bomb_png())])

    assert "pixels" in assert_invalid(azure, response, "image")["message"]


def test_an_image_over_the_pixel_limit_is_400_naming_image(azure):
    # 10000x9000: over Pillow's limit, under twice it (Pillow only warns when opening it).
    big = encoded(Image.new("1", (10_000, 9_000)))

    response = azure.edit(files=[image_part(big)])

    assert "10000x9000 pixels" in assert_invalid(azure, response, "image")["message"]


def test_a_mask_over_4_mib_is_400_naming_mask(azure):
    noisy = Image.frombytes("RGBA", (1100, 1100), random.Random(7).randbytes(1100 * 1100 * 4))
    mask = encoded(noisy)
    assert len(mask) > 4 * 1024 * 1024
    first = encoded(Image.new("RGB", (1100, 1100), SKY))

    response = azure.edit(files=[image_part(first), ("mask", ("m.png", mask, "image/png"))])

    assert_invalid(azure, response, "mask")


def test_a_palette_png_mask_with_a_transparent_colour_counts_as_alpha(azure):
    mask = Image.new("P", (WIDTH, HEIGHT), 1)
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.paste(0, MASKED)
    mask.info["transparency"] = 0
    files = [image_part(), ("mask", ("m.png", encoded(mask), "image/png"))]

    edited = decoded(ok_json(azure.edit(files=files))["data"][0]["b64_json"])

    assert share_of(edited, MASKED, (MAGENTA, YELLOW)) > 0.6


def test_openai_route_refuses_unknown_form_fields_and_files(emulator):
    route = Route("openai", emulator)

    assert_invalid(route, route.edit(style="vivid"), "style")
    assert_invalid(route, route.edit(files=[image_part(), image_part(name="markup")]), "markup")


@pytest.mark.parametrize("name", ["azure", "v1"])
def test_azure_routes_ignore_unknown_form_fields(emulator, name):
    assert Route(name, emulator).edit(frobnicate="yes").status_code == 200


def test_a_json_body_on_the_edits_route_is_400(route):
    response = requests.post(
        route.url("edits"),
        headers=route.headers,
        json={"prompt": "x", "model": "gpt-image-2"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]


def test_edits_need_the_same_keys_as_generations(route):
    headers = {"api-key": "wrong"} if route.name != "openai" else {"Authorization": "Bearer x"}
    response = requests.post(
        route.url("edits"),
        headers=headers,
        data={"prompt": "x", "model": "gpt-image-2"},
        files=[image_part()],
        timeout=TIMEOUT,
    )

    assert response.status_code == 401


def test_azure_edits_take_the_same_api_versions_as_generations(emulator):
    base = f"{emulator.url}openai/deployments/gpt-image-2/images/edits"
    headers = {"api-key": API_KEY}

    def post(url: str) -> requests.Response:
        return requests.post(
            url, headers=headers, data={"prompt": "x"}, files=[image_part()], timeout=TIMEOUT
        )

    assert post(base).status_code == 404
    assert post(f"{base}?api-version=2023-06-01-preview").status_code == 404
    too_old = post(f"{base}?api-version=2024-10-21")
    assert (too_old.status_code, too_old.json()["error"]["param"]) == (400, "api-version")
    unknown = f"{emulator.url}openai/deployments/nope/images/edits?api-version={API_VERSION}"
    assert post(unknown).json()["error"]["code"] == "DeploymentNotFound"


def test_azure_v1_edit_without_a_deployment_is_400_naming_model(emulator):
    response = requests.post(
        f"{emulator.url}openai/v1/images/edits",
        headers={"api-key": API_KEY},
        data={"prompt": "x"},
        files=[image_part()],
        timeout=TIMEOUT,
    )

    assert (response.status_code, response.json()["error"]["param"]) == (400, "model")


def test_openai_edit_without_a_model_means_gpt_image_1(emulator):
    response = requests.post(
        f"{emulator.url}v1/images/edits",
        headers={"Authorization": f"Bearer {OPENAI_KEY}"},
        data={"prompt": "x", "input_fidelity": "high"},
        files=[image_part()],
        timeout=TIMEOUT,
    )

    assert ok_json(response)["size"] == "1536x1024"


# --- edits: prompt triggers --------------------------------------------------------------


def test_rate_limit_trigger_throttles_an_edit(route):
    response = route.edit(prompt="[ratelimit-always] sky")

    assert response.status_code == 429
    assert response.headers["retry-after"] == "0.1"


def test_fail_trigger_fails_an_edit_with_500(route):
    assert route.edit(prompt="[fail] sky").status_code == 500


def test_refuse_trigger_refuses_an_edit(route):
    response = route.edit(prompt="[refuse] sky")

    assert (response.status_code, response.json()["error"]["code"]) == (
        400,
        "content_policy_violation",
    )


def test_first_time_triggers_let_an_edits_retry_through(route):
    prompt = unique("[ratelimit] sky")

    assert route.edit(prompt=prompt).status_code == 429
    assert route.edit(prompt=prompt).status_code == 200


# --- edits: the request log --------------------------------------------------------------


def test_request_log_records_every_file_with_its_role_hash_size_and_type(route):
    reference = plain(RED)
    mask = mask_png()
    files = [
        image_part(name="image[]"),
        image_part(reference, name="image[]"),
        ("mask", ("mask.png", mask, "image/png")),
    ]

    ok_json(route.edit(files=files, size="1024x1024", quality="low"))

    (entry,) = emulator_log(route.server)
    assert entry["path"].endswith("/images/edits")
    assert [
        (file["role"], file["field"], file["sha256"], file["size"], file["content_type"])
        for file in entry["files"]
    ] == [
        ("image", "image[]", sha256(FIRST), len(FIRST), "image/png"),
        ("image", "image[]", sha256(reference), len(reference), "image/png"),
        ("mask", "mask", sha256(mask), len(mask), "image/png"),
    ]
    assert entry["files"][0]["filename"] == "image.bin"
    assert entry["fields"]["size"] == "1024x1024"
    assert entry["fields"]["quality"] == "low"
    assert "prompt" not in entry["fields"]


def test_request_log_records_the_files_of_a_refused_edit(azure):
    azure.edit(files=[image_part(b"not an image", "text/plain")])

    (entry,) = emulator_log(azure.server)
    assert entry["status"] == 400
    assert entry["files"][0]["sha256"] == sha256(b"not an image")
    assert entry["files"][0]["content_type"] == "text/plain"


def test_a_generation_has_no_files_in_the_log(azure):
    azure.generate()

    assert emulator_log(azure.server)[0]["files"] is None


# --- streams -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    type: str
    data: dict
    arrived: float


def read_events(response: requests.Response) -> Iterator[Event]:
    """The server-sent events of `response` as they arrive; each must be exactly
    `event: <type>\\ndata: <json>\\n\\n`."""
    buffer = b""
    for chunk in response.iter_content(chunk_size=None):
        buffer += chunk
        while b"\n\n" in buffer:
            raw, buffer = buffer.split(b"\n\n", 1)
            event_line, data_line = raw.decode().split("\n")
            assert event_line.startswith("event: ") and data_line.startswith("data: ")
            yield Event(event_line[7:], json.loads(data_line[6:]), time.monotonic())
    assert buffer == b"", "the stream ended inside an event"


EVENT_FIELDS = [
    "type",
    "b64_json",
    "partial_image_index",
    "created_at",
    "background",
    "output_format",
    "quality",
    "size",
]


def test_generation_stream_sends_partials_then_the_completed_image(route):
    response = route.generate(stream=True, partial_images=2, size="1024x1024")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = list(read_events(response))
    assert [event.type for event in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    for index, event in enumerate(events[:2]):
        assert list(event.data) == EVENT_FIELDS
        assert event.data["type"] == event.type
        assert event.data["partial_image_index"] == index
    completed = events[2].data
    assert sorted(completed) == sorted([*EVENT_FIELDS[:2], *EVENT_FIELDS[3:], "usage"])
    assert (completed["background"], completed["quality"], completed["size"]) == (
        "opaque",
        "medium",
        "1024x1024",
    )
    assert completed["usage"]["output_tokens"] > 0


def test_partial_frames_are_coarser_images_of_the_final_size(azure):
    response = azure.generate(stream=True, partial_images=3, size="1024x1024")

    events = list(read_events(response))
    frames = [decoded(event.data["b64_json"]) for event in events]
    assert [frame.size for frame in frames] == [(1024, 1024)] * 4
    final = frames[-1].convert("RGB")
    # Each frame is further from the final image than the next one.
    distances = [_distance(frame.convert("RGB"), final) for frame in frames[:3]]
    assert distances[0] > distances[1] > distances[2] > 0


def _distance(one: Image.Image, other: Image.Image) -> float:
    """Mean absolute difference per channel between two pictures of one size, outside the
    title and footer bands (which partial frames relabel)."""
    box = (0, 100, one.width, one.height - 100)
    first, second = one.crop(box).tobytes(), other.crop(box).tobytes()
    return sum(abs(a - b) for a, b in zip(first, second, strict=True)) / len(first)


def test_completed_image_is_the_image_the_same_request_draws_without_stream(route):
    prompt = unique("a quiet harbour")
    plain_body = ok_json(route.generate(prompt=prompt, size="1024x1024"))

    events = list(read_events(route.generate(prompt=prompt, size="1024x1024", stream=True)))

    assert [event.type for event in events] == ["image_generation.completed"]
    # The same picture; the bytes differ only in their Content Credentials (each signed anew).
    streamed = Image.open(io.BytesIO(base64.b64decode(events[0].data["b64_json"])))
    plain = Image.open(io.BytesIO(base64.b64decode(plain_body["data"][0]["b64_json"])))
    assert streamed.tobytes() == plain.tobytes()
    assert streamed.size == plain.size


def test_edit_stream_sends_image_edit_events(route):
    files = [image_part(), ("mask", ("m.png", mask_png(), "image/png"))]

    response = route.edit(files=files, stream="true", partial_images=1)

    events = list(read_events(response))
    assert [event.type for event in events] == ["image_edit.partial_image", "image_edit.completed"]
    final = decoded(events[1].data["b64_json"])
    assert final.size == (WIDTH, HEIGHT)
    assert share_of(final, MASKED, (MAGENTA, YELLOW)) > 0.6
    assert decoded(events[0].data["b64_json"]).size == (WIDTH, HEIGHT)
    assert events[1].data["usage"]["input_tokens_details"]["image_tokens"] > 0


def test_stream_events_are_spread_over_the_latency(emulator):
    config = EmulatorConfig(api_key=API_KEY, latency=0.6, deployments=dict(DEPLOYMENTS))
    with EmulatorServer(config) as slow:
        started = time.monotonic()
        response = Route("azure", slow).generate(stream=True, partial_images=2, size="1024x1024")
        arrivals = [event.arrived - started for event in read_events(response)]

    # Each event waits for its share of the latency (partial i at latency*(i+1)/3, the final
    # one at the latency). Lower bounds only: a loaded machine can only make events later.
    assert len(arrivals) == 3
    for arrival, due in zip(arrivals, (0.2, 0.4, 0.6), strict=True):
        assert arrival >= due


def test_stream_with_n_above_1_is_refused_naming_n(route):
    response = route.generate(stream=True, n=2)

    assert_invalid(route, response, "n")


def test_stream_with_an_error_trigger_answers_the_error_before_streaming(route):
    response = route.generate(prompt="[fail] now", stream=True, partial_images=2)

    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"


# --- stream faults -----------------------------------------------------------------------


def test_slow_stream_pauses_between_events(azure):
    response = azure.generate(
        prompt="[stream-slow] a fox", stream=True, partial_images=2, size="1024x1024"
    )

    events = list(read_events(response))
    assert [event.type for event in events][-1] == "image_generation.completed"
    gaps = [
        later.arrived - earlier.arrived for earlier, later in zip(events, events[1:], strict=False)
    ]
    assert all(gap >= SLOW_SECONDS * 0.9 for gap in gaps)


def test_slow_stream_shows_a_partial_before_the_completed_image_arrives(azure):
    files = [image_part()]
    response = azure.edit(files=files, prompt="[stream-slow] sky", stream="true", partial_images=1)

    events = read_events(response)
    first = next(events)
    seen_at = time.monotonic()
    assert first.type == "image_edit.partial_image"
    completed = next(events)
    assert completed.type == "image_edit.completed"
    assert completed.arrived - seen_at >= SLOW_SECONDS * 0.9


def test_slow_stream_without_partials_delays_the_only_event(azure):
    started = time.monotonic()
    events = list(read_events(azure.generate(prompt="[stream-slow] x", stream=True)))

    assert [event.type for event in events] == ["image_generation.completed"]
    assert events[0].arrived - started >= SLOW_SECONDS


def test_cut_stream_closes_after_the_first_partial_then_recovers(route):
    prompt = unique("[stream-cut] a fox")

    received: list[Event] = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for event in read_events(route.generate(prompt=prompt, stream=True, partial_images=2)):
            received.append(event)

    assert [event.type for event in received] == ["image_generation.partial_image"]
    decoded(received[0].data["b64_json"])
    again = list(read_events(route.generate(prompt=prompt, stream=True, partial_images=2)))
    assert again[-1].type == "image_generation.completed"


def test_cut_edit_stream_without_partials_sends_no_event(azure):
    received: list[Event] = []
    response = azure.edit(prompt=unique("[stream-cut] sky"), stream="true")
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        received.extend(read_events(response))

    assert received == []


def test_error_stream_sends_an_error_event_after_the_first_partial(route):
    prompt = unique("[stream-error] a fox")

    events = list(read_events(route.generate(prompt=prompt, stream=True, partial_images=2)))

    assert [event.type for event in events] == ["image_generation.partial_image", "error"]
    assert events[1].data["error"]["code"] == "server_error"
    again = list(read_events(route.generate(prompt=prompt, stream=True, partial_images=2)))
    assert again[-1].type == "image_generation.completed"


def test_stream_faults_do_not_touch_answers_without_stream(azure):
    assert azure.generate(prompt=unique("[stream-cut] x")).status_code == 200


def test_stream_faults_are_listed(emulator):
    faults = requests.get(f"{emulator.url}_emulator/faults", timeout=TIMEOUT).json()["faults"]

    listed = {fault["trigger"]: fault["applies_to"] for fault in faults}
    assert {listed[name] for name in ("[stream-slow]", "[stream-cut]", "[stream-error]")} == {
        "streams"
    }


# --- the official openai SDK -------------------------------------------------------------


def openai_client(server: EmulatorServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{server.url}v1/", api_key=OPENAI_KEY, max_retries=0, timeout=TIMEOUT
    )


def azure_client(server: EmulatorServer) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=server.url,
        api_key=API_KEY,
        api_version=API_VERSION,
        max_retries=0,
        timeout=TIMEOUT,
    )


SDK_CLIENTS = {"openai": openai_client, "azure": azure_client}


@pytest.fixture(params=sorted(SDK_CLIENTS))
def client(request: pytest.FixtureRequest, emulator: EmulatorServer) -> openai.OpenAI:
    return SDK_CLIENTS[request.param](emulator)


def test_sdk_edits_with_several_images_and_a_mask(client, emulator):
    reference = plain(RED)

    response = client.images.edit(
        model="gpt-image-2",
        image=[("first.png", FIRST, "image/png"), ("ref.png", reference, "image/png")],
        mask=("mask.png", mask_png(), "image/png"),
        prompt="make the sky stormy",
    )

    edited = decoded(response.data[0].b64_json)
    assert share_of(edited, MASKED, (MAGENTA, YELLOW)) > 0.6
    assert response.usage.input_tokens_details.image_tokens > 0
    (entry,) = emulator_log(emulator)
    assert [(file["field"], file["sha256"]) for file in entry["files"]] == [
        ("image[]", sha256(FIRST)),
        ("image[]", sha256(reference)),
        ("mask", sha256(mask_png())),
    ]


def test_sdk_streams_an_edit(client):
    stream = client.images.edit(
        model="gpt-image-1",
        image=("first.png", FIRST, "image/png"),
        prompt="make the sky stormy",
        stream=True,
        partial_images=2,
        input_fidelity="high",
    )

    events = list(stream)
    assert [event.type for event in events] == [
        "image_edit.partial_image",
        "image_edit.partial_image",
        "image_edit.completed",
    ]
    assert [event.partial_image_index for event in events[:2]] == [0, 1]
    assert decoded(events[-1].b64_json).size == (1536, 1024)
    assert events[-1].usage.input_tokens_details.image_tokens > 0


def test_sdk_streams_a_generation(client):
    stream = client.images.generate(
        model="gpt-image-2", prompt="a lighthouse", stream=True, partial_images=1
    )

    assert [event.type for event in stream] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]


def test_sdk_reports_a_cut_stream_as_a_connection_error(client):
    stream = client.images.generate(
        model="gpt-image-2", prompt=unique("[stream-cut] x"), stream=True, partial_images=2
    )

    received = []
    with pytest.raises(openai.APIConnectionError):
        for event in stream:
            received.append(event.type)
    assert received == ["image_generation.partial_image"]


def test_sdk_raises_the_error_event_of_a_stream(client):
    stream = client.images.generate(
        model="gpt-image-2", prompt=unique("[stream-error] x"), stream=True, partial_images=1
    )

    with pytest.raises(openai.APIError, match="The server had an error"):
        list(stream)


def test_sdk_edit_of_a_dall_e_model_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.edit(model="dall-e-3", image=("first.png", FIRST, "image/png"), prompt="x")

    assert raised.value.param == "model"
