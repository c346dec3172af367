"""Edits and streamed partial images through the synchronous providers, over real loopback HTTP.

Most tests run against `tests/independent_azure.py`, a server written from the protocol reference
and not from our emulator, which records each request as it came off the wire: so they assert
the exact bytes of every file part, the form fields, and how often a request was sent. Nothing
below the provider is mocked.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from PIL import Image

from app.image_models import AZURE, OPENAI, resolve_model
from app.providers import base
from app.providers.auth import AzureCredential
from app.providers.azure_deployment import AzureDeploymentProvider
from app.providers.base import GenerationRequest, InputImage, ProviderError
from app.providers.generations import GenerationsProvider
from app.providers.openai_images import OpenAIImagesProvider
from tests.helpers import EMULATOR_KEY, emulator_log
from tests.independent_azure import (
    KEY,
    Cut,
    IndependentAzure,
    Stall,
    Stream,
    completed_event,
    partial_event,
    running_independent_azure,
    sse,
)

API_VERSION = "2025-04-01-preview"
GPT_IMAGE_1, GPT_IMAGE_2 = "studio", "poster"  # the independent server's deployments
ROUTES = ("deployment", "v1", "openai")


@pytest.fixture
def azure() -> Iterator[IndependentAzure]:
    deployments = {GPT_IMAGE_1, GPT_IMAGE_2, "gpt-image-1", "gpt-image-2"}
    with running_independent_azure(deployments) as server:
        yield server


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "BACKOFF_BASE", 0.001)


ProviderFactory = Callable[..., GenerationsProvider]


@contextmanager
def providers(
    url: str, key: str, deployment: Callable[[str], str], generation_timeout: float
) -> Iterator[ProviderFactory]:
    """Makes providers on any of the three routes of the server at `url` (`family` names the
    model; `deployment(family)` the Azure deployment that serves it); closes their sessions."""
    sessions: list[requests.Session] = []

    def make(route: str = "deployment", family: str = "gpt-image-1", **limits: Any):
        session = requests.Session()
        sessions.append(session)
        limits = {
            "read_timeout": 5.0,
            "generation_timeout": generation_timeout,
            "session": session,
            **limits,
        }
        if route == "openai":
            return OpenAIImagesProvider(url + "v1/", key, resolve_model(family, OPENAI), **limits)
        return AzureDeploymentProvider(
            url + ("openai/v1/" if route == "v1" else ""),
            deployment(family),
            resolve_model(family, AZURE),
            AzureCredential(api_key=key),
            API_VERSION,
            v1=route == "v1",
            **limits,
        )

    yield make
    for session in sessions:
        session.close()


@pytest.fixture
def make_provider(azure: IndependentAzure) -> Iterator[ProviderFactory]:
    def deployment(family: str) -> str:
        return GPT_IMAGE_1 if family == "gpt-image-1" else GPT_IMAGE_2

    with providers(azure.url, KEY, deployment, generation_timeout=10.0) as make:
        yield make


def picture(colour: tuple[int, int, int], kind: str = "PNG", size=(32, 24)) -> bytes:
    out = io.BytesIO()
    mode = "RGBA" if kind == "PNG" else "RGB"
    Image.new(mode, size, (*colour, 255)[: len(mode)]).save(out, kind)
    return out.getvalue()


def image(colour: tuple[int, int, int] = (200, 30, 30), kind: str = "PNG") -> InputImage:
    content_type = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[kind]
    return InputImage("image", picture(colour, kind), content_type)


def mask() -> InputImage:
    out = io.BytesIO()
    Image.new("RGBA", (32, 24), (0, 0, 0, 0)).save(out, "PNG")
    return InputImage("mask", out.getvalue(), "image/png")


def request(**fields: Any) -> GenerationRequest:
    values: dict[str, Any] = {"prompt": "make the sky stormy", "size": "1024x1024", "n": 1}
    values["options"] = {}
    values.update(fields)
    return GenerationRequest(**values)


def raised_by(provider: GenerationsProvider, generation: GenerationRequest) -> ProviderError:
    """The ProviderError that `provider` raises for `generation` (the test fails if none)."""
    with pytest.raises(ProviderError) as raised:
        provider.generate(generation)
    return raised.value


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decoded(b64: str | None) -> bytes:
    assert b64 is not None
    return base64.b64decode(b64)


class Partials(list):
    """An on_partial callback that records (index, bytes)."""

    def __call__(self, index: int, data: bytes) -> None:
        self.append((index, data))


# --- edits on every route -------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_an_edit_posts_multipart_to_the_routes_edits_path_with_the_exact_bytes(
    azure, make_provider, route
):
    first = image()
    generation = make_provider(route).generate(request(inputs=(first,)))

    (seen,) = azure.posts()
    expected_path = {
        "deployment": f"/openai/deployments/{GPT_IMAGE_1}/images/edits",
        "v1": "/openai/v1/images/edits",
        "openai": "/v1/images/edits",
    }[route]
    assert seen.path == expected_path
    assert seen.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert seen.field("prompt") == "make the sky stormy"
    assert (seen.field("n"), seen.field("size")) == ("1", "1024x1024")
    assert (
        seen.field("model")
        == {"deployment": None, "v1": GPT_IMAGE_1, "openai": "gpt-image-1"}[route]
    )
    (part,) = seen.files
    assert (part.name, part.filename, part.content_type) == ("image", "image-0.png", "image/png")
    assert part.sha256 == sha(first.data)
    assert Image.open(io.BytesIO(decoded(generation.slots[0].b64_json))).size == (1024, 1024)
    assert generation.usage["input_tokens_details"]["image_tokens"] == 40


def test_the_deployment_route_sends_its_api_version_and_the_api_key_only(azure, make_provider):
    make_provider("deployment").generate(request(inputs=(image(),)))

    (seen,) = azure.posts()
    assert seen.query == {"api-version": [API_VERSION]}
    assert seen.headers["api-key"] == KEY
    assert "authorization" not in seen.headers


def test_several_images_go_as_image_brackets_in_order_then_the_mask(azure, make_provider):
    inputs = (image((255, 0, 0)), image((0, 255, 0), "JPEG"), image((0, 0, 255), "WEBP"), mask())

    make_provider("v1").generate(request(inputs=inputs))

    (seen,) = azure.posts()
    assert [(part.name, part.filename, part.content_type) for part in seen.files] == [
        ("image[]", "image-0.png", "image/png"),
        ("image[]", "image-1.jpg", "image/jpeg"),
        ("image[]", "image-2.webp", "image/webp"),
        ("mask", "mask.png", "image/png"),
    ]
    assert [part.sha256 for part in seen.files] == [sha(item.data) for item in inputs]


def test_bytes_are_sent_exactly_even_when_they_look_like_multipart_framing(azure, make_provider):
    tricky = InputImage(
        "image", picture((1, 2, 3)) + b"\r\n--boundary\r\n\r\n\x00\xff", "image/png"
    )

    make_provider("openai").generate(request(inputs=(tricky, mask())))

    (seen,) = azure.posts()
    assert seen.files[0].data == tricky.data


def test_the_same_edit_options_a_generation_takes_are_sent_as_form_text(azure, make_provider):
    options = {"quality": "high", "output_format": "jpeg", "output_compression": 70}

    make_provider("deployment").generate(request(inputs=(image(),), options=options))

    (seen,) = azure.posts()
    assert seen.fields == {
        "prompt": ["make the sky stormy"],
        "n": ["1"],
        "size": ["1024x1024"],
        "quality": ["high"],
        "output_format": ["jpeg"],
        "output_compression": ["70"],
    }


# --- input_fidelity ---------------------------------------------------------------------------


def test_high_input_fidelity_is_sent_on_a_gpt_image_1_edit(azure, make_provider):
    make_provider("v1").generate(request(inputs=(image(),), options={"input_fidelity": "high"}))

    assert azure.posts()[0].field("input_fidelity") == "high"


def test_input_fidelity_is_never_sent_with_a_generation(azure, make_provider):
    make_provider("v1").generate(request(options={"input_fidelity": "high"}))

    assert "input_fidelity" not in azure.posts()[0].json


def test_the_default_low_input_fidelity_is_not_sent(azure, make_provider):
    make_provider("v1").generate(request(inputs=(image(),), options={"input_fidelity": "low"}))

    assert "input_fidelity" not in azure.posts()[0].fields


def test_gpt_image_2_never_sends_input_fidelity(azure, make_provider):
    provider = make_provider("v1", family="gpt-image-2")

    provider.generate(request(inputs=(image(),), options={"input_fidelity": "high"}))

    assert azure.posts()[0].field("model") == GPT_IMAGE_2
    assert "input_fidelity" not in azure.posts()[0].fields


def test_moderation_goes_with_a_generation_but_not_with_an_edit(azure, make_provider):
    provider = make_provider("v1")

    provider.generate(request(options={"moderation": "low"}))
    provider.generate(request(inputs=(image(),), options={"moderation": "low"}))

    generation, edit = azure.posts()
    assert generation.json["moderation"] == "low"
    assert "moderation" not in edit.fields


# --- what is refused before anything is sent ------------------------------------------------


def test_a_dall_e_model_cannot_edit_and_nothing_is_sent(azure):
    provider = OpenAIImagesProvider(azure.url + "v1/", KEY, resolve_model("dall-e-3", OPENAI))

    error = raised_by(provider, request(inputs=(image(),)))

    assert error.code == "edits_unsupported"
    assert "dall-e-3 cannot edit" in error.message
    assert azure.received == []


@pytest.mark.parametrize(
    "inputs",
    [(mask(),), (image(), mask(), mask()), (InputImage("reference", b"x", "image/png"),)],
    ids=["mask-only", "two-masks", "unknown-role"],
)
def test_inputs_that_are_not_images_then_one_mask_are_refused_before_sending(
    azure, make_provider, inputs
):
    error = raised_by(make_provider(), request(inputs=inputs))

    assert error.code == "invalid_inputs"
    assert azure.received == []


def test_an_input_of_another_type_is_refused_before_sending(azure, make_provider):
    gif = InputImage("image", b"GIF89a...", "image/gif")

    error = raised_by(make_provider(), request(inputs=(gif,)))

    assert error.code == "invalid_inputs" and "image/gif" in error.message
    assert azure.received == []


# --- retries: the same rules as generations -------------------------------------------------


def test_a_rate_limited_edit_is_sent_again_with_the_same_bytes(azure, make_provider, no_backoff):
    azure.failures = [(429, {"error": {"code": "429", "message": "Slow down."}})]
    inputs = (image(), mask())

    make_provider().generate(request(inputs=inputs))

    assert len(azure.posts()) == 2
    assert [part.data for part in azure.posts()[1].files] == [item.data for item in inputs]


def test_an_edit_without_an_answer_in_time_is_not_sent_again(azure, make_provider):
    azure.answer_delay = 2.0

    error = raised_by(make_provider(generation_timeout=0.3), request(inputs=(image(),)))

    assert error.code == "unknown_outcome"
    assert not error.retryable
    assert len(azure.posts()) == 1


# --- when to stream -------------------------------------------------------------------------


def test_a_generation_without_previews_sends_neither_stream_nor_partial_images(
    azure, make_provider
):
    make_provider().generate(request(options={"partial_images": 0}))

    assert not {"stream", "partial_images"} & set(azure.posts()[0].json)


def test_more_than_one_image_is_not_streamed(azure, make_provider):
    generation = make_provider().generate(request(n=2, options={"partial_images": 2}))

    assert not {"stream", "partial_images"} & set(azure.posts()[0].json)
    assert len(generation.slots) == 2


def test_an_edit_of_more_than_one_image_is_not_streamed(azure, make_provider):
    make_provider().generate(request(n=3, inputs=(image(),), options={"partial_images": 1}))

    assert not {"stream", "partial_images"} & set(azure.posts()[0].fields)


# --- streaming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_a_streamed_generation_hands_each_partial_image_over_in_order(azure, make_provider, route):
    partials = Partials()

    generation = make_provider(route, family="gpt-image-2").generate(
        request(options={"partial_images": 2}, on_partial=partials)
    )

    body = azure.posts()[0].json
    assert (body["stream"], body["partial_images"]) == (True, 2)
    assert [index for index, _ in partials] == [0, 1]
    colours = [Image.open(io.BytesIO(data)).getpixel((0, 0)) for _, data in partials]
    assert colours == [(40, 60, 90), (80, 60, 90)]  # the server's two partial frames
    (slot,) = generation.slots
    assert Image.open(io.BytesIO(decoded(slot.b64_json))).getpixel((0, 0)) == (20, 120, 200)
    assert generation.usage["total_tokens"] == 1106


@pytest.mark.parametrize("route", ROUTES)
def test_a_streamed_edit_sends_stream_as_form_fields_and_reads_image_edit_events(
    azure, make_provider, route
):
    partials = Partials()
    first = image()

    generation = make_provider(route).generate(
        request(inputs=(first,), options={"partial_images": 3}, on_partial=partials)
    )

    (seen,) = azure.posts()
    assert (seen.field("stream"), seen.field("partial_images")) == ("true", "3")
    assert seen.files[0].data == first.data
    assert [index for index, _ in partials] == [0, 1, 2]
    assert generation.slots[0].b64_json


def test_a_stream_without_an_on_partial_callback_still_returns_the_image(azure, make_provider):
    generation = make_provider().generate(request(options={"partial_images": 1}))

    assert Image.open(io.BytesIO(decoded(generation.slots[0].b64_json))).size == (1024, 1024)


def test_data_only_events_crlf_lines_comments_and_done_are_understood(azure, make_provider):
    def script(stream: Stream):
        yield b": keep-alive\r\n\r\n"
        yield partial_event(stream, 0, named=False).replace(b"\n", b"\r\n")
        yield b": still working\r\n\r\nretry: 1000\r\nid: 7\r\n\r\n"
        yield completed_event(stream, named=False).replace(b"\n", b"\r\n")
        yield b"data: [DONE]\r\n\r\n"

    azure.stream_script = script
    azure.chunked = False  # a body that simply ends when the server closes
    partials = Partials()

    generation = make_provider().generate(
        request(options={"partial_images": 1}, on_partial=partials)
    )

    assert [index for index, _ in partials] == [0]
    assert generation.usage["output_tokens"] == 1056


def test_an_event_split_across_many_small_writes_is_read_whole(azure, make_provider):
    def script(stream: Stream):
        for event in (partial_event(stream, 0), completed_event(stream)):
            event = event.replace(b"\n", b"\r\n")
            for start in range(0, len(event), 7):  # splits CRLFs and the JSON anywhere
                yield event[start : start + 7]

    azure.stream_script = script
    partials = Partials()

    generation = make_provider().generate(
        request(options={"partial_images": 1}, on_partial=partials)
    )

    assert len(partials) == 1 and generation.slots[0].b64_json


def test_the_final_image_before_the_last_partial_ends_the_call_at_once(azure, make_provider):
    def script(stream: Stream):
        yield partial_event(stream, 0)
        yield completed_event(stream)
        yield Stall(30)  # the partials still to come are not waited for
        yield partial_event(stream, 1)

    azure.stream_script = script
    partials = Partials()
    started = time.monotonic()

    generation = make_provider().generate(
        request(options={"partial_images": 2}, on_partial=partials)
    )

    assert time.monotonic() - started < 5
    assert [index for index, _ in partials] == [0]
    assert generation.slots[0].b64_json


def test_an_exception_from_on_partial_leaves_generate_unchanged(azure, make_provider):
    class LeaseLost(Exception):
        pass

    lost = LeaseLost("another worker took the job")

    def on_partial(index: int, data: bytes) -> None:
        raise lost

    with pytest.raises(LeaseLost) as raised:
        make_provider().generate(request(options={"partial_images": 2}, on_partial=on_partial))

    assert raised.value is lost
    assert len(azure.posts()) == 1


def test_a_server_that_answers_json_to_a_stream_request_still_gives_the_image(azure, make_provider):
    azure.ignores_stream = True
    partials = Partials()

    generation = make_provider().generate(
        request(options={"partial_images": 2}, on_partial=partials)
    )

    assert azure.posts()[0].json["stream"] is True
    assert partials == [] and generation.slots[0].b64_json


# --- broken streams -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunked", "cut"),
    [(True, Cut()), (False, Cut()), (True, Cut(reset=True)), (False, None)],
    ids=["chunked-cut", "close-delimited-cut", "reset", "ends-without-completed"],
)
def test_a_stream_cut_after_it_began_is_stream_interrupted_and_not_sent_again(
    azure, make_provider, no_backoff, chunked, cut
):
    def script(stream: Stream):
        yield partial_event(stream, 0)
        if cut is not None:
            yield cut

    azure.stream_script = script
    azure.chunked = chunked
    partials = Partials()

    error = raised_by(make_provider(), request(options={"partial_images": 2}, on_partial=partials))

    assert error.code == "stream_interrupted"
    assert not error.retryable
    assert "may already have been billed" in error.message and "Retry" in error.message
    assert len(partials) == 1
    assert len(azure.posts()) == 1


def test_a_done_before_the_completed_event_is_stream_interrupted(azure, make_provider):
    def script(stream: Stream):
        yield partial_event(stream, 0)
        yield sse("[DONE]")

    azure.stream_script = script

    error = raised_by(make_provider(), request(options={"partial_images": 1}))

    assert error.code == "stream_interrupted"
    assert "ended before the finished image arrived" in error.message


def test_a_stalled_stream_is_stream_interrupted_within_the_read_timeout(azure, make_provider):
    def script(stream: Stream):
        yield partial_event(stream, 0)
        yield Stall(30)
        yield completed_event(stream)

    azure.stream_script = script
    started = time.monotonic()

    error = raised_by(
        make_provider(read_timeout=1, generation_timeout=30), request(options={"partial_images": 1})
    )

    assert time.monotonic() - started < 5
    assert error.code == "stream_interrupted"
    assert "nothing arrived for 1 s" in error.message
    assert len(azure.posts()) == 1


def test_a_stream_whose_answer_does_not_begin_within_the_read_timeout_is_not_sent_again(
    azure, make_provider
):
    azure.answer_delay = 2.0

    error = raised_by(
        make_provider(read_timeout=0.3, generation_timeout=30),
        request(options={"partial_images": 1}),
    )

    assert error.code == "unknown_outcome" and not error.retryable
    assert len(azure.posts()) == 1


def test_a_stream_that_keeps_trickling_ends_at_the_generation_timeout(azure, make_provider):
    def script(stream: Stream):
        yield partial_event(stream, 0)
        for _ in range(600):
            yield b": keep-alive\n\n"
            yield Stall(0.05)

    azure.stream_script = script
    started = time.monotonic()

    error = raised_by(
        make_provider(read_timeout=5, generation_timeout=0.8),
        request(options={"partial_images": 1}),
    )

    assert time.monotonic() - started < 3
    assert error.code == "stream_interrupted"
    assert "generation timeout" in error.message


@pytest.mark.parametrize(
    "payload",
    ["{not json", '["a", "list"]', '{"type": "image_generation.partial_image"}'],
    ids=["not-json", "not-an-object", "partial-without-image"],
)
def test_an_unreadable_event_is_stream_interrupted(azure, make_provider, payload):
    azure.stream_script = lambda stream: [sse(payload, "image_generation.partial_image")]

    error = raised_by(make_provider(), request(options={"partial_images": 1}))

    assert error.code == "stream_interrupted"


@pytest.mark.parametrize(
    "body",
    [b"data: " + b"A" * 200_000 + b"\n\n", b"data: AAAAAAAA\n" * 40_000 + b"\n"],
    ids=["one-long-line", "many-data-lines"],
)
def test_an_event_larger_than_an_image_may_be_is_stream_interrupted(azure, make_provider, body):
    azure.stream_script = lambda stream: [body]

    error = raised_by(make_provider(max_image_bytes=1000), request(options={"partial_images": 1}))

    assert error.code == "stream_interrupted"
    assert "larger than" in error.message


def test_an_event_that_is_not_utf_8_is_stream_interrupted(azure, make_provider):
    azure.stream_script = lambda stream: [b"event: image_generation.completed\ndata: \xff\xfe\n\n"]

    error = raised_by(make_provider(), request(options={"partial_images": 1}))

    assert error.code == "stream_interrupted"
    assert "not UTF-8" in error.message


# --- error events -------------------------------------------------------------------------------

REFUSAL = {
    "code": "content_policy_violation",
    "message": "Your request was rejected as a result of our safety system.",
    "type": "invalid_request_error",
    "inner_error": {
        "code": "ResponsibleAIPolicyViolation",
        "content_filter_results": {"violence": {"filtered": True, "severity": "high"}},
    },
}


@pytest.mark.parametrize(
    "event",
    [sse({"error": REFUSAL}, "error"), sse({**REFUSAL, "type": "error"}), sse({"error": REFUSAL})],
    ids=["error-event", "type-error", "data-with-error"],
)
def test_a_refusal_in_the_stream_is_the_usual_content_filter_refusal(azure, make_provider, event):
    azure.stream_script = lambda stream: [partial_event(stream, 0), event]

    error = raised_by(make_provider(), request(options={"partial_images": 2}))

    assert error.code == "contentFilter"
    assert error.message.startswith("Azure refused this prompt: Your request was rejected")
    assert "(flagged: violence)" in error.message
    assert not error.retryable
    assert len(azure.posts()) == 1


def test_another_error_in_the_stream_keeps_its_code_and_message_and_is_final(azure, make_provider):
    failure = {"error": {"code": "server_error", "message": "The image could not be finished."}}
    azure.stream_script = lambda stream: [sse(failure, "error")]

    error = raised_by(make_provider(), request(options={"partial_images": 1}))

    assert error.code == "server_error"
    assert error.message == "Azure stopped making the image: The image could not be finished."
    assert not error.retryable
    assert len(azure.posts()) == 1


def test_a_refusal_before_the_stream_begins_is_an_ordinary_error_answer(azure, make_provider):
    azure.failures = [(400, {"error": REFUSAL})]

    error = raised_by(make_provider(), request(options={"partial_images": 1}))

    assert error.code == "contentFilter"
    assert error.status == 400


# --- against our emulator (the same provider code, the emulator's edits and streams) ---------


@pytest.fixture
def make_emulated(emulator) -> Iterator[ProviderFactory]:
    """Providers for the emulator's three routes; its deployments are named as their models."""
    with providers(emulator.url, EMULATOR_KEY, str, generation_timeout=20.0) as make:
        yield make


