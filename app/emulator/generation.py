"""Producing the images of a valid synchronous request, the same way for both routes.

Owns `generate_images` (draw or store the images, as `b64_json` or as signed blob URLs) and
`wait_out_latency` (hold the answer until the configured latency has passed, so a benchmark
sees a fixed upstream latency). The routes add their own envelopes, headers and annotations.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Response

from .blobs import blob_url
from .drawing import render_placeholder
from .errors import json_response
from .image_requests import ImageRequest
from .models import resolved_size, revised_prompt
from .state import EmulatorState


@dataclass(frozen=True)
class GeneratedImage:
    """One `data[]` entry before the route decorates it: exactly one of url/b64_json is set."""

    url: str | None
    b64_json: str | None
    revised_prompt: str | None


def generate_images(
    state: EmulatorState, image_request: ImageRequest, *, base_url: str, url_lifetime: int
) -> list[GeneratedImage]:
    """The images for `image_request`; `url` answers stay downloadable for `url_lifetime` s."""
    model = image_request.model
    size = resolved_size(image_request.size)
    revision = (
        revised_prompt(image_request.prompt, image_request.style or "vivid")
        if model.revises_prompt
        else None
    )
    if image_request.response_format == "url":
        # Stored as a finished operation, so the blob route serves (and a restart keeps) it.
        operation = state.store.create(
            prompt=image_request.prompt,
            n=image_request.n,
            size=size,
            response_format="url",
            latency=0.0,
            model=model.name,
            synchronous=True,
            retention_seconds=url_lifetime,
        )
        return [
            GeneratedImage(
                url=blob_url(base_url, state.signing_secret, operation, index),
                b64_json=None,
                revised_prompt=revision,
            )
            for index in range(image_request.n)
        ]
    return [
        GeneratedImage(
            url=None,
            b64_json=base64.b64encode(_render(image_request, index, size)).decode("ascii"),
            revised_prompt=revision,
        )
        for index in range(image_request.n)
    ]


def answer_with_images(
    state: EmulatorState,
    image_request: ImageRequest,
    started: float,
    *,
    base_url: str,
    url_lifetime: int,
    body_for: Callable[[ImageRequest, list[GeneratedImage], int], dict[str, object]],
) -> Response:
    """The success answer of a synchronous route: draw the images, shape the body the route's
    way (`body_for`), and answer once the configured latency has passed."""
    images = generate_images(state, image_request, base_url=base_url, url_lifetime=url_lifetime)
    body = body_for(image_request, images, int(state.store.clock()))
    wait_out_latency(started, state.config.latency)
    return json_response(body)


def wait_out_latency(started: float, latency: float) -> None:
    """Sleep until `latency` seconds have passed since `started` (a time.monotonic() value).

    Counting from the start of the request, not from now, makes the answer take `latency`
    however long validation and drawing took (unless they alone took longer).
    """
    remaining = started + latency - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _render(image_request: ImageRequest, index: int, size: str) -> bytes:
    return render_placeholder(
        image_request.prompt,
        index,
        image_request.n,
        size,
        model=image_request.model.name,
        output_format=image_request.output_format,
        quality=image_request.output_compression,
        transparent=image_request.background == "transparent",
    )
