"""The emulator's fault modes, over real loopback HTTP with `requests`.

Each fault trigger makes the emulator misbehave the way a real Azure can (throttled or failed
submits and polls, a slow or garbled poll, an operation that vanishes, broken image
downloads, garbled synchronous answers). Most tests share one emulator whose request log is
cleared before each test; "first time only" faults remember prompts and operations for the
emulator's lifetime, so every test sends a prompt of its own (`unique`). Tests that leave a
`[poll-slow]` poll sleeping on the server get an emulator of their own, so the late answer
cannot land in another test's request counts.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

import app.emulator
from app.emulator import EmulatorConfig, EmulatorServer
from app.emulator.__main__ import config_from_args, parse_args
from app.emulator.drawing import render_placeholder

API_KEY = "fault-test-key-0123456789"
OPENAI_KEY = "sk-fault-test-key-wxyz"
VERSION = "2023-06-01-preview"
GPT_VERSION = "2025-04-01-preview"
DALLE_VERSION = "2024-10-21"
LATENCY = 0.05
SLOW_SECONDS = 1.0
OVERSIZED_BYTES = 2 * 1024 * 1024
TIMEOUT = 5  # seconds for every HTTP call, so a hung emulator fails the test instead
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RESOURCE_NOT_FOUND = '{"error":{"code":"404","message": "Resource not found"}}'
SERVER_ERROR = {
    "error": {
        "code": "InternalServerError",
        "message": "The server had an error while processing your request. Sorry about that!",
    }
}
NEW_FAULT_TRIGGERS = {
    "[submit-429]",
    "[submit-500]",
    "[poll-429]",
    "[poll-500]",
    "[poll-slow]",
    "[poll-garbage]",
    "[vanish]",
    "[image-403]",
    "[image-404]",
    "[image-truncated]",
    "[image-not-image]",
    "[image-bomb]",
    "[image-oversized]",
    "[image-redirect]",
    "[garbage]",
}


def _config(**overrides: object) -> EmulatorConfig:
    settings: dict = {
        "api_key": API_KEY,
        "openai_api_key": OPENAI_KEY,
        "latency": LATENCY,
        "poll_interval": 0,
        "slow_seconds": SLOW_SECONDS,
        "oversized_bytes": OVERSIZED_BYTES,
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(_config()) as server:
        yield server


@pytest.fixture
def emulator(shared_emulator: EmulatorServer) -> EmulatorServer:
    """The module's emulator with its request log (and so its counts) cleared for this test."""
    requests.post(f"{shared_emulator.url}_emulator/reset", timeout=TIMEOUT).raise_for_status()
    return shared_emulator


@pytest.fixture
def own_emulator() -> Iterator[EmulatorServer]:
    """An emulator for this test alone, for tests that leave a request sleeping on it."""
    with EmulatorServer(_config()) as server:
        yield server


@pytest.fixture
def azure() -> Iterator[requests.Session]:
    """A session that authenticates like Atelier does, with the api-key header."""
    with requests.Session() as session:
        session.headers["api-key"] = API_KEY
        yield session


@pytest.fixture
def openai() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {OPENAI_KEY}"
        yield session


@pytest.fixture
def anonymous() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def unique(prompt: str) -> str:
    """`prompt` made unique, so "first time only" faults fire again for this test."""
    return f"{prompt} {uuid.uuid4().hex[:8]}"


def submit(
    server: EmulatorServer, http: requests.Session, prompt: str, **body: object
) -> requests.Response:
    return http.post(
        f"{server.url}openai/images/generations:submit?api-version={VERSION}",
        json={"prompt": prompt, "size": "256x256", **body},
        timeout=TIMEOUT,
    )


def submitted(server: EmulatorServer, http: requests.Session, prompt: str, **body: object) -> str:
    """Submit `prompt` and return the operation-location to poll."""
    response = submit(server, http, prompt, **body)
    assert response.status_code == 202, response.text
    return response.headers["operation-location"]


