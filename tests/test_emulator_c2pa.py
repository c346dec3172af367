"""The emulator's Content Credentials: every final image it answers with carries a C2PA manifest
signed with a throwaway chain made at start, and `[c2pa-broken]` answers with one whose data hash
fails. Read back with app.credentials (the C2PA SDK), over real loopback HTTP."""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from PIL import Image

from app import credentials
from app.emulator import EmulatorConfig, EmulatorServer
from app.emulator.content_credentials import (
    GENERATOR,
    ContentSigner,
    break_data_hash,
    make_certificate_chain,
)
from app.emulator.drawing import render_placeholder

API_KEY = "azure-test-key-0123456789"
OPENAI_KEY = "sk-emulator-test-key-wxyz"
VERSION = "2025-04-01-preview"
TIMEOUT = 10
DEPLOYMENTS = {"gpt-image-2": "gpt-image-2", "dall-e-3": "dall-e-3"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        api_key=API_KEY, latency=0.0, deployments=dict(DEPLOYMENTS), openai_api_key=OPENAI_KEY
    )
    with EmulatorServer(config) as server:
        yield server


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


def generate(emulator: EmulatorServer, deployment: str = "gpt-image-2", **body: object):
    """A generation on Azure's deployment route, or on OpenAI's route for WebP (Azure takes
    PNG and JPEG only)."""
    body = {"prompt": unique("a lighthouse at dusk"), "size": "1024x1024", **body}
    if body.get("output_format") == "webp":
        url, params = f"{emulator.url}v1/images/generations", {}
        headers = {"Authorization": f"Bearer {OPENAI_KEY}"}
        body["model"] = DEPLOYMENTS[deployment]
    else:
        url = f"{emulator.url}openai/deployments/{deployment}/images/generations"
        params, headers = {"api-version": VERSION}, {"api-key": API_KEY}
    return requests.post(
        url,
        params=params,
        headers=headers,
        json=body,
        timeout=TIMEOUT,
        stream=bool(body.get("stream")),
    )


