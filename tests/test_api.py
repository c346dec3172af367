"""The JSON API end to end: every job goes through the real worker and the emulator over HTTP."""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path

import pytest
from PIL import Image as PILImage

from app import pngmeta
from tests.helpers import emulator_counts, generate, post_job, run_ready, submit, wait_for_job


@pytest.mark.parametrize("n", [1, 3])
def test_job_succeeds_and_stores_every_image(app, client, emulator, n):
    response = post_job(client, prompt="a lighthouse in fog", n=n, size="256x256")
    job_id = response.get_json()["id"]
    assert response.headers["Location"].endswith(f"/api/jobs/{job_id}")

    job = wait_for_job(client, job_id)

    assert job["status"] == "succeeded"
    assert job["error"] is None
    assert [image["index"] for image in job["images"]] == list(range(n))
    data_dir = Path(app.config["ATELIER_DATA_DIR"])
    for image in job["images"]:
        assert image["status"] == "stored"
        assert (image["width"], image["height"]) == (256, 256)
        assert image["content_type"] == "image/png"
        with client.get(image["url"]) as original:
            assert original.status_code == 200
            assert hashlib.sha256(original.data).hexdigest() == image["sha256"]
            assert len(original.data) == image["bytes"]
        with client.get(image["thumbnail_url"]) as thumbnail:
            assert thumbnail.mimetype == "image/webp"
    assert not list(data_dir.rglob(".tmp-*")), "temporary files were left behind"
    assert emulator_counts(emulator)["submit"] == 1


def test_job_records_timestamps_in_utc(client):
    job = generate(client, prompt="a clock")
    for field in ("created_at", "started_at", "finished_at"):
        assert job[field].endswith("Z")
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]


def test_refused_prompt_fails_with_the_reason_and_is_not_retried(client, emulator):
    job_id = submit(client, prompt="something [refuse]")["id"]

    job = wait_for_job(client, job_id)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "contentFilter"
    assert "safety system" in job["error"]["message"]
    assert job["images"] == []
    assert run_ready(client.application) == 0  # nothing left to do: no resubmission
    assert emulator_counts(emulator)["submit"] == 1


def test_one_filtered_image_keeps_the_others(client):
    job = generate(client, prompt="three cats [filter]", n=3)

    assert job["status"] == "succeeded"
    statuses = [image["status"] for image in job["images"]]
    assert statuses == ["stored", "stored", "filtered"]
    filtered = job["images"][2]
    assert filtered["url"] is None
    assert filtered["error"]["code"] == "contentFilter"


def test_job_whose_only_image_is_filtered_fails_as_content_filtered(client):
    job = generate(client, prompt="one cat [filter]", n=1)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "contentFilter"
    assert [image["status"] for image in job["images"]] == ["filtered"]


def test_operation_canceled_upstream_fails_the_job(client):
    job = generate(client, prompt="slow one [cancel]")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "canceled"
    assert "timed out" in job["error"]["message"]


def test_operation_failure_upstream_is_reported(client):
    job = generate(client, prompt="broken [fail]")

    assert job["status"] == "failed"
    assert job["error"]["code"] == "internalFailure"


def test_job_past_its_deadline_fails(app_factory, emulator):
    client = app_factory(ATELIER_JOB_DEADLINE_SECONDS=1).test_client()
    job_id = submit(client, prompt="never ends [hang]")["id"]

    job = wait_for_job(client, job_id, timeout=10)

    assert job["status"] == "failed"
    assert job["error"]["code"] == "deadline"
    assert emulator_counts(emulator)["submit"] == 1


