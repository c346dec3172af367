"""gpt-image-2 on Azure's v1 route, end to end, against an Azure-compatible server that is not ours.

`IndependentAzureV1` is written from the protocol reference (azure-image-apis.md §3.6, §9), not
from our emulator: `POST {resource}/openai/v1/images/generations` with the deployment name in
`model`, the `api-key` header, an optional `api-version`, and an answer with `b64_json`, `usage`
and the top-level `created`/`size`/`quality`/`output_format` fields OpenAI-style servers send.
It draws a real PNG of the size asked for, and records every request, so a test can check both
what Atelier stored and that a refused request never left Atelier.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import func, select, update
from werkzeug.wrappers import Request, Response

from app.auth import accounts
from app.models import Job, db
from app.providers.generations import end_user_id
from app.worker import start_background
from tests.helpers import post, serving_wsgi, wait_for_job

KEY = "v1-key-" + "0f" * 12
DEPLOYMENT = "studio"


class IndependentAzureV1:
    def __init__(self) -> None:
        self.url = ""
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_json(silent=True) or {}
        with self._lock:
            self.seen.append(
                {
                    "path": request.path,
                    "args": dict(request.args),
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
        return self.answer(request, body)(environ, start_response)

    def answer(self, request: Request, body: dict[str, Any]) -> Response:
        if request.path != "/openai/v1/images/generations" or request.method != "POST":
            return _json(404, {"error": {"code": "404", "message": "Resource not found"}})
        if request.headers.get("api-key") != KEY:
            return _json(401, {"error": {"code": "401", "message": "Access denied."}})
        if body.get("model") != DEPLOYMENT:
            return _json(
                404,
                {"error": {"code": "DeploymentNotFound", "message": "The API deployment for "
                           "this resource does not exist."}},
            )  # fmt: skip
        width, height = (int(side) for side in str(body.get("size", "1024x1024")).split("x"))
        picture = io.BytesIO()
        Image.new("RGB", (width, height), (30, 90, 160)).save(picture, "PNG")
        return _json(
            200,
            {
                "created": int(time.time()),
                "background": "opaque",
                "output_format": "png",
                "quality": "medium",
                "size": f"{width}x{height}",
                "data": [
                    {"b64_json": base64.b64encode(picture.getvalue()).decode()}
                    for _ in range(int(body.get("n", 1)))
                ],
                "usage": {
                    "input_tokens": 12,
                    "input_tokens_details": {"image_tokens": 0, "text_tokens": 12},
                    "output_tokens": 1200,
                    "total_tokens": 1212,
                },
            },
        )

    def posts(self) -> list[dict[str, Any]]:
        return [entry for entry in self.seen if entry["path"].endswith("/images/generations")]


def _json(status: int, payload: dict[str, Any]) -> Response:
    return Response(json.dumps(payload), status=status, mimetype="application/json")


@pytest.fixture
def azure_v1() -> Iterator[IndependentAzureV1]:
    server_app = IndependentAzureV1()
    with serving_wsgi(server_app) as server_app.url:
        yield server_app


@pytest.fixture
def make_v1_app(app_factory, azure_v1):
    """Apps pointed at the independent server (conftest's app_factory stops and closes them)."""

    def build(start: bool = True, **settings: Any):
        return app_factory(
            start_worker=start,
            **{
                "AZURE_OPENAI_ENDPOINT": azure_v1.url + "openai/v1/",
                "AZURE_OPENAI_API_KEY": KEY,
                "AZURE_OPENAI_DEPLOYMENT": f"{DEPLOYMENT}=gpt-image-2",
                "AZURE_OPENAI_ASYNC_DALLE2": "off",
                **settings,
            },
        )

    return build


def job_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job))


def test_a_1280x720_image_is_generated_through_the_json_api(make_v1_app, azure_v1):
    app = make_v1_app()
    client = app.test_client()

    response = client.post("/api/jobs", json={"prompt": "a harbour at dusk", "size": "1280x720"})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])

    assert job["status"] == "succeeded", job
    assert (job["provider"], job["model"], job["size"]) == (
        "azure:studio",
        "gpt-image-2",
        "1280x720",
    )
    [image] = job["images"]
    assert (image["status"], image["width"], image["height"]) == ("stored", 1280, 720)
    [post] = azure_v1.posts()
    assert post["body"]["model"] == DEPLOYMENT
    assert post["body"]["size"] == "1280x720"
    assert post["headers"]["Api-Key"] == KEY
    # The v1 API needs no api-version, and the classic route's dated default is not sent there.
    assert post["args"] == {}
    # `moderation` is left at the server's default rather than sent (not confirmed for Azure).
    assert "moderation" not in post["body"]
    assert job["cost_usd"] is None  # no price known for gpt-image-2: unknown, not $0


def test_a_1280x720_image_is_generated_through_the_form(make_v1_app, azure_v1):
    app = make_v1_app()
    client = app.test_client()
    form = {
        "prompt": "a harbour at dusk, from the form",
        "provider": "azure:studio",
        "size": "custom",
        "size_width": "1280",
        "size_height": "720",
        "n": "1",
    }

    status, text, headers = post(client, "/jobs", form)

    assert status == 303, text
    job_id = int(headers["Location"].rstrip("/").rsplit("/", 1)[1])
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    assert (job["images"][0]["width"], job["images"][0]["height"]) == (1280, 720)
    assert azure_v1.posts()[0]["body"]["size"] == "1280x720"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"size": "1000x1000"}, "size", "multiples of 16"),
        ({"size": "3840x1024"}, "size", "the long side may be at most 3 times the short side"),
        (
            {"options": {"background": "transparent"}},
            "options.background",
            "cannot make a transparent background",
        ),
    ],
)
def test_a_size_or_option_gpt_image_2_cannot_make_is_refused_before_anything_is_sent(
    make_v1_app, azure_v1, body, field, words
):
    app = make_v1_app()

    response = app.test_client().post("/api/jobs", json={"prompt": "a harbour", **body})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["field"] == field
    assert words in error["message"]
    assert job_count(app) == 0
    assert azure_v1.seen == []


