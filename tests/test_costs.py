"""What jobs cost: the price table, the estimate before submitting (form fragment and JSON API),
and the cost a finished job records, from token usage or from the table. Jobs run through the
real worker against the emulator over loopback."""

from __future__ import annotations

import re

import pytest

from app import jobs, pricing
from app.models import Job, db
from app.validation import JobRequest
from tests.browser import wait_for_js, watch_problems
from tests.helpers import submit, wait_for_job

DEPLOYMENTS = {"AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1,dall-e-3=dall-e-3"}
GPT_IMAGE = "azure:gpt-image-1"
DALL_E_3 = "azure:dall-e-3"


@pytest.fixture
def app_settings():
    return DEPLOYMENTS


# --- the price table ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "n", "options", "dollars"),
    [
        ("dall-e-2", "256x256", 1, {}, 0.016),
        ("dall-e-2", "512x512", 1, {}, 0.018),
        ("dall-e-2", "1024x1024", 3, {}, 0.060),
        ("dall-e-3", "1024x1024", 1, {"quality": "standard"}, 0.040),
        ("dall-e-3", "1024x1792", 1, {"quality": "standard"}, 0.080),
        ("dall-e-3", "1024x1024", 1, {"quality": "hd"}, 0.080),
        ("dall-e-3", "1792x1024", 1, {"quality": "hd"}, 0.120),
        ("gpt-image-1", "1024x1024", 1, {"quality": "low"}, 0.011),
        ("gpt-image-1", "1024x1024", 2, {"quality": "medium"}, 0.084),
        ("gpt-image-1", "1536x1024", 1, {"quality": "high"}, 0.250),
        ("gpt-image-1", "1024x1536", 1, {"quality": "low"}, 0.016),
    ],
)
def test_price_table_gives_the_published_figures(model, size, n, options, dollars):
    assert pricing.estimate(model, size, n, options) == pytest.approx(dollars)


def test_auto_quality_and_size_are_priced_as_medium_and_square():
    assert pricing.estimate("gpt-image-1", "auto", 1, {"quality": "auto"}) == pytest.approx(0.042)


def test_every_model_and_size_the_form_offers_has_a_price_or_an_unknown_cost():
    from app.image_models import AZURE, OPENAI, listed_models

    for api in (AZURE, OPENAI):
        for model in listed_models(api):
            qualities = model.option("quality").choices if model.option("quality") else ("",)
            for size in model.sizes:
                for quality in qualities:
                    cost = pricing.known_estimate(model.name, size, 1, {"quality": quality})
                    if model.name in pricing.PER_IMAGE and quality not in ("xhigh", "max"):
                        assert cost > 0, (model.name, size, quality)
                    else:  # never shown as $0
                        assert cost is None, (model.name, size, quality)


def test_a_model_without_a_price_has_an_unknown_cost_not_zero():
    assert pricing.known_estimate("gpt-image-2", "1280x720", 2, {"quality": "high"}) is None
    with pytest.raises(pricing.UnknownPrice):
        pricing.estimate("gpt-image-2", "1024x1024", 1)


def test_cost_from_usage_prices_text_image_and_output_tokens():
    usage = {
        "input_tokens": 150,
        "input_tokens_details": {"text_tokens": 50, "image_tokens": 100},
        "output_tokens": 1056,
        "total_tokens": 1206,
    }

    cost = pricing.cost_from_usage("gpt-image-1", usage)

    assert cost == pytest.approx((50 * 5 + 100 * 10 + 1056 * 40) / 1_000_000)


def test_cost_from_usage_without_a_breakdown_counts_input_as_text():
    usage = {"input_tokens": 10, "output_tokens": 272}

    assert pricing.cost_from_usage("gpt-image-1", usage) == pytest.approx((10 * 5 + 272 * 40) / 1e6)


@pytest.mark.parametrize(
    ("model", "usage"),
    [
        ("dall-e-3", {"input_tokens": 10, "output_tokens": 10}),  # billed per image
        ("gpt-image-1", None),
        ("gpt-image-1", {"total_tokens": 1100}),
        ("gpt-image-1", {"input_tokens": "ten", "output_tokens": 10}),
        ("gpt-image-1", {"input_tokens": -1, "output_tokens": 10}),
    ],
)
def test_usage_that_cannot_be_priced_gives_none(model, usage):
    assert pricing.cost_from_usage(model, usage) is None


