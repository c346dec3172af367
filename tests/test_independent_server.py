"""Atelier against an Azure-compatible server that is not ours (tests/independent_azure.py,
written from the protocol reference only), end to end through the JSON API:

- issue #16: the server signs its images the way OpenAI's API does (azure-image-apis.md §9): the
  stored original is the provider's bytes, its download validates with the C2PA SDK, and the API
  reports the credentials. The server signs with its own code here (a C2PA manifest naming
  "OpenAI API", `c2pa.created` with trainedAlgorithmicMedia); only its throwaway certificate
  chain comes from the emulator's helper.
- issue #15: multipart and gallery-id edits send exactly the uploaded or stored bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import zlib
from collections.abc import Iterator
from typing import Any

import c2pa
import pytest
from flask import Flask

from app.emulator.content_credentials import make_certificate_chain
from tests.edit_helpers import mask, png
from tests.helpers import wait_for_job
from tests.independent_azure import (
    IndependentAzure,
    independent_settings,
    running_independent_azure,
)

AI_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


class OpenAIStyleSigner:
    """Signs PNGs as OpenAI's API does: its own generator name, an AI `c2pa.created` action."""

    def __init__(self) -> None:
        chain = make_certificate_chain()
        self.signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(
                c2pa.C2paSigningAlg.ES256, chain.chain_pem, chain.private_key_pem, None
            )
        )
        self.sent: list[bytes] = []

    def __call__(self, data: bytes) -> bytes:
        manifest = {
            "claim_generator_info": [{"name": "OpenAI API", "version": "c2pa-rs"}],
            "title": "image.png",
            "format": "image/png",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": AI_SOURCE,
                                "softwareAgent": {"name": "gpt-image-1"},
                            }
                        ]
                    },
                }
            ],
        }
        out = io.BytesIO()
        with c2pa.Builder(manifest) as builder:
            builder.sign(self.signer, "image/png", io.BytesIO(data), out)
        signed = out.getvalue()
        self.sent.append(signed)
        return signed


@pytest.fixture
def signing_azure() -> Iterator[tuple[IndependentAzure, OpenAIStyleSigner]]:
    signer = OpenAIStyleSigner()
    with running_independent_azure({"gpt-image-1"}) as server:
        server.finish_image = signer
        yield server, signer


@pytest.fixture
def signed_app(app_factory: Any, signing_azure: Any) -> Flask:
    server, _ = signing_azure
    return app_factory(**independent_settings(server))


def sdk_report(data: bytes) -> dict[str, Any]:
    with c2pa.Reader("image/png", io.BytesIO(data)) as reader:
        return json.loads(reader.json())


def test_a_signed_image_is_kept_exactly_and_its_credentials_are_reported(signed_app, signing_azure):
    server, signer = signing_azure
    client = signed_app.test_client()

    created = client.post(
        "/api/jobs", json={"prompt": "a signed lighthouse", "provider": "azure:gpt-image-1"}
    )
    job = wait_for_job(client, created.get_json()["id"])

    assert job["status"] == "succeeded", job
    (sent,) = signer.sent
    assert server.posts("images/generations")[0].json["prompt"] == "a signed lighthouse"
    (image,) = job["images"]
    # The stored original is the provider's bytes: its sha256 is theirs.
    assert image["sha256"] == hashlib.sha256(sent).hexdigest()
    with client.get(image["url"]) as response:
        downloaded = response.get_data()
    assert downloaded == sent
    # The downloaded bytes validate with the C2PA SDK: no failure but the unknown signer.
    report = sdk_report(downloaded)
    assert report["validation_state"] in ("Valid", "Trusted")
    failures = report.get("validation_status") or []
    assert [status["code"] for status in failures] in ([], ["signingCredential.untrusted"])
    # The API's view of them.
    credentials = image["content_credentials"]
    assert credentials["valid"] is True
    assert credentials["generator"] == "OpenAI API"
    assert credentials["ai_generated"] is True
    assert credentials["issues"] == []


def test_an_image_altered_on_the_way_is_stored_as_is_and_marked_invalid(signed_app, signing_azure):
    server, signer = signing_azure

    def signed_then_altered(data: bytes) -> bytes:
        signed = signer(data)
        # A text chunk spliced in after IHDR, outside the manifest: the data hash breaks.
        chunk = b"tEXt" + b"Comment\x00altered"
        length = (len(chunk) - 4).to_bytes(4, "big")
        crc = zlib.crc32(chunk).to_bytes(4, "big")
        altered = signed[:33] + length + chunk + crc + signed[33:]
        signer.sent[-1] = altered
        return altered

    server.finish_image = signed_then_altered
    client = signed_app.test_client()

    created = client.post("/api/jobs", json={"prompt": "altered", "provider": "azure:gpt-image-1"})
    job = wait_for_job(client, created.get_json()["id"])

    assert job["status"] == "succeeded", job
    (image,) = job["images"]
    assert image["sha256"] == hashlib.sha256(signer.sent[-1]).hexdigest()
    credentials = image["content_credentials"]
    assert credentials["valid"] is False
    assert any("hash" in issue for issue in credentials["issues"]), credentials


def test_multipart_and_gallery_edits_send_exactly_the_stored_bytes(signed_app, signing_azure):
    server, signer = signing_azure
    client = signed_app.test_client()
    photo, area = png((64, 48)), mask((64, 48))

    uploaded = client.post(
        "/api/jobs",
        data={
            "prompt": "make the sky stormy",
            "provider": "azure:gpt-image-1",
            "image": (io.BytesIO(photo), "photo.png", "image/png"),
            "mask": (io.BytesIO(area), "mask.png", "image/png"),
        },
        content_type="multipart/form-data",
    )
    first = wait_for_job(client, uploaded.get_json()["id"])
    output = first["images"][0]
    referenced = client.post(
        "/api/jobs",
        json={
            "prompt": "now at night",
            "provider": "azure:gpt-image-1",
            "reference_images": [output["id"]],
        },
    )
    second = wait_for_job(client, referenced.get_json()["id"])

    assert (first["status"], first["kind"], second["status"], second["kind"]) == (
        "succeeded",
        "edit",
        "succeeded",
        "edit",
    )
    multipart_edit, gallery_edit = server.posts("images/edits")
    assert [(part.name, part.sha256) for part in multipart_edit.files] == [
        ("image", hashlib.sha256(photo).hexdigest()),
        ("mask", hashlib.sha256(area).hexdigest()),
    ]
    assert [input_["sha256"] for input_ in first["inputs"]] == [
        part.sha256 for part in multipart_edit.files
    ]
    # The gallery image goes out as the stored original: the provider's own signed bytes.
    with client.get(output["url"]) as response:
        original = response.get_data()
    assert original == signer.sent[0]
    assert [(part.name, part.data) for part in gallery_edit.files] == [("image", original)]
