"""The model catalogue: families, names it does not list, gpt-image-2's size rule, retirements,
and the settings that name models and routes."""

from __future__ import annotations

import pytest

from app.config import ConfigError, load_settings
from app.image_models import (
    AZURE,
    FAMILIES,
    GPT_IMAGE_2_SIZE_RULE,
    LISTED_MODELS,
    OPENAI,
    UnknownModel,
    family_of,
    resolve_model,
)
from app.providers.catalog import AZURE_DEPLOYMENT, AZURE_V1, emulator_targets
from app.validation import ValidationError, parse_job_request

KEY = "0123456789abcdef"
V1 = "https://res.openai.azure.com/openai/v1/"

# The openai SDK's own list (openai/types/image_model.py, 3.57; azure-image-apis.md §9).
SDK_MODELS = (
    "gpt-image-1.5",
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.6-sunburst",
    "gpt-image-2.6-flare",
    "gpt-image-1",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-3",
)


def load(tmp_path, **environ: str) -> dict:
    return load_settings(environ, str(tmp_path / "instance"))


def azure_v1(tmp_path, deployments: str, **environ: str) -> dict:
    return load(
        tmp_path,
        AZURE_OPENAI_ENDPOINT=V1,
        AZURE_OPENAI_API_KEY=KEY,
        AZURE_OPENAI_DEPLOYMENT=deployments,
        **environ,
    )


# --- families -----------------------------------------------------------------------------------


def test_the_catalogue_lists_every_model_of_the_sdk():
    assert sorted(LISTED_MODELS) == sorted(SDK_MODELS)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("gpt-image-2", "gpt-image-2"),
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2.6-flare", "gpt-image-2"),
        ("chatgpt-image-latest", "gpt-image-2"),
        ("gpt-image-1.5", "gpt-image-1"),
        ("gpt-image-1-mini", "gpt-image-1"),
        ("dall-e-3", "dall-e-3"),
        # Not listed: told from the name.
        ("gpt-image-2.7-x", "gpt-image-2"),
        ("gpt-image-1.6", "gpt-image-1"),
        ("chatgpt-image-2027", "gpt-image-2"),
        # Nothing to tell from.
        ("gpt-image-3", None),
        ("gpt-image-20", None),
        ("flux-pro", None),
    ],
)
def test_a_model_belongs_to_the_family_its_name_tells(name, family):
    assert family_of(name) == family


def test_a_name_without_a_family_is_refused_with_the_families_listed():
    with pytest.raises(UnknownModel) as raised:
        resolve_model("flux-pro", AZURE)
    for family in FAMILIES:
        assert family in str(raised.value)
    assert "flux-pro:FAMILY" in str(raised.value)


def test_an_unknown_family_given_explicitly_is_refused():
    with pytest.raises(UnknownModel, match="unknown model family 'gpt-image-9'"):
        resolve_model("studio-model", AZURE, "gpt-image-9")


def test_only_the_2_5_models_offer_xhigh_and_max_quality():
    def qualities(name):
        return resolve_model(name, OPENAI).option("quality").choices

    assert qualities("gpt-image-2.5-flare")[-2:] == ("xhigh", "max")
    assert "xhigh" not in qualities("gpt-image-2")
    assert "max" not in qualities("gpt-image-2.6-sunburst")


def test_gpt_image_2_has_no_transparent_background_and_no_input_fidelity():
    model = resolve_model("gpt-image-2", AZURE)

    assert model.option("background").choices == ("auto", "opaque")
    assert not model.transparent_background
    assert not model.input_fidelity
    assert resolve_model("gpt-image-1", AZURE).transparent_background


@pytest.mark.parametrize("api", [AZURE, OPENAI])
def test_only_the_gpt_image_families_edit_and_stream(api):
    for name in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-2", "gpt-image-2.5-flare"):
        model = resolve_model(name, api)
        assert model.edits and model.streams
        previews = model.option("partial_images")
        assert (previews.default, previews.minimum, previews.maximum) == (0, 0, 3)
        assert not previews.send_default
    for name in ("dall-e-2", "dall-e-3"):
        model = resolve_model(name, api)
        assert not model.edits and not model.streams
        assert model.option("partial_images") is None


def test_input_fidelity_is_an_option_of_the_gpt_image_1_family_only():
    fidelity = resolve_model("gpt-image-1-mini", AZURE).option("input_fidelity")

    assert (fidelity.default, fidelity.choices, fidelity.send_default) == (
        "low",
        ("low", "high"),
        False,
    )
    assert resolve_model("gpt-image-1", OPENAI).input_fidelity
    for name in ("gpt-image-2", "gpt-image-2.6-sunburst", "chatgpt-image-latest", "dall-e-3"):
        assert resolve_model(name, OPENAI).option("input_fidelity") is None