def emulator_posts(emulator) -> list[dict[str, Any]]:
    return [entry for entry in emulator_log(emulator) if entry["method"] == "POST"]


def pixel(b64: str | None, where: tuple[int, int]) -> tuple[int, ...]:
    return Image.open(io.BytesIO(decoded(b64))).convert("RGB").getpixel(where)


@pytest.mark.parametrize("route", ROUTES)
def test_the_emulator_receives_an_edits_exact_files_on_every_route(emulator, make_emulated, route):
    inputs = (image((250, 250, 250)), image((0, 0, 255), "JPEG"), mask())
    provider = make_emulated(route)

    generation = provider.generate(request(inputs=inputs, options={"input_fidelity": "high"}))

    (entry,) = emulator_posts(emulator)
    assert entry["path"].endswith("/images/edits") and entry["status"] == 200
    assert [(part["role"], part["field"]) for part in entry["files"]] == [
        ("image", "image[]"),
        ("image", "image[]"),
        ("mask", "mask"),
    ]
    assert [part["sha256"] for part in entry["files"]] == [sha(item.data) for item in inputs]
    assert [part["content_type"] for part in entry["files"]] == [i.content_type for i in inputs]
    assert entry["fields"]["input_fidelity"] == "high"
    assert Image.open(io.BytesIO(decoded(generation.slots[0].b64_json))).size == (1024, 1024)


