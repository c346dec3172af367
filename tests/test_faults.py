"""Every emulator fault mode, end to end through the worker: the job ends in the expected state
with a readable error, nothing is submitted twice, and nothing bad reaches the image store."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.helpers import emulator_counts, generate


def requests_to(emulator, fragment: str) -> int:
    log = requests.get(emulator.url + "_emulator/requests", timeout=5).json()["requests"]
    return sum(1 for entry in log if fragment in entry["path"])


def image_files(app) -> list[Path]:
    return [p for p in Path(app.config["ATELIER_DATA_DIR"]).glob("images/*/*") if p.is_file()]


@pytest.mark.parametrize(
    "trigger", ["[submit-429]", "[submit-500]", "[poll-429]", "[poll-500]", "[poll-garbage]"]
)
def test_transient_upstream_faults_are_retried_and_the_job_succeeds(client, emulator, trigger):
    job = generate(client, timeout=30, size="256x256", prompt=f"a patient fox {trigger}", n=2)

    assert job["status"] == "succeeded", job["error"]
    assert [image["status"] for image in job["images"]] == ["stored", "stored"]
    assert emulator_counts(emulator)["submit"] == 1


def test_slow_poll_times_out_and_is_polled_again(app_factory, emulator):
    client = app_factory(ATELIER_HTTP_TIMEOUT_SECONDS=0.5).test_client()

    job = generate(client, timeout=30, size="256x256", prompt="a sleepy owl [poll-slow]")

    assert job["status"] == "succeeded", job["error"]
    assert emulator_counts(emulator)["submit"] == 1


def test_vanished_operation_fails_with_a_readable_reason(client, emulator):
    job = generate(client, timeout=30, size="256x256", prompt="gone [vanish]")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "operation_gone"
    assert "404" in job["error"]["message"]
    assert emulator_counts(emulator)["submit"] == 1


def test_operation_that_never_finishes_ends_at_the_deadline(app_factory, emulator):
    client = app_factory(ATELIER_JOB_DEADLINE_SECONDS=1).test_client()

    job = generate(client, timeout=30, size="256x256", prompt="forever [hang]")

    assert job["error"]["code"] == "deadline"


@pytest.mark.parametrize(
    ("trigger", "code", "words"),
    [
        ("[image-403]", "image_expired", "no longer valid"),
        ("[image-404]", "image_expired", "no longer valid"),
        ("[image-truncated]", "download_broke_off", "broke off"),
        ("[image-not-image]", "bad_image", "not a valid PNG"),
        ("[image-bomb]", "bad_image", "larger than allowed"),
        ("[image-redirect]", "bad_image", "redirect"),
    ],
)
def test_bad_image_downloads_fail_the_job_and_store_nothing(
    app, client, emulator, trigger, code, words
):
    job = generate(client, timeout=30, size="256x256", prompt=f"a broken picture {trigger}")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "download_failed"
    (image,) = job["images"]
    assert image["status"] == "failed"
    assert image["error"]["code"] == code
    assert words in image["error"]["message"]
    assert image_files(app) == []
    assert emulator_counts(emulator)["submit"] == 1


def test_oversized_image_is_cut_off_at_the_limit(app_factory, emulator):
    app = app_factory(ATELIER_MAX_IMAGE_BYTES=1024 * 1024)
    client = app.test_client()

    job = generate(client, timeout=30, size="256x256", prompt="too big [image-oversized]")

    (image,) = job["images"]
    assert image["error"]["code"] == "image_too_large"
    assert "ATELIER_MAX_IMAGE_BYTES" in image["error"]["message"]
    assert image_files(app) == []


SYNC = {"AZURE_OPENAI_DEPLOYMENT": "dall-e-3"}


def test_unreadable_generation_answer_is_not_resent(app_factory, emulator):
    client = app_factory(**SYNC).test_client()

    job = generate(client, timeout=30, size="1024x1024", prompt="mangled [garbage]")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "protocol_error"
    assert requests_to(emulator, "/images/generations") == 1


def test_generation_server_error_is_retried_then_succeeds(app_factory, emulator):
    client = app_factory(**SYNC).test_client()

    job = generate(client, timeout=30, size="1024x1024", prompt="hiccup [submit-500]")

    assert job["status"] == "succeeded", job["error"]
    assert requests_to(emulator, "/images/generations") == 2


def test_image_faults_apply_to_synchronous_url_results(app_factory, emulator):
    app = app_factory(**SYNC)

    job = generate(
        app.test_client(), timeout=30, size="1024x1024", prompt="expired already [image-403]"
    )

    assert job["status"] == "failed"
    assert job["images"][0]["error"]["code"] == "image_expired"
    assert image_files(app) == []