@pytest.mark.parametrize(
    ("amount", "text"), [(0.04, "$0.04"), (0.042, "$0.042"), (0.0, "$0.00"), (12.5, "$12.50")]
)
def test_dollar_amounts_show_cents_and_a_third_decimal_only_when_needed(amount, text):
    assert pricing.format_usd(amount) == text


# --- the estimate before submitting -------------------------------------------------------------


def test_prompt_form_shows_the_estimate_and_asks_for_a_new_one_when_a_field_changes(client):
    page = client.get("/").get_data(as_text=True)

    # The model's fields ask for a new estimate when one of them changes, and swap it in.
    estimate = re.search(r'<div id="model-options"[^>]*>', page).group(0)
    assert 'hx-get="/costs/estimate"' in estimate
    assert 'hx-include="closest form"' in estimate
    assert 'hx-trigger="change, input delay:300ms"' in estimate
    assert 'hx-target="find .cost-estimate"' in estimate
    assert "Estimated cost: <strong>$" in page
    assert "200 of 200 images left today" in page
    assert "<script>" not in page and "hx-on" not in page


def test_estimate_fragment_prices_the_chosen_provider_size_and_quality(client):
    response = client.get(
        "/costs/estimate", query_string={"provider": DALL_E_3, "size": "1792x1024", "quality": "hd"}
    )

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Estimated cost: <strong>$0.12</strong>" in body
    assert 'id="cost-estimate"' in body  # it replaces the estimate in the form


def test_estimate_fragment_multiplies_by_the_number_of_images(client):
    response = client.get(
        "/costs/estimate",
        query_string={"provider": GPT_IMAGE, "size": "1024x1024", "n": "3", "quality": "low"},
    )

    assert "$0.033" in response.get_data(as_text=True)


def test_new_provider_fields_bring_their_own_estimate(client):
    body = client.get("/partials/model-options", query_string={"provider": DALL_E_3}).get_data(
        as_text=True
    )

    assert 'id="cost-estimate"' in body
    assert "Estimated cost: <strong>$0.04</strong>" in body


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"provider": "azure:nope"}, "Unknown provider"),
        ({"provider": DALL_E_3, "size": "256x256"}, "must be one of 1024x1024"),
        ({"provider": DALL_E_3, "n": "2"}, "one image per request"),
        ({"provider": GPT_IMAGE, "quality": "ultra"}, "Quality must be one of"),
        ({"provider": GPT_IMAGE, "n": "lots"}, "whole number"),
    ],
)
def test_estimate_fragment_refuses_bad_input_with_a_clear_message(client, query, words):
    response = client.get("/costs/estimate", query_string=query)

    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert words in body
    assert '<span class="field-error">' in body


def test_api_estimate_returns_dollars(client):
    response = client.get(
        "/api/estimate",
        query_string={"provider": GPT_IMAGE, "size": "1536x1024", "n": "2", "quality": "high"},
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["cost_usd"] == pytest.approx(0.5)
    assert body["currency"] == "USD"
    assert body["model"] == "gpt-image-1"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"provider": "openai:dall-e-9"}, "provider"),
        ({"provider": DALL_E_3, "size": "10x10"}, "size"),
        ({"provider": GPT_IMAGE, "n": "11"}, "n"),
    ],
)
def test_api_estimate_refuses_bad_input_naming_the_field(client, query, field):
    response = client.get("/api/estimate", query_string=query)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field
    assert error["message"]


def test_estimating_stores_nothing(idle_app):
    client = idle_app.test_client()
    client.get("/api/estimate", query_string={"provider": GPT_IMAGE})
    client.get("/costs/estimate", query_string={"provider": GPT_IMAGE})

    with idle_app.app_context():
        assert db.session.query(Job).count() == 0


# --- what a job cost ----------------------------------------------------------------------------


def test_new_job_carries_its_estimate(idle_app):
    client = idle_app.test_client()

    job = submit(client, prompt="a fox", provider=DALL_E_3, options={"quality": "hd"})

    assert (job["cost_usd"], job["cost_source"]) == (pytest.approx(0.08), "estimate")
    card = client.get(f"/partials/jobs/{job['id']}").get_data(as_text=True)
    assert "$0.08 estimated" in card


