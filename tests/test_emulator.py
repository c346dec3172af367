"""The built-in Azure emulator, exercised over real loopback HTTP with `requests`.

Most tests drive time with a manual clock handed to the emulator, so status changes are
deterministic and nothing sleeps; one test checks the same progression in real time.
"""

from __future__ import annotations

import base64
import io
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from PIL import Image

from app.emulator import EmulatorConfig, EmulatorServer
from app.emulator.blobs import format_expiry, sign
from app.emulator.drawing import render_placeholder
from tests.emulator_client import (
    OVER_1_MIB,
    TIMEOUT,
    assert_resource_not_found,
    post_raw,
    session_fixture,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key"
SIGNING_SECRET = "test-signing-secret"
VERSION = "2023-06-01-preview"
LATENCY = 10.0  # on the manual clock: notRunning for 2 s, running until 10 s


class ManualClock:
    """A time source that only moves when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _config(**overrides: object) -> EmulatorConfig:
    settings: dict = {
        "api_key": API_KEY,
        "latency": LATENCY,
        "poll_interval": 1,
        "signing_secret": SIGNING_SECRET,
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[EmulatorServer]:
    with EmulatorServer(_config(), clock=clock) as server:
        yield server


# Sessions: `http` authenticates like Atelier does, with the api-key header.
http = session_fixture({"api-key": API_KEY})
anonymous = session_fixture()


def submit_url(server: EmulatorServer, version: str = VERSION) -> str:
    return f"{server.url}openai/images/generations:submit?api-version={version}"


def operation_url(server: EmulatorServer, operation_id: str) -> str:
    return f"{server.url}openai/operations/images/{operation_id}?api-version={VERSION}"


def submit(server: EmulatorServer, http: requests.Session, **body: object) -> requests.Response:
    body.setdefault("prompt", "an avocado armchair")
    response = http.post(submit_url(server), json=body, timeout=TIMEOUT)
    assert response.status_code == 202, response.text
    return response


def finished_operation(
    server: EmulatorServer, http: requests.Session, clock: ManualClock, **body: object
) -> dict:
    location = submit(server, http, **body).headers["operation-location"]
    clock.advance(LATENCY)
    response = http.get(location, timeout=TIMEOUT)
    assert response.status_code == 200
    return response.json()


def submit_count(server: EmulatorServer) -> int:
    return server.request_counts()["submit"]


# --- submit ---------------------------------------------------------------------------


def test_submit_answers_202_with_absolute_operation_location(emulator, http):
    response = submit(emulator, http)

    operation_id = response.json()["id"]
    assert response.headers["operation-location"] == (
        f"{emulator.url}openai/operations/images/{operation_id}?api-version=2023-06-01-preview"
    )


def test_submit_body_is_not_running_with_id_and_created(emulator, http, clock):
    body = submit(emulator, http).json()

    assert body == {
        "id": body["id"],
        "status": "notRunning",
        "created": int(clock.now),
    }
    assert uuid.UUID(body["id"]).version == 4


def test_submit_advertises_retry_after(emulator, http):
    assert submit(emulator, http).headers["retry-after"] == "1"


def test_operation_location_keeps_2023_06_01_preview_for_later_versions(emulator, http):
    response = http.post(
        submit_url(emulator, "2023-10-01-preview"),
        json={"prompt": "a lighthouse"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 202
    assert response.headers["operation-location"].endswith("?api-version=2023-06-01-preview")


def test_submit_uses_public_url_for_operation_location(clock, http):
    config = _config(public_url="https://atelier.example/emulator")
    with EmulatorServer(config, clock=clock) as server:
        response = submit(server, http)

    assert response.headers["operation-location"].startswith(
        "https://atelier.example/emulator/openai/operations/images/"
    )


# --- polling --------------------------------------------------------------------------


def test_operation_goes_not_running_then_running_then_succeeded(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    statuses = [http.get(location, timeout=TIMEOUT).json()["status"]]
    clock.advance(0.25 * LATENCY)
    statuses.append(http.get(location, timeout=TIMEOUT).json()["status"])
    clock.advance(0.75 * LATENCY)
    statuses.append(http.get(location, timeout=TIMEOUT).json()["status"])

    assert statuses == ["notRunning", "running", "succeeded"]


def test_unfinished_operation_has_no_result(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    clock.advance(0.5 * LATENCY)

    body = http.get(location, timeout=TIMEOUT).json()

    assert body["status"] == "running"
    assert "result" not in body
    assert "error" not in body


def test_poll_advertises_retry_after_while_running_and_when_finished(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    running = http.get(location, timeout=TIMEOUT)
    clock.advance(LATENCY)
    finished = http.get(location, timeout=TIMEOUT)

    assert running.headers["retry-after"] == "1"
    assert finished.headers["retry-after"] == "1"


def test_operation_expires_a_day_after_it_was_created(emulator, http, clock):
    body = finished_operation(emulator, http, clock)

    assert body["expires"] == body["created"] + 86400


def test_succeeded_operation_has_one_url_per_image(emulator, http, clock):
    body = finished_operation(emulator, http, clock, n=3)

    assert body["status"] == "succeeded"
    assert isinstance(body["result"]["created"], int)
    urls = [item["url"] for item in body["result"]["data"]]
    assert len(set(urls)) == 3
    assert all(url.startswith(emulator.url) for url in urls)


def test_operation_succeeds_in_real_time(http):
    with EmulatorServer(_config(latency=0.3)) as server:
        location = submit(server, http).headers["operation-location"]
        seen = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            status = http.get(location, timeout=TIMEOUT).json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == "succeeded":
                break
            time.sleep(0.02)

    assert seen[-1] == "succeeded"
    assert seen[0] in ("notRunning", "running")


@pytest.mark.parametrize("method", ["GET", "DELETE"], ids=["poll", "delete"])
def test_unknown_operation_is_404(emulator, http, method):
    response = http.request(method, operation_url(emulator, str(uuid.uuid4())), timeout=TIMEOUT)

    assert_resource_not_found(response)


def test_operation_is_gone_after_it_expires(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    clock.advance(86400)

    assert http.get(location, timeout=TIMEOUT).status_code == 404


# --- images ---------------------------------------------------------------------------


def test_image_url_serves_png_of_requested_size(emulator, http, clock, anonymous):
    body = finished_operation(emulator, http, clock, size="512x512")

    response = anonymous.get(body["result"]["data"][0]["url"], timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.headers["ETag"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    assert image.size == (512, 512)


def test_image_url_is_shaped_like_an_azure_sas_url(emulator, http, clock):
    body = finished_operation(emulator, http, clock)

    url = urlsplit(body["result"]["data"][0]["url"])

    assert url.path == f"/blobs/private/images/{body['id']}/generated_00.png"
    query = parse_qs(url.query)
    assert query["se"] == [format_expiry(body["expires"])]
    assert query["sig"]


def test_different_prompts_give_different_images(emulator, http, clock, anonymous):
    images = []
    for prompt in ("a red fox", "a blue whale"):
        body = finished_operation(emulator, http, clock, prompt=prompt, size="256x256")
        url = body["result"]["data"][0]["url"]
        images.append(anonymous.get(url, timeout=TIMEOUT).content)

    assert images[0] != images[1]


def test_placeholder_rendering_is_deterministic():
    first = render_placeholder("a red fox", 0, 2, "256x256")

    assert first == render_placeholder("a red fox", 0, 2, "256x256")
    assert first != render_placeholder("a red fox", 1, 2, "256x256")


def test_b64_json_returns_png_bytes_inline(emulator, http, clock):
    body = finished_operation(
        emulator, http, clock, response_format="b64_json", n=2, size="256x256"
    )

    data = body["result"]["data"]
    assert len(data) == 2
    assert all(set(item) == {"b64_json"} for item in data)
    image = Image.open(io.BytesIO(base64.b64decode(data[0]["b64_json"])))
    assert (image.format, image.size) == ("PNG", (256, 256))


def test_image_with_bad_signature_is_403(emulator, http, clock, anonymous):
    url = finished_operation(emulator, http, clock)["result"]["data"][0]["url"]
    tampered = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")

    response = anonymous.get(tampered, timeout=TIMEOUT)

    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("application/xml")
    assert "<Code>AuthenticationFailed</Code>" in response.text


def test_image_without_signature_is_403(emulator, http, clock, anonymous):
    url = finished_operation(emulator, http, clock)["result"]["data"][0]["url"]

    response = anonymous.get(url.split("?")[0], timeout=TIMEOUT)

    assert response.status_code == 403
    assert "<Code>AuthenticationFailed</Code>" in response.text


def test_image_after_expiry_is_403(emulator, http, clock, anonymous):
    url = finished_operation(emulator, http, clock)["result"]["data"][0]["url"]
    clock.advance(86400)

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 403
    assert "<Code>AuthenticationFailed</Code>" in response.text


def test_image_of_unfinished_operation_is_404(emulator, http, clock, anonymous):
    operation_id = submit(emulator, http).json()["id"]
    url = signed_blob_url(emulator, clock, operation_id, 0)

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 404
    assert "<Code>BlobNotFound</Code>" in response.text


def signed_blob_url(
    server: EmulatorServer, clock: ManualClock, operation_id: str, index: int
) -> str:
    """A correctly signed URL for any slot, as if the emulator had handed it out."""
    expiry = format_expiry(int(clock.now) + 3600)
    signature = sign(SIGNING_SECRET, operation_id, index, expiry)
    return (
        f"{server.url}blobs/private/images/{operation_id}/generated_{index:02d}.png"
        f"?se={expiry}&sig={signature}"
    )


# --- prompt triggers ------------------------------------------------------------------


def test_refuse_trigger_fails_with_content_filter_error(emulator, http, clock):
    body = finished_operation(emulator, http, clock, prompt="a cat [refuse]")

    assert body["status"] == "failed"
    assert body["error"] == {
        "code": "contentFilter",
        "message": "Your task failed as a result of our safety system.",
    }
    assert "result" not in body


def test_triggers_are_case_insensitive(emulator, http, clock):
    body = finished_operation(emulator, http, clock, prompt="a cat [REFUSE]")

    assert body["status"] == "failed"


def test_filter_trigger_filters_the_last_of_three_images(emulator, http, clock, anonymous):
    body = finished_operation(emulator, http, clock, prompt="[filter] dogs", n=3)

    data = body["result"]["data"]
    assert body["status"] == "succeeded"
    assert [set(item) for item in data] == [{"url"}, {"url"}, {"error"}]
    assert data[2]["error"] == {
        "code": "contentFilter",
        "message": "Generated image was filtered as a result of our safety system.",
    }
    assert anonymous.get(data[0]["url"], timeout=TIMEOUT).status_code == 200


def test_filter_trigger_with_one_image_filters_it(emulator, http, clock):
    body = finished_operation(emulator, http, clock, prompt="[filter] dogs", n=1)

    assert body["status"] == "succeeded"
    assert [set(item) for item in body["result"]["data"]] == [{"error"}]


def test_filtered_image_has_no_blob(emulator, http, clock, anonymous):
    body = finished_operation(emulator, http, clock, prompt="[filter] dogs", n=2)

    url = signed_blob_url(emulator, clock, body["id"], 1)

    response = anonymous.get(url, timeout=TIMEOUT)

    assert response.status_code == 404
    assert "<Code>BlobNotFound</Code>" in response.text


def test_cancel_trigger_ends_canceled_without_result(emulator, http, clock):
    body = finished_operation(emulator, http, clock, prompt="slow one [cancel]")

    assert body["status"] == "canceled"
    assert "result" not in body


def test_fail_trigger_fails_with_internal_failure(emulator, http, clock):
    body = finished_operation(emulator, http, clock, prompt="[fail] boom")

    assert body["status"] == "failed"
    assert body["error"]["code"] == "internalFailure"
    assert "result" not in body


def test_hang_trigger_stays_running(emulator, http, clock):
    location = submit(emulator, http, prompt="[hang]").headers["operation-location"]
    clock.advance(3600)

    body = http.get(location, timeout=TIMEOUT).json()

    assert body["status"] == "running"
    assert "result" not in body


# --- delete ---------------------------------------------------------------------------


def test_delete_while_running_is_409_conflict(emulator, http):
    location = submit(emulator, http).headers["operation-location"]

    response = http.delete(location, timeout=TIMEOUT)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


def test_delete_after_finishing_is_204(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    clock.advance(LATENCY)

    response = http.delete(location, timeout=TIMEOUT)

    assert response.status_code == 204
    assert response.content == b""


def test_deleted_operation_polls_as_deleted_without_result(emulator, http, clock):
    location = submit(emulator, http).headers["operation-location"]
    clock.advance(LATENCY)
    http.delete(location, timeout=TIMEOUT)

    response = http.get(location, timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.json()["status"] == "deleted"
    assert "result" not in response.json()


def test_deleted_operation_images_are_404(emulator, http, clock, anonymous):
    body = finished_operation(emulator, http, clock)
    http.delete(operation_url(emulator, body["id"]), timeout=TIMEOUT)

    response = anonymous.get(body["result"]["data"][0]["url"], timeout=TIMEOUT)

    assert response.status_code == 404
    assert "<Code>BlobNotFound</Code>" in response.text


# --- authentication -------------------------------------------------------------------


# Which headers sign in is the gateway's rule, the same on every Azure route: see
# test_emulator_sync.py's sign-in tests, which cover this route too.


def test_poll_needs_the_key_too(emulator, http, anonymous):
    location = submit(emulator, http).headers["operation-location"]

    assert anonymous.get(location, timeout=TIMEOUT).status_code == 401


def test_every_openai_response_carries_apim_request_id(emulator, http):
    location = submit(emulator, http).headers["operation-location"]
    responses = [
        http.post(submit_url(emulator), json={"prompt": "x"}, timeout=TIMEOUT),
        http.get(location, timeout=TIMEOUT),
        http.delete(location, timeout=TIMEOUT),
        http.post(submit_url(emulator), json={}, timeout=TIMEOUT),
        http.get(operation_url(emulator, "unknown"), timeout=TIMEOUT),
    ]

    ids = [response.headers["apim-request-id"] for response in responses]
    assert len(set(ids)) == len(ids)


# --- api-version and routes -----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["", "?api-version=2023-12-01-preview", "?api-version=2024-02-01", "?api-version="],
    ids=["missing", "after-removal", "ga-version", "empty"],
)
def test_submit_without_a_supported_api_version_is_404(emulator, http, query):
    response = http.post(
        f"{emulator.url}openai/images/generations:submit{query}",
        json={"prompt": "x"},
        timeout=TIMEOUT,
    )

    assert_resource_not_found(response)
    assert submit_count(emulator) == 0


def test_poll_without_api_version_is_404(emulator, http):
    operation_id = submit(emulator, http).json()["id"]

    response = http.get(f"{emulator.url}openai/operations/images/{operation_id}", timeout=TIMEOUT)

    assert_resource_not_found(response)


@pytest.mark.parametrize("version", ["2023-07-01-preview", "2023-10-01-preview"])
def test_poll_accepts_every_async_api_version(emulator, http, version):
    operation_id = submit(emulator, http).json()["id"]

    response = http.get(
        f"{emulator.url}openai/operations/images/{operation_id}?api-version={version}",
        timeout=TIMEOUT,
    )

    assert response.status_code == 200


def test_unknown_openai_route_is_404_resource_not_found(emulator, http):
    response = http.post(
        f"{emulator.url}openai/deployments/dall-e-3/chat/completions?api-version=2024-02-01",
        json={"prompt": "x"},
        timeout=TIMEOUT,
    )

    assert_resource_not_found(response)


# --- validation -----------------------------------------------------------------------

INVALID_BODIES = {
    "missing-prompt": ({"n": 1}, "prompt"),
    "empty-prompt": ({"prompt": ""}, "prompt"),
    "whitespace-prompt": ({"prompt": " \n\t "}, "prompt"),
    "prompt-1001-chars": ({"prompt": "a" * 1001}, "prompt"),
    "prompt-not-string": ({"prompt": 42}, "prompt"),
    "n-zero": ({"prompt": "x", "n": 0}, "n"),
    "n-eleven": ({"prompt": "x", "n": 11}, "n"),
    "n-string": ({"prompt": "x", "n": "2"}, "n"),
    "n-true": ({"prompt": "x", "n": True}, "n"),
    "n-float": ({"prompt": "x", "n": 2.0}, "n"),
    "size-100": ({"prompt": "x", "size": "100x100"}, "size"),
    "size-dalle3": ({"prompt": "x", "size": "1792x1024"}, "size"),
    "response-format": ({"prompt": "x", "response_format": "png"}, "response_format"),
    "user-not-string": ({"prompt": "x", "user": 7}, "user"),
    "model-dalle3": ({"prompt": "x", "model": "dall-e-3"}, "model"),
}


@pytest.mark.parametrize(("body", "target"), INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_field_is_400_naming_the_field(emulator, http, body, target):
    response = http.post(submit_url(emulator), json=body, timeout=TIMEOUT)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalidPayload"
    assert error["target"] == target
    assert target in error["message"]
    assert submit_count(emulator) == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"prompt": "x"', "application/json"),
        (b"\xff\xfe not utf-8", "application/json"),
        (b'["prompt", "x"]', "application/json"),
        (b'"just a string"', "application/json"),
        (b'{"prompt": "x"}', "text/plain"),
    ],
    ids=["bad-json", "not-utf8", "json-array", "json-string", "not-json-content-type"],
)
def test_body_that_is_not_a_json_object_is_400(emulator, http, data, content_type):
    response = post_raw(http, submit_url(emulator), data, content_type)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["target"]) == ("invalidPayload", "body")
    assert submit_count(emulator) == 0


def test_body_over_1_mib_is_413(emulator, http):
    response = post_raw(http, submit_url(emulator), OVER_1_MIB)

    assert response.status_code == 413
    error = response.json()["error"]
    assert (error["code"], error["target"]) == ("invalidPayload", "body")
    assert submit_count(emulator) == 0


def test_optional_fields_accept_valid_values_and_unknown_fields(emulator, http):
    response = http.post(
        submit_url(emulator),
        json={
            "prompt": "x" * 1000,
            "n": 10,
            "size": "256x256",
            "response_format": "url",
            "user": "someone",
            "model": "dall-e-2",
            "quality": "hd",
        },
        timeout=TIMEOUT,
    )

    assert response.status_code == 202


# --- request log ----------------------------------------------------------------------


def test_request_log_counts_answered_requests_by_kind(emulator, http, clock, anonymous):
    body = finished_operation(emulator, http, clock)
    anonymous.get(body["result"]["data"][0]["url"], timeout=TIMEOUT)
    http.delete(operation_url(emulator, body["id"]), timeout=TIMEOUT)
    http.post(submit_url(emulator), json={}, timeout=TIMEOUT)

    log = anonymous.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()

    expected = {"submit": 1, "poll": 1, "delete": 1, "blob": 1, "generate": 0}
    assert log["counts"] == expected
    assert emulator.request_counts() == expected
    assert [entry["method"] for entry in log["requests"]] == [
        "POST",
        "GET",
        "GET",
        "DELETE",
        "POST",
    ]
    assert log["requests"][-1]["status"] == 400


def test_request_log_reset_clears_requests_and_counts(emulator, http, anonymous):
    submit(emulator, http)

    reset = anonymous.post(f"{emulator.url}_emulator/reset", timeout=TIMEOUT)
    log = anonymous.get(f"{emulator.url}_emulator/requests", timeout=TIMEOUT).json()

    assert reset.status_code == 204
    assert log["requests"] == []
    assert set(log["counts"].values()) == {0}


# --- persistence and the command line -------------------------------------------------


def test_restarted_emulator_still_answers_for_old_operations(tmp_path, clock, http, anonymous):
    # No fixed signing secret: the one saved in the state file must carry over too.
    config = _config(state_file=str(tmp_path / "emulator-state.json"), signing_secret=None)
    with EmulatorServer(config, clock=clock) as first:
        operation_id = submit(first, http).json()["id"]
    clock.advance(LATENCY)

    with EmulatorServer(config, clock=clock) as second:
        body = http.get(operation_url(second, operation_id), timeout=TIMEOUT).json()
        image = anonymous.get(body["result"]["data"][0]["url"], timeout=TIMEOUT)

    assert body["status"] == "succeeded"
    assert image.status_code == 200


def test_restarted_emulator_remembers_deletions(tmp_path, clock, http):
    config = _config(state_file=str(tmp_path / "emulator-state.json"))
    with EmulatorServer(config, clock=clock) as first:
        operation_id = submit(first, http).json()["id"]
        clock.advance(LATENCY)
        http.delete(operation_url(first, operation_id), timeout=TIMEOUT)

    with EmulatorServer(config, clock=clock) as second:
        body = http.get(operation_url(second, operation_id), timeout=TIMEOUT).json()

    assert body["status"] == "deleted"


def test_command_line_prints_url_and_serves_until_terminated(http):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.emulator",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--latency",
            "0.2",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = _read_line(process, timeout=15)
        assert first_line.startswith("EMULATOR_URL=http://127.0.0.1:")
        base_url = first_line.removeprefix("EMULATOR_URL=").strip()
        assert base_url.endswith("/")
        response = http.post(
            f"{base_url}openai/images/generations:submit?api-version={VERSION}",
            json={"prompt": "from another process"},
            timeout=TIMEOUT,
        )
        assert response.status_code == 202
    finally:
        process.terminate()
        rest_of_stdout, stderr = process.communicate(timeout=10)

    assert process.returncode == 0, stderr
    assert rest_of_stdout == ""


def _read_line(process: subprocess.Popen, timeout: float) -> str:
    """First stdout line of `process`, failing the test instead of blocking forever."""
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: lines.put(process.stdout.readline()))
    reader.start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"emulator printed nothing within {timeout} s")
    finally:
        reader.join(timeout=0)