def b64_image(response: requests.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def png(colour: str = "teal", size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def root_pem(emulator: EmulatorServer) -> str:
    response = requests.get(f"{emulator.url}_emulator/c2pa/root.pem", timeout=TIMEOUT)
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_generated_images_carry_valid_ai_credentials_naming_the_emulator(emulator, output_format):
    data = b64_image(generate(emulator, output_format=output_format))

    summary = credentials.inspect(data, MIME_TYPES[output_format])

    assert Image.open(io.BytesIO(data)).format.lower() == output_format
    assert summary["valid"] is True
    assert summary["trusted"] is False  # a throwaway root nobody trusts
    assert summary["generator"] == GENERATOR
    assert summary["signer"] == GENERATOR
    assert summary["software_agent"] == "gpt-image-2"
    assert summary["ai_generated"] is True
    assert summary["signed_at"].startswith(time.strftime("%Y-", time.gmtime()))
    assert summary["signed_at_source"] == "claimed"
    assert summary["issues"] == []


def test_a_reader_given_the_emulators_root_trusts_its_images(emulator):
    data = b64_image(generate(emulator))

    summary = credentials.inspect(data, "image/png", trust_anchors=root_pem(emulator))

    assert summary["valid"] is True
    assert summary["trusted"] is True


def test_another_emulator_has_another_root(emulator):
    config = EmulatorConfig(
        api_key=API_KEY, latency=0.0, deployments=dict(DEPLOYMENTS), openai_api_key=OPENAI_KEY
    )
    with EmulatorServer(config) as other:
        data = b64_image(generate(other))
        other_root = root_pem(other)

    assert other_root != root_pem(emulator)
    assert (
        credentials.inspect(data, "image/png", trust_anchors=root_pem(emulator))["trusted"] is False
    )
    assert credentials.inspect(data, "image/png", trust_anchors=other_root)["trusted"] is True


def test_image_urls_serve_signed_pngs(emulator):
    response = generate(emulator, "dall-e-3", response_format="url")
    assert response.status_code == 200, response.text
    image = requests.get(response.json()["data"][0]["url"], timeout=TIMEOUT)

    summary = credentials.inspect(image.content, "image/png")

    assert summary["valid"] is True
    assert summary["software_agent"] == "dall-e-3"
    assert summary["ai_generated"] is True


def test_a_streams_completed_image_is_signed_and_its_partial_frames_are_not(emulator):
    response = generate(emulator, stream=True, partial_images=1)
    assert response.status_code == 200
    events = [
        json.loads(line.removeprefix(b"data:"))
        for line in response.iter_lines()
        if line.startswith(b"data:")
    ]
    images = [base64.b64decode(event["b64_json"]) for event in events if "b64_json" in event]

    partial, final = images
    assert credentials.inspect(partial, "image/png") is None
    assert credentials.inspect(final, "image/png")["valid"] is True


def test_an_edits_input_images_are_its_ingredients_and_the_mask_is_not(emulator):
    mask = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(mask, "PNG")
    response = requests.post(
        f"{emulator.url}openai/deployments/gpt-image-2/images/edits",
        params={"api-version": VERSION},
        headers={"api-key": API_KEY},
        data={"prompt": unique("make it stormy"), "size": "1024x1024"},
        files=[
            ("image[]", ("harbour.png", png("navy"), "image/png")),
            ("image[]", ("boat.png", png("white"), "image/png")),
            ("mask", ("mask.png", mask.getvalue(), "image/png")),
        ],
        timeout=TIMEOUT,
    )

    summary = credentials.inspect(b64_image(response), "image/png")

    assert summary["valid"] is True
    assert summary["ingredients"] == ["harbour.png", "boat.png"]


def test_an_edit_of_a_signed_image_keeps_the_chain_valid(emulator):
    original = b64_image(generate(emulator))
    response = requests.post(
        f"{emulator.url}openai/deployments/gpt-image-2/images/edits",
        params={"api-version": VERSION},
        headers={"api-key": API_KEY},
        data={"prompt": unique("add a moon"), "size": "1024x1024"},
        files=[("image", ("original.png", original, "image/png"))],
        timeout=TIMEOUT,
    )

    summary = credentials.inspect(b64_image(response), "image/png")

    assert summary["valid"] is True
    assert summary["ingredients"] == ["original.png"]


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_c2pa_broken_answers_a_readable_image_whose_data_hash_fails(emulator, output_format):
    data = b64_image(
        generate(emulator, prompt=unique("[c2pa-broken] a fox"), output_format=output_format)
    )

    summary = credentials.inspect(data, MIME_TYPES[output_format])

    Image.open(io.BytesIO(data)).load()  # still a good image: only its credentials break
    assert summary["valid"] is False
    assert summary["generator"] == GENERATOR  # the manifest is there and readable
    assert any("data hash" in issue for issue in summary["issues"])


def test_c2pa_broken_breaks_image_urls_too(emulator):
    response = generate(
        emulator, "dall-e-3", prompt=unique("[C2PA-BROKEN] a fox"), response_format="url"
    )
    image = requests.get(response.json()["data"][0]["url"], timeout=TIMEOUT)

    summary = credentials.inspect(image.content, "image/png")

    assert summary["valid"] is False
    assert any("data hash" in issue for issue in summary["issues"])


def test_c2pa_broken_is_listed_with_the_faults(emulator):
    faults = requests.get(f"{emulator.url}_emulator/faults", timeout=TIMEOUT).json()["faults"]

    [broken] = [fault for fault in faults if fault["trigger"] == "[c2pa-broken]"]
    assert "data hash" in broken["description"]


def test_the_signing_certificate_has_the_extensions_c2pa_requires():
    chain = make_certificate_chain()
    signer, root = x509.load_pem_x509_certificates(chain.chain_pem)

    usage = signer.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_cert_sign
    extended = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in extended
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in extended
    assert signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert signer.issuer == root.subject
    assert chain.root_pem in chain.chain_pem


def test_signing_a_large_image_is_fast():
    signer = ContentSigner()
    image = render_placeholder("a wide view", 0, 1, "1536x1024", model="gpt-image-2")
    signer.sign(image, "png", model="gpt-image-2")  # the first sign warms the SDK up

    started = time.perf_counter()
    for _ in range(5):
        signer.sign(image, "png", model="gpt-image-2")
    per_image = (time.perf_counter() - started) / 5

    assert per_image < 0.25, f"signing took {per_image:.3f} s per image"


def test_break_data_hash_refuses_an_unknown_format():
    with pytest.raises(ValueError):
        break_data_hash(png(), "gif")


def test_the_same_request_gets_the_same_signed_bytes(emulator):
    prompt = unique("twin lighthouses")

    first = b64_image(generate(emulator, prompt=prompt))
    second = b64_image(generate(emulator, prompt=prompt))

    assert first == second
    assert credentials.inspect(first, "image/png")["valid"] is True


def test_signed_images_past_the_cache_budget_are_signed_anew():
    image = render_placeholder("a wide view", 0, 1, "256x256")
    signer = ContentSigner(cache_bytes=len(image) * 3)

    first = signer.sign(image, "png", model="gpt-image-2")
    assert signer.sign(image, "png", model="gpt-image-2") == first
    for other in ("dall-e-3", "gpt-image-1", "gpt-image-1.5"):  # push the first one out
        signer.sign(image, "png", model=other)

    again = signer.sign(image, "png", model="gpt-image-2")
    assert again != first
    assert credentials.inspect(again, "image/png")["valid"] is True