BAD_BODIES = [
    ({}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n "}, "prompt"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": "bell \x07 rings"}, "prompt"),
    ({"prompt": "ok", "n": 0}, "n"),
    ({"prompt": "ok", "n": 11}, "n"),
    ({"prompt": "ok", "n": "2"}, "n"),
    ({"prompt": "ok", "n": 2.0}, "n"),
    ({"prompt": "ok", "n": True}, "n"),
    ({"prompt": "ok", "size": "100x100"}, "size"),
    ({"prompt": "ok", "size": "1792x1024"}, "size"),
    ({"prompt": "ok", "options": {"quality": "hd"}}, "options.quality"),
    ({"prompt": "ok", "colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_invalid_job_is_refused_and_creates_nothing(idle_app, emulator, body, field):
    client = idle_app.test_client()

    response = client.post("/api/jobs", json=body)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == field
    assert error["code"] == "invalid_request"
    assert error["message"]
    assert client.get("/api/jobs").get_json()["items"] == []
    assert emulator_counts(emulator)["submit"] == 0


@pytest.mark.parametrize(
    ("data", "content_type"),
    [("not json", "application/json"), ("[1, 2]", "application/json"), ("prompt=x", "text/plain")],
)
def test_body_that_is_not_a_json_object_is_refused(idle_app, data, content_type):
    client = idle_app.test_client()

    response = client.post("/api/jobs", data=data, content_type=content_type)

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_json"
    assert client.get("/api/jobs").get_json()["items"] == []


def test_oversized_body_is_refused(idle_app):
    client = idle_app.test_client()

    # Job-creating JSON may carry a mask as a data URL (up to 6 MB); beyond that: 413.
    response = client.post("/api/jobs", json={"prompt": "x" * 7_000_000})

    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    assert client.get("/api/jobs").get_json()["items"] == []


def test_same_idempotency_key_returns_the_same_job_and_submits_once(client, emulator):
    headers = {"Idempotency-Key": "click-1"}
    first = client.post("/api/jobs", json={"prompt": "a kite"}, headers=headers)
    second = client.post("/api/jobs", json={"prompt": "a kite"}, headers=headers)

    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    wait_for_job(client, first.get_json()["id"])
    assert len(client.get("/api/jobs").get_json()["items"]) == 1
    assert emulator_counts(emulator)["submit"] == 1


def test_idempotency_key_reused_for_other_parameters_is_a_conflict(idle_app):
    client = idle_app.test_client()
    headers = {"Idempotency-Key": "k"}
    client.post("/api/jobs", json={"prompt": "a kite"}, headers=headers)

    response = client.post("/api/jobs", json={"prompt": "a boat"}, headers=headers)

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_key_reused"


def test_unknown_job_is_404_json(idle_app):
    client = idle_app.test_client()

    for response in (
        client.get("/api/jobs/999"),
        client.post("/api/jobs/999/cancel"),
        client.post("/api/jobs/999/retry"),
        client.delete("/api/jobs/999"),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"


def test_queued_job_can_be_canceled_and_is_never_submitted(idle_app, emulator):
    client = idle_app.test_client()
    job_id = submit(client, prompt="changed my mind")["id"]

    response = client.post(f"/api/jobs/{job_id}/cancel")

    assert response.status_code == 200
    assert response.get_json()["status"] == "canceled"
    assert emulator_counts(emulator)["submit"] == 0


def test_running_job_can_be_canceled_and_stays_canceled(client, emulator):
    job_id = submit(client, prompt="wait forever [hang]")["id"]
    wait_for_job(client, job_id, until=lambda job: job["phase"] == "polling")

    polls = emulator_counts(emulator)["poll"]

    canceled = client.post(f"/api/jobs/{job_id}/cancel")
    time.sleep(0.25)  # past the next poll's due time (ATELIER_POLL_INTERVAL_SECONDS=0.2)

    assert canceled.status_code == 200
    assert run_ready(client.application) == 0  # a canceled job is never claimed again
    assert client.get(f"/api/jobs/{job_id}").get_json()["status"] == "canceled"
    assert emulator_counts(emulator)["poll"] == polls


def test_canceling_a_finished_job_is_a_conflict(client):
    job_id = generate(client, prompt="done")["id"]

    response = client.post(f"/api/jobs/{job_id}/cancel")

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "already_finished"


def test_retry_creates_a_new_job_with_the_same_parameters(client, emulator):
    first = generate(client, prompt="again [refuse]", n=2)

    response = client.post(f"/api/jobs/{first['id']}/retry")

    assert response.status_code == 202
    retried = response.get_json()
    assert retried["id"] != first["id"]
    assert retried["retry_of"] == first["id"]
    assert (retried["prompt"], retried["n"], retried["size"]) == ("again [refuse]", 2, "1024x1024")
    wait_for_job(client, retried["id"])
    assert emulator_counts(emulator)["submit"] == 2


def test_retrying_an_active_job_is_a_conflict(idle_app):
    client = idle_app.test_client()
    job_id = submit(client, prompt="still queued")["id"]

    assert client.post(f"/api/jobs/{job_id}/retry").status_code == 409


def test_delete_removes_rows_and_files(app, client):
    job = wait_for_job(client, submit(client, prompt="to delete", size="256x256")["id"])
    data_dir = Path(app.config["ATELIER_DATA_DIR"])
    assert list(data_dir.glob("images/*/*.png"))

    response = client.delete(f"/api/jobs/{job['id']}")

    assert response.status_code == 204
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    assert client.get(f"/files/images/{job['images'][0]['id']}").status_code == 404
    assert not list(data_dir.glob("images/*/*.png"))
    assert not list(data_dir.glob("thumbs/*/*.webp"))


def test_deleting_an_active_job_is_a_conflict(idle_app):
    client = idle_app.test_client()
    job_id = submit(client, prompt="busy")["id"]

    response = client.delete(f"/api/jobs/{job_id}")

    assert response.status_code == 409
    assert client.get(f"/api/jobs/{job_id}").status_code == 200


def test_list_filters_by_status_and_text_and_pages_with_a_cursor(idle_app):
    client = idle_app.test_client()
    ids = [submit(client, prompt=f"castle number {i}")["id"] for i in range(5)]
    post_job(client, prompt="a meadow")
    client.post(f"/api/jobs/{ids[0]}/cancel")

    canceled = client.get("/api/jobs?status=canceled").get_json()["items"]
    castles = client.get("/api/jobs?q=CASTLE").get_json()["items"]
    page1 = client.get("/api/jobs?q=castle&limit=2").get_json()
    page2 = client.get(f"/api/jobs?q=castle&limit=2&cursor={page1['next_cursor']}").get_json()
    page3 = client.get(f"/api/jobs?q=castle&limit=2&cursor={page2['next_cursor']}").get_json()

    assert [job["id"] for job in canceled] == [ids[0]]
    assert [job["id"] for job in castles] == list(reversed(ids))
    paged = [job["id"] for page in (page1, page2, page3) for job in page["items"]]
    assert paged == list(reversed(ids))
    assert page3["next_cursor"] is None


@pytest.mark.parametrize(
    "query", ["status=done", "limit=0", "limit=101", "limit=x", "cursor=not-a-cursor"]
)
def test_list_refuses_bad_parameters(idle_app, query):
    response = idle_app.test_client().get(f"/api/jobs?{query}")

    assert response.status_code == 400
    assert response.get_json()["error"]["field"] in ("status", "limit", "cursor")


def test_api_key_never_appears_in_responses_or_logs(app_factory, caplog):
    from tests.helpers import EMULATOR_KEY

    caplog.set_level("DEBUG")
    app = app_factory()
    client = app.test_client()
    bodies = []
    job_id = submit(client, prompt="secret keeper", n=2)["id"]
    wait_for_job(client, job_id)
    for url in ("/", "/gallery", f"/jobs/{job_id}", f"/partials/jobs/{job_id}", "/api/jobs"):
        response = client.get(url)
        bodies.append(response.get_data(as_text=True) + str(response.headers))
    bad_key = app_factory(AZURE_OPENAI_API_KEY="wrong-" + EMULATOR_KEY).test_client()
    failed = generate(bad_key, prompt="denied")
    bodies.append(str(failed))

    assert failed["error"]["code"] == "unauthorized"
    assert "AZURE_OPENAI_API_KEY" in failed["error"]["message"]
    for text in bodies + [caplog.text]:
        assert EMULATOR_KEY not in text


def test_png_thumbnail_is_a_real_webp_no_larger_than_256(app, client):
    job = generate(client, prompt="thumb")
    with client.get(f"/files/thumbs/{job['images'][0]['id']}") as thumb:
        data = thumb.data

    with PILImage.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        assert max(image.size) == 256


def test_stored_png_is_untouched_and_its_copy_with_prompt_carries_the_parameters(client):
    job = generate(client, prompt="a copper kettle", n=2)

    with client.get(job["images"][1]["url"]) as response:
        assert pngmeta.read(response.data) is None  # the original is the provider's bytes
    with client.get(f"/files/images/{job['images'][1]['id']}/with-prompt") as response:
        metadata = pngmeta.read(response.data)

    assert metadata["prompt"] == "a copper kettle"
    assert (metadata["job_id"], metadata["index"], metadata["n"]) == (job["id"], 1, 2)
    assert (metadata["provider"], metadata["model"]) == (job["provider"], job["model"])
    assert metadata["created_at"] == job["created_at"]