def test_webp_output_only_where_the_api_allows_it():
    assert "webp" in resolve_model("gpt-image-2", OPENAI).option("output_format").choices
    assert "webp" not in resolve_model("gpt-image-2", AZURE).option("output_format").choices


# --- gpt-image-2 sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", ["1280x720", "1024x1024", "3840x2160", "2160x3840", "1024x640", "3072x1024"]
)
def test_gpt_image_2_accepts_sizes_within_every_rule(size):
    assert GPT_IMAGE_2_SIZE_RULE.problem(size) is None


@pytest.mark.parametrize(
    ("size", "rule"),
    [
        ("1000x1000", "both sides must be multiples of 16 (nearest: 992x992)"),
        ("3856x1296", "the long side may be at most 3840 pixels"),
        ("3840x1024", "3840x1024: the long side may be at most 3 times the short side"),
        ("800x800", "at least 655,360 pixels are needed (this is 640,000)"),
        ("3840x2176", "at most 8,294,400 pixels are allowed (this is 8,355,840)"),
        ("1280×720", "write the size as WIDTHxHEIGHT"),
        ("١٢٨٠x720", "write the size as WIDTHxHEIGHT"),
        ("0x720", "write the size as WIDTHxHEIGHT"),
        ("big", "write the size as WIDTHxHEIGHT"),
    ],
)
def test_gpt_image_2_refuses_a_size_naming_the_rule_it_breaks(size, rule):
    assert rule in GPT_IMAGE_2_SIZE_RULE.problem(size)


def test_the_pixel_bounds_are_inclusive():
    assert GPT_IMAGE_2_SIZE_RULE.problem("1024x640") is None  # exactly 655,360
    assert GPT_IMAGE_2_SIZE_RULE.problem("3840x2160") is None  # exactly 8,294,400


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"size": "1000x1000"}, "size", "multiples of 16"),
        ({"size": "3840x1024"}, "size", "at most 3 times the short side"),
        ({"options": {"background": "transparent"}}, "options.background", "transparent"),
        ({"options": {"input_fidelity": "high"}}, "options.input_fidelity", "no option"),
        ({"options": {"quality": "xhigh"}}, "options.quality", "Quality must be one of"),
        ({"options": {"moderation": "off"}}, "options.moderation", "auto, low"),
        ({"n": 11}, "n", "between 1 and 10"),
        ({"prompt": "x" * 32_001}, "prompt", "the limit for gpt-image-2 is 32000"),
    ],
)
def test_a_gpt_image_2_request_breaking_a_rule_names_the_field(tmp_path, body, field, words):
    targets = azure_v1(tmp_path, "studio=gpt-image-2")["ATELIER_TARGETS"]

    with pytest.raises(ValidationError) as raised:
        parse_job_request({"prompt": "a lighthouse", **body}, targets)

    assert raised.value.field == field
    assert words in raised.value.message


def test_a_form_asks_for_a_custom_size_with_width_and_height(tmp_path):
    targets = azure_v1(tmp_path, "studio=gpt-image-2")["ATELIER_TARGETS"]
    form = {"prompt": "a lighthouse", "size": "custom", "size_width": "1280", "size_height": "720"}

    assert parse_job_request(form, targets, from_form=True).size == "1280x720"
    with pytest.raises(ValidationError, match="Enter the custom width and height"):
        parse_job_request({**form, "size_height": ""}, targets, from_form=True)


# --- settings -----------------------------------------------------------------------------------


def test_a_gpt_image_2_deployment_on_the_v1_endpoint_uses_the_v1_route(tmp_path):
    settings = azure_v1(tmp_path, "studio=gpt-image-2")

    [target] = settings["ATELIER_TARGETS"]
    assert (target.id, target.api, target.model.name) == ("azure:studio", AZURE_V1, "gpt-image-2")
    assert settings["ATELIER_MODEL_NOTICES"] == []


@pytest.mark.parametrize(
    ("raw", "endpoint", "api"),
    [
        ("https://res.openai.azure.com/openai/v1", V1, AZURE_V1),
        (
            "https://proj.services.ai.azure.com/openai/v1/",
            "https://proj.services.ai.azure.com/openai/v1/",
            AZURE_V1,
        ),  # noqa: E501
        ("https://res.openai.azure.com/", "https://res.openai.azure.com/", AZURE_DEPLOYMENT),
        # The classic endpoint with its /openai/ path: the routes add openai/ themselves.
        ("https://res.openai.azure.com/openai/", "https://res.openai.azure.com/", AZURE_DEPLOYMENT),
    ],
)
def test_both_endpoint_forms_and_both_hosts_are_understood(tmp_path, raw, endpoint, api):
    settings = load(
        tmp_path,
        AZURE_OPENAI_ENDPOINT=raw,
        AZURE_OPENAI_API_KEY=KEY,
        AZURE_OPENAI_DEPLOYMENT="studio=gpt-image-2",
    )

    assert settings["AZURE_OPENAI_ENDPOINT"] == endpoint
    assert settings["ATELIER_TARGETS"][0].api == api


