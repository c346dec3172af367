"""Answering a valid synchronous request, the same way for both routes.

Owns `answer_generation` (the error a prompt trigger asks for, or else the images, in one
JSON body or as a stream of server-sent events, streaming.py), `generate_images` (draw or store
the images, as `b64_json` or as signed blob URLs; an edit's are drawn from its inputs,
edit_drawing.py) and `wait_out_latency` (hold the answer until the configured latency has
passed, so a benchmark sees a fixed upstream latency). Edits and generations are answered
alike: same triggers, same bodies. Each route says in a `SyncAnswers` how it words its errors
and shapes its 200 body; `gpt_image_body`, `image_data` and `resolved_settings` are the parts
of that body the routes share.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flask import Response, request
from PIL import Image

from .blobs import blob_url
from .content_credentials import Ingredient, break_data_hash
from .drawing import draw_placeholder, encode_image
from .edit_drawing import draw_edit
from .errors import json_response
from .fault_responses import garbage_generation
from .faults import breaks_credentials, stream_fault
from .image_requests import ImageRequest
from .models import (
    AUTO_BACKGROUND,
    input_image_tokens,
    resolved_quality,
    resolved_size,
    revised_prompt,
    usage,
)
from .state import EmulatorState, emulator_state
from .streaming import stream_images
from .sync_triggers import SyncTrigger, sync_trigger_for_prompt


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


@dataclass(frozen=True)
class SyncAnswers:
    """What differs between the synchronous routes' answers; the rest is `answer_generation`."""

    # How long a `url` answer's images stay downloadable, in seconds.
    url_lifetime: int
    # Sent with the images' 200.
    headers: Mapping[str, str]
    # The 200 body: (request, images, created) -> JSON object.
    body_for: Callable[[ImageRequest, list[GeneratedImage], int], dict[str, object]]
    # The 429: (retry_seconds, *, should_retry); `x-should-retry` only when should_retry is not
    # None.
    rate_limited: Callable[..., Response]
    server_error: Callable[[], Response]
    # The 400 of REFUSE, REFUSE_LEGACY and FILTER_OUTPUT: (trigger, created) -> answer.
    refused: Callable[[SyncTrigger, int], Response]


def answer_generation(
    image_request: ImageRequest, started: float, answers: SyncAnswers
) -> Response:
    """The answer to a valid synchronous request: the error its prompt trigger asks for, or the
    images in the route's body, once the configured latency has passed since `started` (a
    time.monotonic() value)."""
    # Guess: triggers act only on valid requests (the real gateway would throttle before it
    # validates, but the emulator needs a valid prompt to find the trigger in).
    trigger = sync_trigger_for_prompt(image_request.prompt)
    if trigger is not None:
        answer = _answer_trigger(trigger, image_request.prompt, started, answers)
        if answer is not None:
            return answer
    state = emulator_state()
    if image_request.stream:
        fault = stream_fault(state.fault_memory, image_request.prompt)
        picture = draw_image(image_request, 0, resolved_size(image_request.size))
        response = stream_images(
            image_request,
            picture,
            settings=resolved_settings(image_request),
            usage=request_usage(image_request),
            started=started,
            config=state.config,
            clock=state.store.clock,
            fault=fault,
            sign=lambda data: sign_image(state, image_request, data),
        )
        response.headers.update(answers.headers)
        return response
    images = generate_images(
        state,
        image_request,
        base_url=state.config.public_url or request.host_url,
        url_lifetime=answers.url_lifetime,
    )
    body = answers.body_for(image_request, images, int(state.store.clock()))
    wait_out_latency(started, state.config.latency)
    response = json_response(body)
    response.headers.update(answers.headers)
    return response


def _answer_trigger(
    trigger: SyncTrigger, prompt: str, started: float, answers: SyncAnswers
) -> Response | None:
    """The error a trigger asks for; None when it lets the request through."""
    state = emulator_state()
    once = (SyncTrigger.RATE_LIMIT_ONCE, SyncTrigger.SERVER_ERROR_ONCE)
    if trigger in once and not state.fault_memory.first_time(trigger.value, prompt):
        return None
    retry_seconds = state.config.rate_limit_retry_seconds
    if trigger in (SyncTrigger.RATE_LIMIT_ALWAYS, SyncTrigger.RATE_LIMIT_ONCE):
        return answers.rate_limited(retry_seconds)
    if trigger is SyncTrigger.NO_RETRY:
        return answers.rate_limited(retry_seconds, should_retry=False)
    if trigger is SyncTrigger.HANG:
        time.sleep(state.config.hang_seconds)
    if trigger in (SyncTrigger.SERVER_ERROR_ONCE, SyncTrigger.HANG, SyncTrigger.FAIL):
        return answers.server_error()
    # Stamped like a success's `created`: when the image was made, before the latency passes.
    created = int(state.store.clock())
    if trigger in (SyncTrigger.FILTER_OUTPUT, SyncTrigger.GARBAGE):
        # The image was generated, so the full latency has passed.
        wait_out_latency(started, state.config.latency)
    if trigger is SyncTrigger.GARBAGE:
        return garbage_generation(created)
    return answers.refused(trigger, created)