def test_the_form_refuses_a_bad_custom_size_naming_the_rule(make_v1_app, azure_v1):
    app = make_v1_app()
    client = app.test_client()
    form = {"prompt": "a harbour", "size": "custom", "size_width": "3840", "size_height": "1024"}

    status, text, _ = post(client, "/jobs", form)

    assert status == 422
    assert "3840x1024: the long side may be at most 3 times the short side." in text
    assert job_count(app) == 0
    assert azure_v1.seen == []


def test_the_size_is_checked_as_you_type(make_v1_app):
    client = make_v1_app(start=False).test_client()
    query = {"provider": "azure:studio", "size": "custom", "size_width": "3840"}

    too_wide = client.get("/costs/estimate", query_string={**query, "size_height": "1024"})
    fine = client.get("/costs/estimate", query_string={**query, "size_height": "2160"})

    assert too_wide.status_code == 422
    assert "at most 3 times the short side" in too_wide.get_data(as_text=True)
    assert fine.status_code == 200
    assert "Cost unknown" in fine.get_data(as_text=True)


def test_api_version_preview_is_sent_when_asked_for(make_v1_app, azure_v1):
    app = make_v1_app(AZURE_OPENAI_DEPLOYMENT_API_VERSION="preview")
    client = app.test_client()

    job_id = client.post("/api/jobs", json={"prompt": "a harbour"}).get_json()["id"]

    assert wait_for_job(client, job_id)["status"] == "succeeded"
    assert azure_v1.posts()[0]["args"] == {"api-version": "preview"}


def _job_of_an_account(app) -> tuple[int, int]:
    """A queued job owned by a new account (the worker is not running yet)."""
    with app.app_context():
        owner = accounts.create_user("painter", "a long enough password")
        response = app.test_client().post("/api/jobs", json={"prompt": "a harbour"})
        job_id = response.get_json()["id"]
        db.session.execute(update(Job).where(Job.id == job_id).values(owner_id=owner.id))
        db.session.commit()
        return job_id, owner.id


@pytest.mark.parametrize("setting", ["on", "off"])
def test_requests_carry_a_salted_hash_of_the_account_unless_turned_off(
    make_v1_app, azure_v1, setting
):
    app = make_v1_app(start=False, ATELIER_SAFETY_IDENTIFIER=setting)
    job_id, owner_id = _job_of_an_account(app)

    start_background(app)

    assert wait_for_job(app.test_client(), job_id)["status"] == "succeeded"
    sent = azure_v1.posts()[0]["body"]
    if setting == "off":
        assert "user" not in sent
        assert "safety_identifier" not in sent
    else:
        # Azure documents `user` (§3.2); the value identifies the account without naming it.
        assert sent["user"] == end_user_id(app.secret_key, owner_id)
        assert "painter" not in sent["user"]


def test_the_safety_identifier_is_stable_per_account_and_differs_between_accounts():
    first = end_user_id("secret", 1)

    assert first == end_user_id("secret", 1)
    assert first != end_user_id("secret", 2)
    assert first != end_user_id("another install", 1)
    assert end_user_id("secret", None) is None
    assert len(first) <= 64


def test_an_unknown_deployment_name_fails_the_job_with_the_servers_reason(make_v1_app, azure_v1):
    app = make_v1_app(AZURE_OPENAI_DEPLOYMENT="missing=gpt-image-2")
    client = app.test_client()

    job = wait_for_job(client, client.post("/api/jobs", json={"prompt": "x"}).get_json()["id"])

    assert job["status"] == "failed"
    assert job["error"]["code"] == "not_found"
    assert "missing" in job["error"]["message"]


def test_a_job_of_a_retired_model_stays_browsable_and_generate_again_offers_the_current_one(
    make_v1_app,
):
    app = make_v1_app(start=False)
    client = app.test_client()
    job_id = client.post("/api/jobs", json={"prompt": "an old favourite"}).get_json()["id"]
    with app.app_context():
        db.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(provider="azure:dalle3", model="dall-e-3", status="failed", phase=None)
        )
        db.session.commit()

    page = client.get(f"/jobs/{job_id}")
    again = client.get(f"/?reuse={job_id}").get_data(as_text=True)

    assert page.status_code == 200
    assert "dall-e-3" in page.get_data(as_text=True)
    assert '<option selected value="azure:studio">' in again
    assert "dall-e-3 is retired or no longer configured; this uses gpt-image-2." in again
    assert "an old favourite" in again


def test_the_providers_api_describes_families_free_sizes_and_retirement(make_v1_app):
    client = make_v1_app(
        start=False,
        OPENAI_API_KEY="sk-" + "0" * 20,
        OPENAI_IMAGE_MODELS="gpt-image-2.5-flare,dall-e-3",
    ).test_client()

    providers = {p["id"]: p for p in client.get("/api/providers").get_json()["items"]}

    studio = providers["azure:studio"]
    assert (studio["family"], studio["api"], studio["priced"]) == ("gpt-image-2", "azure_v1", False)
    assert studio["custom_sizes"]["max_ratio"] == 3
    assert studio["options"]["background"]["choices"] == ["auto", "opaque"]
    assert "xhigh" in providers["openai:gpt-image-2.5-flare"]["options"]["quality"]["choices"]
    assert providers["openai:dall-e-3"]["retired"]["date"] == "2026-05-12"
    assert providers["openai:dall-e-3"]["custom_sizes"] is None