def test_gpt_image_job_costs_what_its_token_usage_says(client):
    job = submit(client, prompt="a paper crane", provider=GPT_IMAGE, options={"quality": "low"})
    assert job["cost_source"] == "estimate"

    job = wait_for_job(client, job["id"])

    assert job["status"] == "succeeded", job["error"]
    assert job["usage"]["output_tokens"] > 0
    assert job["cost_source"] == "usage"
    assert job["cost_usd"] == pytest.approx(pricing.cost_from_usage("gpt-image-1", job["usage"]))
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert f"{pricing.format_usd(job['cost_usd'])} from token usage" in page


def test_dall_e_3_job_costs_the_table_price_of_its_stored_image(client):
    job = submit(client, prompt="a tin robot", provider=DALL_E_3, options={"quality": "hd"})

    job = wait_for_job(client, job["id"])

    assert job["status"] == "succeeded", job["error"]
    assert (job["cost_usd"], job["cost_source"]) == (pytest.approx(0.08), "table")
    page = client.get(f"/jobs/{job['id']}").get_data(as_text=True)
    assert "<dt>Cost</dt><dd>$0.08 estimated</dd>" in page


def test_refused_prompt_costs_nothing(client):
    job = submit(client, prompt="nothing doing [refuse]", provider=DALL_E_3)

    job = wait_for_job(client, job["id"])

    assert job["status"] == "failed"
    assert (job["cost_usd"], job["cost_source"]) == (0.0, "table")


def test_job_canceled_before_it_was_sent_costs_nothing(idle_app):
    with idle_app.app_context():
        job, _ = jobs.create_job(
            JobRequest(prompt="never mind", provider=DALL_E_3, size="1024x1024"), owner_id=None
        )
        canceled = jobs.cancel_job(job.id)

        assert (canceled.cost_usd, canceled.cost_source) == (0.0, "table")


def test_job_canceled_after_it_was_sent_keeps_its_estimate(idle_app):
    with idle_app.app_context():
        job, _ = jobs.create_job(
            JobRequest(prompt="too late", provider=DALL_E_3, size="1024x1024"), owner_id=None
        )
        jobs.mark_submitting(jobs.claim_due_job())
        canceled = jobs.cancel_job(job.id)

        assert (canceled.cost_usd, canceled.cost_source) == (pytest.approx(0.04), "estimate")


# --- in a browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.browser import serve_app

    with serve_app(tmp_path_factory.mktemp("costs-browser")) as base:
        yield base


def settled(page) -> None:
    """Wait until htmx has settled swapped-in fields (their triggers work from then on)."""
    wait_for_js(page, "() => !document.querySelector('.htmx-added, .htmx-settling')")


def test_estimate_follows_the_form_in_a_browser_without_csp_errors(served, browser):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    errors = watch_problems(page)
    try:
        page.goto(served + "/")
        estimate = page.locator("#cost-estimate")
        # The default, gpt-image-2, has no price in the table: unknown, never $0.
        expect(estimate).to_contain_text("Cost unknown")
        page.get_by_label("Provider").select_option(
            label="gpt-image-1 · Azure deployment gpt-image-1 (emulator)"
        )
        expect(estimate).to_contain_text("Estimated cost: $0.042")  # gpt-image-1, auto quality
        settled(page)

        page.get_by_label("Quality").select_option("high")
        expect(estimate).to_contain_text("Estimated cost: $0.167")
        page.get_by_role("spinbutton", name="Images").fill("2")
        page.get_by_role("spinbutton", name="Images").press("Tab")
        expect(estimate).to_contain_text("Estimated cost: $0.33")

        page.get_by_label("Provider").select_option(
            label="dall-e-3 · Azure deployment dall-e-3 (retired) (emulator)"
        )
        expect(estimate).to_contain_text("Estimated cost: $0.04")
        settled(page)
        page.get_by_label("Quality").select_option("hd")
        page.get_by_label("Size").select_option("1792x1024")
        expect(estimate).to_contain_text("Estimated cost: $0.12")
        expect(estimate).to_contain_text("200 of 200 images left today")
    finally:
        context.close()
    assert errors == [], f"the page reported errors: {errors}"
