"""The synchronous image APIs' shared shape: one POST whose answer holds the images.

Azure's deployment route (azure-image-apis.md §3), its v1 route (§3.6) and OpenAI's `/v1/images`
(§4) take the same fields and answer `{"created", "data": [...], "usage"?}`; the subclasses differ
only in URLs, credentials and how they explain errors. A request with input images is an edit:
the same fields as multipart/form-data to `images/edits`, with the files (§3.2, §9). With
`partial_images` above 0, one image asked for and a model that streams, the answer is a stream
of server-sent events (§3.5): partial images, then the finished one.

The POST is never repeated after it may have been sent (a read timeout has an unknown outcome and
could bill twice; a stream that breaks after it began is `stream_interrupted`); 429 and 5xx
answers, which did not generate anything, are retried a bounded number of times.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

import requests

from app.image_models import ImageModel
from app.providers.base import (
    IMAGE_ROLE,
    MASK_ROLE,
    Generation,
    GenerationRequest,
    ImageSlot,
    InputImage,
    ProviderError,
    json_object,
    parse_slots,
    send,
    stream_error,
    stream_interrupted,
)
from app.providers.download import ImageFetcher, pooled_session
from app.providers.events import Event, StreamBroke, read_events

GENERATE_ATTEMPTS = 3
SAFETY_ID_CHARS = 32  # OpenAI documents 64 characters at most for safety_identifier


def end_user_id(secret_key: str, owner_id: int | None) -> str | None:
    """The stable, salted hash of an account id that requests carry for abuse reports: the same
    account always maps to the same value, and the value reveals nothing about who it is."""
    if owner_id is None:
        return None
    digest = hmac.new(secret_key.encode(), f"safety-identifier:{owner_id}".encode(), "sha256")
    return "atelier-" + digest.hexdigest()[:SAFETY_ID_CHARS]


# Lossless PNG has no compression level in these APIs; sending one is refused upstream.
COMPRESSIBLE_FORMATS = ("jpeg", "webp")
# Options that are not plain fields: sent only with a stream, or only with an edit.
PARTIAL_IMAGES, INPUT_FIDELITY = "partial_images", "input_fidelity"
FILE_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
EVENT_STREAM = "text/event-stream"
# Room for the JSON around an event's base64 image.
EVENT_OVERHEAD_BYTES = 64 * 1024


class GenerationsProvider:
    synchronous = True
    service = "The image service"
    # Where the end user's hashed id goes for gpt-image models. Guess (§3.2 lists only `user` for
    # Azure; `safety_identifier` is OpenAI's, §9): Azure gets `user`. DALL-E always gets `user`.
    safety_field = "user"

    def __init__(
        self,
        images_url: str,
        model: ImageModel,
        *,
        fetch_origin: str,
        read_timeout: float = 60.0,
        generation_timeout: float = 300.0,
        max_image_bytes: int = 50 * 1024 * 1024,
        session: requests.Session | None = None,
    ) -> None:
        """`images_url`: where the routes live, ending in `images/` (`generations`, `edits`)."""
        self.url = f"{images_url}generations"
        self.edits_url = f"{images_url}edits"
        self.model = model
        self.read_timeout = read_timeout
        self.generation_timeout = generation_timeout
        self.max_image_bytes = max_image_bytes
        self._session = session or pooled_session()
        self._fetcher = ImageFetcher(
            self._session, fetch_origin, read_timeout=read_timeout, max_image_bytes=max_image_bytes
        )

    def __repr__(self) -> str:  # never show credentials
        return f"{type(self).__name__}(url={self.url!r}, model={self.model.name!r})"

    def generate(self, request: GenerationRequest) -> Generation:
        deadline = time.monotonic() + self.generation_timeout
        streaming = self._streams(request)
        fields = self._fields(request, streaming=streaming)
        if request.inputs:
            url = self.edits_url
            payload: dict[str, Any] = {
                "data": [(name, _form_value(value)) for name, value in fields.items()],
                "files": self._files(request.inputs),
            }
        else:
            url, payload = self.url, {"json": fields}
        response = send(
            self._session,
            "POST",
            url,
            params=self._params(),
            headers=self._headers(),
            read_timeout=self.generation_timeout,
            attempts=GENERATE_ATTEMPTS,
            describe=self._describe,
            idempotent=False,
            stream=streaming,
            **payload,
        )
        if streaming:
            with response:  # the connection is closed however the stream ends
                return self._read_stream(response, request, deadline)
        return self._generation(response)

    def fetch_image(self, slot: ImageSlot) -> bytes:
        return self._fetcher.fetch(slot)

    def _streams(self, request: GenerationRequest) -> bool:
        """Stream only for previews of a single image: one stream answers with one image."""
        partial_images = request.options.get(PARTIAL_IMAGES, 0)
        return (
            self.model.streams
            and request.n == 1
            and isinstance(partial_images, int)
            and partial_images > 0
        )

    def _fields(self, request: GenerationRequest, *, streaming: bool) -> dict[str, Any]:
        """The request's fields, the same for a JSON body and an edit's form."""
        options = request.options
        fields: dict[str, Any] = {"prompt": request.prompt, "n": request.n, "size": request.size}
        for option in self.model.options:
            if option.name not in options or option.name == PARTIAL_IMAGES:
                continue
            if option.name == INPUT_FIDELITY and not request.inputs:
                continue  # §3.2: a field of edits only
            if (
                option.name == "output_compression"
                and options.get("output_format") not in COMPRESSIBLE_FORMATS
            ):
                continue
            if not option.send_default and options[option.name] == option.default:
                continue
            fields[option.name] = options[option.name]
        if request.end_user:
            fields[self.safety_field if self.model.gpt_image else "user"] = request.end_user
        if streaming:
            fields["stream"] = True
            fields[PARTIAL_IMAGES] = options[PARTIAL_IMAGES]
        return fields

    def _files(self, inputs: tuple[InputImage, ...]) -> list[tuple[str, tuple[str, bytes, str]]]:
        """The multipart file parts: each image, then the mask, with a name and its type.

        Guess (§3.2 says "`image` (or several)", §9 "one file or a list"): one image goes as
        `image`; several as `image[]`, the name openai-python gives each file of a list (its
        multipart encoding uses array_format="brackets"), which Azure-focused clients rely on.
        """
        if not self.model.edits:
            raise ProviderError(
                "edits_unsupported",
                f"{self.model.name} cannot edit images; choose a gpt-image model.",
            )
        images = [item for item in inputs if item.role == IMAGE_ROLE]
        masks = [item for item in inputs if item.role == MASK_ROLE]
        if not images or len(masks) > 1 or len(images) + len(masks) != len(inputs):
            raise ProviderError(
                "invalid_inputs",
                "An edit needs one or more images and at most one mask; nothing was sent.",
            )
        image_field = "image" if len(images) == 1 else "image[]"
        parts = [
            (image_field, (_file_name(f"image-{index}", item), item.data, item.content_type))
            for index, item in enumerate(images)
        ]
        parts += [
            ("mask", (_file_name("mask", item), item.data, item.content_type)) for item in masks
        ]
        return parts

    def _generation(self, response: requests.Response) -> Generation:
        """The images and usage of a JSON answer."""
        try:
            body = json_object(response, self.service)
        except ProviderError as error:
            # The generation happened (and was billed) but its answer is unreadable; sending it
            # again would bill again, so this is final.
            error.retryable = False
            raise
        slots = parse_slots(body.get("data"))
        if not slots:
            raise ProviderError(
                "empty_result", f"{self.service} answered without any image.", retryable=False
            )
        usage = body.get("usage")
        return Generation(slots=slots, usage=usage if isinstance(usage, dict) else None)

    def _read_stream(
        self, response: requests.Response, request: GenerationRequest, deadline: float
    ) -> Generation:
        """Partial images to `on_partial` as they come; the completed event's image is the one
        result. The finished image may come before every partial one has (§9): it ends the call.
        """
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != EVENT_STREAM:
            # Guess: a server that does not stream answers as usual, with the whole JSON.
            try:
                response.content  # noqa: B018  (reads the body within the read timeout)
            except requests.RequestException as error:
                raise stream_interrupted(
                    self.service, f"its answer broke off ({type(error).__name__})"
                ) from None
            return self._generation(response)
        events = read_events(
            response,
            read_timeout=self.read_timeout,
            deadline=deadline,
            max_event_bytes=self.max_image_bytes * 4 // 3 + EVENT_OVERHEAD_BYTES,
        )
        partials = 0
        try:
            for event in events:
                payload = self._event_payload(event)
                if payload is None:
                    break  # `[DONE]`
                kind = str(payload.get("type") or event.name or "")
                if kind.endswith(".partial_image"):
                    index = payload.get("partial_image_index")
                    index = index if isinstance(index, int) else partials
                    image = self._event_image(payload, "a partial image")
                    partials += 1
                    if request.on_partial is not None:
                        request.on_partial(index, image)
                elif kind.endswith(".completed"):
                    self._event_image(payload, "the finished image")
                    usage = payload.get("usage")
                    return Generation(
                        slots=[ImageSlot(index=0, b64_json=payload["b64_json"])],
                        usage=usage if isinstance(usage, dict) else None,
                    )
                # Other event types (progress notes a newer API may add) carry no image.
        except StreamBroke as broke:
            raise stream_interrupted(self.service, str(broke)) from None
        raise stream_interrupted(self.service, "it ended before the finished image arrived")

    def _event_payload(self, event: Event) -> dict[str, Any] | None:
        """The JSON object an event carries (None for `[DONE]`); an error event is raised."""
        if event.data.strip() == "[DONE]":
            return None
        try:
            payload = json.loads(event.data)
        except ValueError:
            raise StreamBroke("it sent an event that is not JSON") from None
        if not isinstance(payload, dict):
            raise StreamBroke("it sent an event that is not a JSON object")
        error = payload.get("error")
        if isinstance(error, dict):
            raise stream_error(error, self.service)
        if event.name == "error" or payload.get("type") == "error":
            raise stream_error(payload, self.service)
        return payload

    def _event_image(self, payload: dict[str, Any], what: str) -> bytes:
        data = payload.get("b64_json")
        if not isinstance(data, str) or not data:
            raise StreamBroke(f"{what} came without its image data")
        try:
            return self._fetcher.fetch(ImageSlot(index=0, b64_json=data))
        except ProviderError as error:
            raise StreamBroke(f"{what} could not be read ({error.message})") from None

    def _params(self) -> dict[str, str]:
        return {}

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _describe(self, response: requests.Response) -> ProviderError:
        raise NotImplementedError


def _form_value(value: Any) -> str:
    """A field as multipart text: JSON's spelling for booleans, as openai-python sends them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _file_name(stem: str, item: InputImage) -> str:
    extension = FILE_EXTENSIONS.get(item.content_type)
    if extension is None:
        raise ProviderError(
            "invalid_inputs",
            f"An input of type {item.content_type!r} cannot be sent; use PNG, JPEG or WebP.",
        )
    return f"{stem}.{extension}"