def gpt_image_body(
    image_request: ImageRequest, images: list[GeneratedImage], created: int, **resolved: object
) -> dict[str, object]:
    """A gpt-image 200 body: base64 only, no annotations, token usage (azure-image-apis.md
    §3.3, §4.3); `resolved` are the values a route reports between the images and `usage`."""
    return {
        "created": created,
        "data": [{"b64_json": image.b64_json} for image in images],
        **resolved,
        "usage": request_usage(image_request),
    }


def request_usage(image_request: ImageRequest) -> dict[str, object]:
    """The token usage of a gpt-image request, an edit's input images included."""
    image_tokens = sum(
        input_image_tokens(file.width, file.height, image_request.input_fidelity)
        for file in image_request.inputs
        if file.role == "image"
    )
    return usage(
        image_request.prompt,
        image_request.quality,
        image_request.size,
        image_request.n,
        image_tokens,
    )


def resolved_settings(image_request: ImageRequest) -> dict[str, object]:
    """The values a gpt-image model actually used, `auto` resolved (azure-image-apis.md §4.3):
    OpenAI's 200 body carries them, and so does every streamed event."""
    background = image_request.background
    return {
        "background": AUTO_BACKGROUND if background == "auto" else background,
        "output_format": image_request.output_format,
        "quality": resolved_quality(image_request.quality),
        "size": resolved_size(image_request.size),
    }


def image_data(image: GeneratedImage) -> dict[str, object]:
    """A DALL-E entry's image: its URL, or its base64 when the request asked for b64_json."""
    if image.url is not None:
        return {"url": image.url}
    return {"b64_json": image.b64_json}


def wait_out_latency(started: float, latency: float) -> None:
    """Sleep until `latency` seconds have passed since `started` (a time.monotonic() value).

    Counting from the start of the request, not from now, makes the answer take `latency`
    however long validation and drawing took (unless they alone took longer).
    """
    remaining = started + latency - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _render(image_request: ImageRequest, index: int, size: str) -> bytes:
    return sign_image(
        emulator_state(),
        image_request,
        encode_image(
            draw_image(image_request, index, size),
            image_request.output_format,
            image_request.output_compression,
        ),
    )


def sign_image(state: EmulatorState, image_request: ImageRequest, data: bytes) -> bytes:
    """`data`, an encoded final image of the request, with its Content Credentials: an edit's
    input images as ingredients; broken after signing when the prompt asks `[c2pa-broken]`."""
    ingredients = tuple(
        Ingredient(
            data=file.data,
            format=file.format,
            title=file.filename or f"input-{position + 1}.{file.format}",
        )
        for position, file in enumerate(image_request.inputs)
        if file.role == "image" and file.data
    )
    signed = state.content_signer.sign(
        data,
        image_request.output_format,
        model=image_request.model.name,
        ingredients=ingredients,
    )
    if breaks_credentials(image_request.prompt):
        return break_data_hash(signed, image_request.output_format)
    return signed


def draw_image(image_request: ImageRequest, index: int, size: str) -> Image.Image:
    """Image `index` of the request, before encoding: an edit's drawn from its inputs."""
    transparent = image_request.background == "transparent"
    model = image_request.model.name
    if not image_request.is_edit:
        return draw_placeholder(
            image_request.prompt,
            index,
            image_request.n,
            size,
            model=model,
            transparent=transparent,
        )
    images = [file.picture for file in image_request.inputs if file.role == "image"]
    masks = [file.picture for file in image_request.inputs if file.role == "mask"]
    return draw_edit(
        image_request.prompt,
        index,
        image_request.n,
        size,
        images=images,
        mask=masks[0] if masks else None,
        model=model,
        transparent=transparent,
    )
