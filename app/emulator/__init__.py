"""Atelier's built-in Azure OpenAI emulator: a real HTTP server for Azure's image APIs.

Atelier's real HTTP client talks to it over loopback in demos and tests, so everything
between "submit" and "image on disk" runs for real. It speaks three APIs, as described in
shared/reference/azure-image-apis.md. Every behaviour that reference marks UNCONFIRMED, or
that had to be invented, is commented `# Guess (...)` where it is implemented.

- Azure's retired asynchronous DALL-E 2 API (async_api.py): `POST
  /openai/images/generations:submit`, then poll or delete `/openai/operations/images/{id}`;
  api-versions 2023-06-01-preview to 2023-10-01-preview.
- Azure's synchronous deployment API (sync_api.py): `POST
  /openai/deployments/{deployment}/images/generations?api-version=V` (2023-12-01-preview and
  later); each configured deployment serves one model (models.py: dall-e-2, dall-e-3,
  gpt-image-1, gpt-image-1-mini, gpt-image-1.5, and the gpt-image-2 family: gpt-image-2,
  gpt-image-2-2026-04-21, gpt-image-2.5-sunburst, gpt-image-2.5-flare (each also with its
  -2026-09-08 snapshot), gpt-image-2.6-sunburst, gpt-image-2.6-flare, chatgpt-image-latest).
- Azure's v1 route (azure_v1_api.py): `POST /openai/v1/images/generations`, the deployment's
  name in the body's `model`; `api-version` optional (`preview`, `v1` or a dated version).
  Same key check, validation, triggers and answers as the deployment route, except that a
  bearer value must be the api key or look like a JWT (the plain OpenAI client sends the key
  as a bearer there).
- OpenAI's own API (openai_api.py): `POST /v1/images/generations` with `Authorization: Bearer
  <openai key>`; the model comes from the body.
- Image edits on all three synchronous routes (edit_requests.py): `POST
  /openai/deployments/{deployment}/images/edits?api-version=V`, `POST /openai/v1/images/edits`
  (deployment name in the form's `model`) and `POST /v1/images/edits` (model in `model`, by
  default gpt-image-1), each with its generations route's authentication, api-versions and
  error envelope. multipart/form-data: the generation fields as text (`prompt`, `n`, `size`,
  `quality`, `background`, `output_format`, `output_compression`, `moderation`, `stream`,
  `partial_images`, `user`, `safety_identifier`, `model`) plus `input_fidelity` (gpt-image-1,
  -1.5: low/high; -1-mini: low; never the gpt-image-2 family), 1 to 16 files `image` or
  `image[]` (PNG/JPEG/WebP by declared Content-Type and by content, at most 50 MiB, at most
  Pillow's decompression-bomb pixel count) and an optional `mask` (a PNG with an alpha
  channel, the first image's size, at most 4 MiB). Bad input is a 400 naming the field
  (`image`, `mask`, `input_fidelity`, `model` for a DALL-E model or deployment, ...). `size:
  auto` is the first image's size fitted to the model's sizes. The result is drawn from the
  inputs (edit_drawing.py): the first image stretched to the output size, the others as
  numbered tiles along the bottom, the mask's transparent area striped magenta and yellow with
  the prompt, a magenta frame and the "ATELIER EMULATOR · edited image" bands. `usage` counts
  the input images' tokens in `input_tokens_details.image_tokens`.
- Streaming (streaming.py) on every gpt-image generation and edit: `stream: true` (JSON) or
  `stream=true` (form), with `partial_images` 0-3 and n = 1 (n > 1 with `stream` is a 400
  naming `n`), answers `text/event-stream`: `partial_images` events
  `image_generation.partial_image` / `image_edit.partial_image` (coarser versions of the final
  image) then one `image_generation.completed` / `image_edit.completed` with `usage`, spread
  over `latency`. The prompt triggers below answer a streamed request as they answer any
  other, before a stream starts (`[garbage]`: its cut-off JSON body, not a stream); the
  `[stream-*]` faults break the stream itself.

The gpt-image-2 family takes `size` `auto` or any `WIDTHxHEIGHT` with both sides multiples of
16, the long side at most 3840 and at most 3 times the short side, and 655,360 to 8,294,400
pixels; a 400 names the broken rule. It takes no transparent background, except the 2.5
models, which also have the qualities `xhigh` and `max`. Every route takes `moderation`
(gpt-image models), `user` and `safety_identifier` (up to 64 characters).

Public API:
- `EmulatorConfig(api_key, latency=3.0, poll_interval=1, signing_secret=None,
  state_file=None, public_url=None, deployments={"gpt-image-2": "gpt-image-2",
  "gpt-image-1": "gpt-image-1", "dall-e-3": "dall-e-3"}, openai_api_key=None,
  hang_seconds=30.0, slow_seconds=5.0, oversized_bytes=64 MiB,
  rate_limit_retry_seconds=1.0)`
- `create_emulator_app(config) -> flask.Flask`
- `EmulatorServer(config, host="127.0.0.1", port=0)`: `.start()` (returns self), `.url`
  (with trailing slash), `.stop()`, a context manager; `.request_counts()`.
- `python -m app.emulator --port 0 --api-key KEY [--latency 2] [--poll-interval 1]
  [--state-file F] [--deployment NAME=MODEL ...] [--openai-api-key KEY] [--hang-seconds 30]
  [--slow-seconds 5] [--oversized-bytes 67108864] [--rate-limit-retry-seconds 1]` prints
  `EMULATOR_URL=http://127.0.0.1:PORT/` once listening.

Async operations report `notRunning` for the first 20 % of `latency`, `running` until
`latency` has passed, then their terminal state. Synchronous generations answer after
`latency` seconds. Prompt triggers (case-insensitive substrings of the prompt; with several,
the first in each list wins) provoke the services' other endings. On the async API:
- `[hang]`   stays `running` forever (and so can never be deleted).
- `[refuse]` ends `failed` with error `contentFilter` "Your task failed as a result of our
  safety system." (a rejected prompt, no result).
- `[fail]`   ends `failed` with error `internalFailure`.
- `[cancel]` ends `canceled` (Azure's "task has timed out"), no result.
- `[filter]` ends `succeeded`, but the last slot of `result.data` is a `contentFilter`
  error instead of an image (with n=1 the only image is filtered).

On the synchronous routes (only requests that pass validation reach them; Azure's deployment
and v1 routes / OpenAI's `/v1` route). Every 429 asks for `rate_limit_retry_seconds` (R, 1 by
default), and its headers agree: `retry-after: R` and `retry-after-ms: R*1000`.
- `[ratelimit-always]` 429 every time: Azure's `{"error":{"code":"429",...}}` with `retry-after`
  and `retry-after-ms` / OpenAI's `rate_limit_exceeded` with `retry-after` and
  `x-ratelimit-*-requests` headers.
- `[ratelimit]` the same 429, but only for the first request with exactly this prompt (per
  emulator instance); later ones succeed. Lets clients prove they retry.
- `[no-retry]` the same 429 every time, plus `x-should-retry: false`: the server's "do not
  retry", which openai-python obeys over the status code. Lets clients prove they honour it.
- `[hang]`   sleeps `hang_seconds`, then answers like `[fail]` (for read-timeout tests).
- `[fail]`   500: Azure's `InternalServerError` / OpenAI's `server_error`.
- `[refuse-legacy]` 400 `{"created", "error": {"code": "contentFilter", "message": "Your task
  failed as a result of our safety system."}}` / OpenAI's `content_policy_violation`.
- `[refuse]` 400 `content_policy_violation` with `inner_error` (`ResponsibleAIPolicyViolation`,
  `sexual` filtered) / OpenAI's `content_policy_violation`.
- `[filter]` after `latency`, 400 `contentFilter` "Generated image was filtered as a result
  of our safety system." / OpenAI's `content_policy_violation` (it has no separate shape).

Fault modes, for proving that a client survives a misbehaving Azure (faults.py; the same
matching rules). With several submit, poll or image faults, the first in the table wins; on
the synchronous routes `[submit-500]` ranks after `[ratelimit]` and `[garbage]` after every
other trigger. Faults come on top of the triggers above: `[poll-500] [fail]` breaks the first
poll, then the operation ends `failed`. "First"
means once per emulator instance: per exact prompt for submits and generations (all routes
share this memory, `[ratelimit]`'s too), per operation for polls. The memory is not saved in
the state file, and `POST /_emulator/reset` does not clear it.

  trigger             route                  behaviour
  `[submit-429]`      async submit           first submit: 429 `{"error":{"code":"429",
                                             "message":"Requests to the ImageGenerations_Submit
                                             Operation ..."}}`, `retry-after: R`,
                                             `retry-after-ms: R*1000`; later submits succeed
  `[submit-500]`      async submit, both     first request: 500 (Azure's `InternalServerError`
                      sync routes            / OpenAI's `server_error`); later ones succeed
  `[vanish]`          async poll, delete     submit succeeds; every poll and delete: 404
                                             `Resource not found`
  `[poll-429]`        async poll             the operation's first poll: 429 as above, naming
                                             `ImageGenerations_GetOperation`
  `[poll-500]`        async poll             the operation's first poll: 500
                                             `InternalServerError`
  `[poll-slow]`       async poll             the operation's first poll answers (normally)
                                             after `slow_seconds`; other requests go on
  `[poll-garbage]`    async poll             the operation's first poll: 200 `application/json`
                                             cut off in the status value (`"status":"runn`)
  `[hang]`            async poll             never finishes: stays `running` forever
  `[image-403]`       image URLs             403 Azure Storage XML `AuthenticationFailed`
  `[image-404]`       image URLs             404 Azure Storage XML `BlobNotFound`
  `[image-truncated]` image URLs             200 `image/png`, Content-Length of the full PNG,
                                             half of it sent, then the connection closes
  `[image-not-image]` image URLs             200 `image/png` with body
                                             `<html><body>Access denied</body></html>`
  `[image-bomb]`      image URLs             200 `image/png`: a valid ~50 KB single-colour PNG
                                             declaring 20000x20000 pixels
  `[image-oversized]` image URLs             200 `image/png`, chunked, no Content-Length: a PNG
                                             signature, then filler past `oversized_bytes`
  `[image-redirect]`  image URLs             302 to `http://images.elsewhere.invalid/
                                             generated_NN.png` (another host)
  `[garbage]`         both sync routes       after `latency`, 200 `application/json` cut off
                                             inside the first image's base64
  `[stream-slow]`     streams (every time)   waits `slow_seconds` before each event after the
                                             first (with partial_images 0: before the only one)
  `[stream-cut]`      streams (first stream  the connection closes after the first partial
                      of the prompt)         frame (with partial_images 0: before any event),
                                             mid chunked body: no completed event
  `[stream-error]`    streams (first stream  an `error` event (`server_error`) after the first
                      of the prompt)         partial frame, then the stream ends
  `[c2pa-broken]`     every image (b64_json, the image's C2PA manifest is signed, then a
                      URLs, streams)         comment is added after the header: a valid image
                                             whose data hash no longer matches (every time)

Image URL faults hold for every image URL of the operation, the async API's and the
synchronous routes' `url` answers alike (both are served by the blob route), and act only
where the image would otherwise have been served (signature valid, image exists).

Every final image (b64_json, image URLs, a stream's completed event; not partial frames) carries
C2PA Content Credentials (content_credentials.py), signed with a throwaway certificate chain
made when the app starts: claim generator "Atelier Azure OpenAI emulator", a `c2pa.created`
action with digital source type trainedAlgorithmicMedia and the model as software agent, an
edit's input images as ingredients. Readers find it valid, its signer untrusted unless they
trust the root served at `GET /_emulator/c2pa/root.pem`.

Images are served at signed, expiring URLs on the emulator's own host, shaped like
Azure's blob SAS URLs (a day for Azure's answers, an hour for OpenAI's); the images are
labelled placeholders (see drawing.py) in the requested size and format.

`GET /_emulator/faults` lists every prompt trigger, these and the ones above, with a one-line
description (JSON, no key needed). For tests: `GET /_emulator/requests` lists the requests
received with counts per kind (submit/poll/delete/blob/generate), `POST /_emulator/reset`
clears them. Each synchronous generation's entry also carries `fields`: its JSON body's
top-level fields except `prompt` (an edit's: its form's text fields), so tests can assert what a
client sent; an edit's entry carries `files` too: each file part's role, field, filename,
declared content type, size and sha256. In-process the
counts are `app.extensions["emulator"].request_counts()` or `EmulatorServer.request_counts()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask, Request

from app.upload_spool import SpoolingRequest

from .config import EmulatorConfig
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "create_emulator_app"]


def create_emulator_app(config: EmulatorConfig, *, clock: Callable[[], float] = time.time) -> Flask:
    """A Flask app serving the emulator; `clock` lets tests move time without sleeping."""
    from . import (
        async_api,
        azure_v1_api,
        blobs,
        content_credentials,
        faults,
        openai_api,
        request_log,
        sync_api,
    )
    from .config import MAX_BODY_BYTES
    from .gateway import register_gateway
    from .operations import OperationStore
    from .state import EmulatorState

    app = Flask(__name__)
    app.request_class = _uploads_request(config)
    # Werkzeug then refuses larger bodies (even chunked ones) before they are read into memory.
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    store = OperationStore(config.state_file, clock=clock)
    signing_secret = config.signing_secret or store.signing_secret or secrets.token_urlsafe(32)
    store.set_signing_secret(signing_secret)
    content_signer = content_credentials.ContentSigner()
    app.extensions["emulator"] = EmulatorState(
        config=config,
        store=store,
        images=blobs.ImageCache(content_signer),
        request_log=request_log.RequestLog(),
        signing_secret=signing_secret,
        content_signer=content_signer,
    )

    # The log first: its before_request hook must run even when the gateway answers 401.
    request_log.register_request_log(app)
    register_gateway(app)
    app.register_blueprint(async_api.bp)
    app.register_blueprint(sync_api.bp)
    app.register_blueprint(azure_v1_api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(blobs.bp)
    app.register_blueprint(request_log.bp)
    app.register_blueprint(faults.bp)
    app.register_blueprint(content_credentials.bp)
    return app


# An edit's file parts stay in memory up to this size, then spool to a file (see below).
UPLOAD_MEMORY_BYTES = 8 * 1024 * 1024


def _uploads_request(config: EmulatorConfig) -> type[Request]:
    """The request class: an edit's large file parts spool next to the emulator's state file
    (in demo mode, inside Atelier's data folder), so people's images never land in the system's
    temporary folder; a standalone emulator without a state file spools where Python does."""
    folder = Path(config.state_file).parent / ".uploads" if config.state_file else None

    class UploadsRequest(SpoolingRequest):
        spool_memory_bytes = UPLOAD_MEMORY_BYTES

        def spool_folder(self) -> Path | None:
            if folder is not None:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            return folder

    return UploadsRequest