def test_the_emulator_draws_the_first_image_into_the_edit(emulator, make_emulated):
    green = image((0, 200, 0))

    generation = make_emulated("v1").generate(request(inputs=(green,)))

    red, green_value, blue = pixel(generation.slots[0].b64_json, (512, 512))
    assert green_value > 150 and red < 80 and blue < 80


def test_a_gpt_image_2_edit_on_the_emulator_works_because_input_fidelity_is_not_sent(
    emulator, make_emulated
):
    provider = make_emulated("v1", family="gpt-image-2")

    provider.generate(request(inputs=(image(),), options={"input_fidelity": "high"}))

    (entry,) = emulator_posts(emulator)
    assert entry["status"] == 200 and "input_fidelity" not in entry["fields"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("edit", [False, True], ids=["generation", "edit"])
def test_the_emulator_streams_partial_images_in_order_then_the_final_one(
    emulator, make_emulated, route, edit
):
    partials = Partials()
    inputs = (image(),) if edit else ()

    generation = make_emulated(route).generate(
        request(inputs=inputs, options={"partial_images": 2}, on_partial=partials)
    )

    assert [index for index, _ in partials] == [0, 1]
    for _, data in partials:
        assert Image.open(io.BytesIO(data)).size == (1024, 1024)
    final = decoded(generation.slots[0].b64_json)
    assert Image.open(io.BytesIO(final)).size == (1024, 1024)
    assert final not in [data for _, data in partials]
    assert generation.usage["total_tokens"] > 0
    assert len(emulator_posts(emulator)) == 1


def test_a_stream_the_emulator_cuts_is_stream_interrupted_and_not_sent_again(
    emulator, make_emulated
):
    partials = Partials()

    error = raised_by(
        make_emulated(),
        request(
            prompt="a harbour [stream-cut]",
            inputs=(image(),),
            options={"partial_images": 2},
            on_partial=partials,
        ),
    )

    assert error.code == "stream_interrupted" and not error.retryable
    assert len(partials) == 1
    assert len(emulator_posts(emulator)) == 1


def test_a_slow_emulator_stream_is_stream_interrupted_within_the_read_timeout(
    emulator, make_emulated, monkeypatch
):
    # The emulator encodes every frame before it answers, which takes a while on a busy
    # machine: the read timeout leaves room for that, the pause between events does not fit it.
    monkeypatch.setattr(emulator.config, "slow_seconds", 15.0)
    started = time.monotonic()

    error = raised_by(
        make_emulated(read_timeout=3),
        request(prompt="a harbour [stream-slow]", options={"partial_images": 2}),
    )

    assert error.code == "stream_interrupted"
    assert "nothing arrived for 3 s" in error.message
    assert time.monotonic() - started < 10
    assert len(emulator_posts(emulator)) == 1


def test_an_error_event_from_the_emulator_is_final_with_its_code(emulator, make_emulated):
    error = raised_by(
        make_emulated("openai"),
        request(prompt="a harbour [stream-error]", options={"partial_images": 2}),
    )

    assert error.code == "server_error" and not error.retryable
    assert error.message.startswith("OpenAI stopped making the image")
    assert len(emulator_posts(emulator)) == 1