def finished(http: requests.Session, location: str) -> dict:
    """Poll until the operation reached a terminal state, returning the last poll's body."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(LATENCY)
        response = http.get(location, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] not in ("notRunning", "running"):
            return body
    pytest.fail("operation did not finish")


def image_urls(server: EmulatorServer, http: requests.Session, prompt: str, n: int = 1) -> list:
    body = finished(http, submitted(server, http, prompt, n=n))
    assert body["status"] == "succeeded", body
    return [item["url"] for item in body["result"]["data"]]


def azure_generate(
    server: EmulatorServer, http: requests.Session, prompt: str, deployment: str = "gpt-image-1"
) -> requests.Response:
    version = GPT_VERSION if deployment == "gpt-image-1" else DALLE_VERSION
    return http.post(
        f"{server.url}openai/deployments/{deployment}/images/generations?api-version={version}",
        json={"prompt": prompt},
        timeout=TIMEOUT,
    )


def openai_generate(
    server: EmulatorServer, http: requests.Session, prompt: str
) -> requests.Response:
    return http.post(
        f"{server.url}v1/images/generations",
        json={"prompt": prompt, "size": "256x256", "response_format": "b64_json"},
        timeout=TIMEOUT,
    )


def request_log(server: EmulatorServer) -> dict:
    return requests.get(f"{server.url}_emulator/requests", timeout=TIMEOUT).json()


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# --- async submit ---------------------------------------------------------------------


def test_submit_429_throttles_the_first_submit_with_both_retry_headers(emulator, azure):
    response = submit(emulator, azure, unique("[submit-429]"))

    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    error = response.json()["error"]
    assert error["code"] == "429"
    assert error["message"].startswith(
        "Requests to the ImageGenerations_Submit Operation under Azure OpenAI API version "
        "2023-06-01-preview have exceeded call rate limit of your current OpenAI S0 pricing "
        "tier. Please retry after 1 second."
    )


def test_submit_429_lets_the_second_submit_of_the_prompt_through(emulator, azure):
    prompt = unique("[submit-429]")
    submit(emulator, azure, prompt)

    assert submit(emulator, azure, prompt).status_code == 202


def test_submit_429_remembers_each_prompt_separately(emulator, azure):
    submit(emulator, azure, unique("one [submit-429]"))

    assert submit(emulator, azure, unique("two [submit-429]")).status_code == 429


def test_submit_500_fails_the_first_submit_with_internal_server_error(emulator, azure):
    response = submit(emulator, azure, unique("[submit-500]"))

    assert response.status_code == 500
    assert response.json() == SERVER_ERROR


def test_submit_500_lets_the_second_submit_of_the_prompt_through(emulator, azure):
    prompt = unique("[submit-500]")
    submit(emulator, azure, prompt)

    assert submit(emulator, azure, prompt).status_code == 202


def test_fault_triggers_are_case_insensitive(emulator, azure):
    assert submit(emulator, azure, unique("[SUBMIT-500]")).status_code == 500


# --- async poll -----------------------------------------------------------------------


def test_poll_429_throttles_the_first_poll_with_both_retry_headers(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-429]"))

    response = azure.get(location, timeout=TIMEOUT)

    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("1", "1000")
    error = response.json()["error"]
    assert error["code"] == "429"
    assert "exceeded call rate limit" in error["message"]


def test_poll_429_lets_the_second_poll_through(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-429]"))
    azure.get(location, timeout=TIMEOUT)

    assert finished(azure, location)["status"] == "succeeded"


def test_poll_500_fails_the_first_poll_with_internal_server_error(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-500]"))

    response = azure.get(location, timeout=TIMEOUT)

    assert response.status_code == 500
    assert response.json() == SERVER_ERROR


def test_poll_500_lets_the_second_poll_through(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-500]"))
    azure.get(location, timeout=TIMEOUT)

    assert finished(azure, location)["status"] == "succeeded"


def test_poll_faults_are_per_operation_not_per_prompt(emulator, azure):
    prompt = unique("[poll-500]")
    azure.get(submitted(emulator, azure, prompt), timeout=TIMEOUT)

    second_operation = submitted(emulator, azure, prompt)

    assert azure.get(second_operation, timeout=TIMEOUT).status_code == 500


def test_poll_fault_does_not_change_how_the_operation_ends(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-500] [fail]"))
    azure.get(location, timeout=TIMEOUT)

    body = finished(azure, location)

    assert (body["status"], body["error"]["code"]) == ("failed", "internalFailure")


def test_poll_slow_answers_the_first_poll_after_slow_seconds(own_emulator, azure):
    location = submitted(own_emulator, azure, unique("[poll-slow]"))

    started = time.monotonic()
    response = azure.get(location, timeout=TIMEOUT)

    assert time.monotonic() - started >= SLOW_SECONDS
    assert response.status_code == 200
    assert response.json()["status"] in ("notRunning", "running", "succeeded")


def test_poll_slow_trips_a_client_read_timeout(own_emulator, azure):
    location = submitted(own_emulator, azure, unique("[poll-slow]"))

    with pytest.raises(requests.exceptions.ReadTimeout):
        azure.get(location, timeout=(TIMEOUT, SLOW_SECONDS / 4))


def test_poll_after_a_timed_out_slow_poll_answers_at_once(own_emulator, azure):
    location = submitted(own_emulator, azure, unique("[poll-slow]"))
    with pytest.raises(requests.exceptions.ReadTimeout):
        azure.get(location, timeout=(TIMEOUT, SLOW_SECONDS / 4))

    started = time.monotonic()
    response = azure.get(location, timeout=TIMEOUT)

    assert response.status_code == 200
    assert time.monotonic() - started < SLOW_SECONDS / 2


def test_slow_poll_does_not_block_other_requests(own_emulator, azure):
    slow_location = submitted(own_emulator, azure, unique("[poll-slow]"))
    other_location = submitted(own_emulator, azure, unique("a quick one"))
    slow: list[requests.Response] = []
    polling = threading.Thread(
        target=lambda: slow.append(
            requests.get(slow_location, headers={"api-key": API_KEY}, timeout=TIMEOUT)
        )
    )
    polling.start()
    try:
        time.sleep(SLOW_SECONDS / 10)
        started = time.monotonic()
        other = azure.get(other_location, timeout=TIMEOUT)
        elapsed = time.monotonic() - started
    finally:
        polling.join()

    assert other.status_code == 200
    assert elapsed < SLOW_SECONDS / 2
    assert slow[0].status_code == 200


def test_poll_garbage_answers_200_json_that_does_not_parse(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-garbage]"))
    operation_id = urlsplit(location).path.rsplit("/", 1)[-1]

    response = azure.get(location, timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.text.startswith(f'{{"id":"{operation_id}"')
    assert not is_json(response.text)


def test_poll_garbage_lets_the_second_poll_parse(emulator, azure):
    location = submitted(emulator, azure, unique("[poll-garbage]"))
    azure.get(location, timeout=TIMEOUT)

    assert is_json(azure.get(location, timeout=TIMEOUT).text)


def test_vanish_submit_succeeds_but_every_poll_is_404(emulator, azure):
    location = submitted(emulator, azure, unique("[vanish]"))

    responses = []
    for _ in range(3):
        responses.append(azure.get(location, timeout=TIMEOUT))
        time.sleep(LATENCY)

    assert [(r.status_code, r.text) for r in responses] == [(404, RESOURCE_NOT_FOUND)] * 3


def test_vanished_operation_cannot_be_deleted_either(emulator, azure):
    location = submitted(emulator, azure, unique("[vanish]"))
    time.sleep(LATENCY)

    response = azure.delete(location, timeout=TIMEOUT)

    assert (response.status_code, response.text) == (404, RESOURCE_NOT_FOUND)


# --- image URLs -----------------------------------------------------------------------


def test_image_403_answers_azure_storage_authentication_failed(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-403]"))

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/xml")
    assert "<Code>AuthenticationFailed</Code>" in response.text


def test_image_404_answers_azure_storage_blob_not_found(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-404]"))

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/xml")
    assert "<Code>BlobNotFound</Code>" in response.text


def test_image_faults_break_every_image_of_the_operation(emulator, azure, anonymous):
    urls = image_urls(emulator, azure, unique("[image-403]"), n=3)

    assert [anonymous.get(url, timeout=TIMEOUT).status_code for url in urls] == [403] * 3


def test_image_faults_break_synchronous_dall_e_3_urls_too(emulator, azure, anonymous):
    response = azure_generate(emulator, azure, unique("[image-404]"), deployment="dall-e-3")
    url = response.json()["data"][0]["url"]

    assert anonymous.get(url, timeout=TIMEOUT).status_code == 404


def test_image_truncated_download_raises_in_the_client(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-truncated]"))

    response = anonymous.get(url, stream=True, timeout=TIMEOUT)

    assert response.status_code == 200
    with pytest.raises(
        (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)
    ):
        response.content  # noqa: B018  (reading the body is what fails)


def test_image_truncated_announces_the_full_png_but_sends_half(emulator, azure):
    prompt = unique("[image-truncated]")
    [url] = image_urls(emulator, azure, prompt)
    parts = urlsplit(url)
    # The PNG the URL would serve whole: the placeholder with its Content Credentials (signed
    # once and cached by the emulator, so these are the very bytes it sends half of).
    state = emulator.app.extensions["emulator"]
    operation = state.store.get(parts.path.split("/")[-2])
    full_png = state.images.get(operation, 0)
    assert full_png.startswith(render_placeholder(prompt, 0, 1, "256x256")[:33])
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead) as incomplete:
            response.read()
    finally:
        connection.close()

    assert response.headers["Content-Length"] == str(len(full_png))
    assert incomplete.value.partial == full_png[: len(full_png) // 2]


def test_image_not_image_is_html_labelled_as_png(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-not-image]"))

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert response.text == "<html><body>Access denied</body></html>"


def test_image_bomb_is_a_small_png_declaring_20000_square_pixels(
    emulator, azure, anonymous, monkeypatch
):
    [url] = image_urls(emulator, azure, unique("[image-bomb]"))
    # Pillow's guard would refuse to even open it; the header is what this test reads.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.content) < 256 * 1024
    with Image.open(io.BytesIO(response.content)) as image:
        assert (image.format, image.size) == ("PNG", (20_000, 20_000))


def test_image_bomb_trips_pillows_decompression_bomb_guard(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-bomb]"))

    content = anonymous.get(url, timeout=TIMEOUT).content

    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(content))


def test_image_oversized_streams_more_than_oversized_bytes_without_a_length(
    emulator, azure, anonymous
):
    [url] = image_urls(emulator, azure, unique("[image-oversized]"))
    received = 0
    start = b""

    with anonymous.get(url, stream=True, timeout=TIMEOUT) as response:
        for chunk in response.iter_content(64 * 1024):
            start = start or chunk[: len(PNG_SIGNATURE)]
            received += len(chunk)
            if received > OVERSIZED_BYTES:
                break

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert "Content-Length" not in response.headers
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert start == PNG_SIGNATURE
    assert received > OVERSIZED_BYTES


def test_image_redirect_points_to_another_host(emulator, azure, anonymous):
    [url] = image_urls(emulator, azure, unique("[image-redirect]"))

    response = anonymous.get(url, allow_redirects=False, timeout=TIMEOUT)

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.hostname, location.path) == (
        "http",
        "images.elsewhere.invalid",
        "/generated_00.png",
    )
    assert location.hostname != urlsplit(emulator.url).hostname


# --- synchronous routes ---------------------------------------------------------------


def test_azure_garbage_answers_200_json_that_does_not_parse(emulator, azure):
    response = azure_generate(emulator, azure, "[garbage]")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.text.startswith('{"created":')
    assert not is_json(response.text)


def test_openai_garbage_answers_200_json_that_does_not_parse(emulator, openai):
    response = openai_generate(emulator, openai, "[garbage]")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert not is_json(response.text)


def test_azure_submit_500_fails_the_first_request_only(emulator, azure):
    prompt = unique("[submit-500]")
    first = azure_generate(emulator, azure, prompt)
    second = azure_generate(emulator, azure, prompt)

    assert (first.status_code, first.json()) == (500, SERVER_ERROR)
    assert second.status_code == 200
    assert emulator.request_counts()["generate"] == 1


def test_openai_submit_500_fails_the_first_request_only(emulator, openai):
    prompt = unique("[submit-500]")
    first = openai_generate(emulator, openai, prompt)
    second = openai_generate(emulator, openai, prompt)

    assert (first.status_code, first.json()["error"]["type"]) == (500, "server_error")
    assert second.status_code == 200


def test_submit_500_memory_is_shared_by_the_async_and_sync_routes(emulator, azure):
    prompt = unique("[submit-500]")
    submit(emulator, azure, prompt)

    assert azure_generate(emulator, azure, prompt).status_code == 200


# --- request log ----------------------------------------------------------------------


def test_request_log_records_fault_statuses_and_counts_only_successes(emulator, azure):
    prompt = unique("[submit-429] [poll-500]")
    submit(emulator, azure, prompt)
    location = submitted(emulator, azure, prompt)
    azure.get(location, timeout=TIMEOUT)
    azure.get(location, timeout=TIMEOUT)

    log = request_log(emulator)

    assert [entry["status"] for entry in log["requests"]] == [429, 202, 500, 200]
    assert log["counts"] == {"submit": 1, "poll": 1, "delete": 0, "blob": 0, "generate": 0}


def test_request_log_counts_image_fault_answers_below_400_only(emulator, azure, anonymous):
    urls = [
        *image_urls(emulator, azure, unique("[image-404]")),
        *image_urls(emulator, azure, unique("[image-not-image]")),
    ]
    for url in urls:
        anonymous.get(url, timeout=TIMEOUT)

    log = request_log(emulator)

    blob_statuses = [e["status"] for e in log["requests"] if e["path"].startswith("/blobs/")]
    assert blob_statuses == [404, 200]
    assert log["counts"]["blob"] == 1


# --- discovery ------------------------------------------------------------------------


def test_faults_endpoint_lists_every_fault_trigger_with_a_description(emulator, anonymous):
    response = anonymous.get(f"{emulator.url}_emulator/faults", timeout=TIMEOUT)

    assert response.status_code == 200
    faults = response.json()["faults"]
    assert {fault["trigger"] for fault in faults} >= NEW_FAULT_TRIGGERS
    assert all(fault["description"] and fault["applies_to"] for fault in faults)


def test_every_listed_trigger_is_documented_in_the_package_docstring(emulator, anonymous):
    faults = anonymous.get(f"{emulator.url}_emulator/faults", timeout=TIMEOUT).json()["faults"]

    undocumented = {f["trigger"] for f in faults if f"`{f['trigger']}`" not in app.emulator.__doc__}

    assert undocumented == set()


def test_faults_endpoint_is_not_logged_as_a_request(emulator, anonymous):
    anonymous.get(f"{emulator.url}_emulator/faults", timeout=TIMEOUT)

    assert request_log(emulator)["requests"] == []


# --- configuration --------------------------------------------------------------------


def test_config_defaults_to_5_slow_seconds_and_64_mib_oversized():
    config = EmulatorConfig(api_key=API_KEY)

    assert (config.slow_seconds, config.oversized_bytes) == (5.0, 64 * 1024 * 1024)


def test_command_line_sets_slow_seconds_and_oversized_bytes():
    args = parse_args(
        ["--api-key", API_KEY, "--slow-seconds", "0.5", "--oversized-bytes", "1048576"]
    )
    config = config_from_args(args)

    assert (config.slow_seconds, config.oversized_bytes) == (0.5, 1_048_576)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("slow_seconds", -1.0, ValueError),
        ("oversized_bytes", 0, ValueError),
        ("oversized_bytes", 1.5, TypeError),
    ],
    ids=["negative-slow-seconds", "zero-oversized-bytes", "float-oversized-bytes"],
)
def test_config_rejects_invalid_fault_settings(field, value, error):
    with pytest.raises(error, match=field):
        EmulatorConfig(api_key=API_KEY, **{field: value})