def test_an_unlisted_model_takes_its_family_from_its_name_with_a_notice(tmp_path):
    settings = azure_v1(tmp_path, "next=gpt-image-2.7-x")

    assert settings["ATELIER_TARGETS"][0].model.family == "gpt-image-2"
    [notice] = settings["ATELIER_MODEL_NOTICES"]
    assert "gpt-image-2.7-x is not in Atelier's model catalogue" in notice
    assert "gpt-image-2 family" in notice


def test_an_unlisted_model_can_name_its_family(tmp_path):
    settings = azure_v1(tmp_path, "house=house-painter:gpt-image-1")

    model = settings["ATELIER_TARGETS"][0].model
    assert (model.name, model.family) == ("house-painter", "gpt-image-1")


def test_a_model_with_no_family_stops_start_up_saying_what_to_write(tmp_path):
    with pytest.raises(ConfigError) as raised:
        azure_v1(tmp_path, "art=flux-pro")

    message = str(raised.value)
    assert "AZURE_OPENAI_DEPLOYMENT entry 'art=flux-pro'" in message
    assert "flux-pro:FAMILY" in message
    assert "gpt-image-2" in message


def test_openai_image_models_accept_gpt_image_2_and_default_to_it(tmp_path):
    default = load(tmp_path, OPENAI_API_KEY=KEY)["ATELIER_TARGETS"]
    chosen = load(
        tmp_path, OPENAI_API_KEY=KEY, OPENAI_IMAGE_MODELS="gpt-image-2,gpt-image-2.5-flare"
    )

    assert [t.id for t in default] == ["openai:gpt-image-2"]
    assert [t.model.name for t in chosen["ATELIER_TARGETS"]] == [
        "gpt-image-2",
        "gpt-image-2.5-flare",
    ]


def test_a_retired_openai_model_gives_a_warning_naming_its_replacement(tmp_path):
    settings = load(tmp_path, OPENAI_API_KEY=KEY, OPENAI_IMAGE_MODELS="gpt-image-1,dall-e-3")

    notices = settings["ATELIER_MODEL_NOTICES"]
    assert any(
        "gpt-image-1 was retired on OpenAI on 2026-10-23" in n and "gpt-image-2" in n
        for n in notices
    )
    assert any("dall-e-3 was retired on OpenAI on 2026-05-12" in n for n in notices)
    assert all(t.retired for t in settings["ATELIER_TARGETS"])


def test_an_endpoint_without_a_deployment_explains_how_to_name_one(tmp_path):
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, AZURE_OPENAI_ENDPOINT=V1, AZURE_OPENAI_API_KEY=KEY)

    message = str(raised.value)
    assert "AZURE_OPENAI_DEPLOYMENT=studio=gpt-image-2" in message
    assert "AZURE_OPENAI_ASYNC_DALLE2=on" in message


def test_the_retired_async_api_is_offered_only_when_asked_for(tmp_path):
    classic = "https://res.openai.azure.com/"
    settings = load(
        tmp_path,
        AZURE_OPENAI_ENDPOINT=classic,
        AZURE_OPENAI_API_KEY=KEY,
        AZURE_OPENAI_ASYNC_DALLE2="on",
    )

    assert [t.id for t in settings["ATELIER_TARGETS"]] == ["azure-async"]
    with pytest.raises(ConfigError, match="classic endpoint"):
        load(
            tmp_path,
            AZURE_OPENAI_ENDPOINT=V1,
            AZURE_OPENAI_API_KEY=KEY,
            AZURE_OPENAI_ASYNC_DALLE2="on",
        )


def test_a_dall_e_2_deployment_is_refused_as_retired(tmp_path):
    with pytest.raises(ConfigError, match="dall-e-2 deployments are retired"):
        azure_v1(tmp_path, "old=dall-e-2")


def test_demo_mode_offers_gpt_image_2_first_on_the_v1_route():
    first = emulator_targets()[0]

    assert (first.model.name, first.api, first.emulated) == ("gpt-image-2", AZURE_V1, True)
    assert {t.model.family for t in emulator_targets()} == set(FAMILIES)
