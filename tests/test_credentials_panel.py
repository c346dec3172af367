"""The Content Credentials panel (templates/images/_credentials.html) on the image page and the
share page, the gallery's "With valid credentials" filter, and ATELIER_C2PA_TRUST_ANCHORS: its
start-up checks and the trust it gives `credentials.inspect` inside the app."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import update

from app import credentials
from app.auth.accounts import create_user
from app.auth.shares import create_share
from app.config import ConfigError
from app.emulator.content_credentials import ContentSigner
from app.models import Image, write_transaction
from tests.helpers import cells, get, insert_images, make_app, settings_from

VALID: dict[str, Any] = {
    "valid": True,
    "trusted": False,
    "generator": "Azure OpenAI",
    "signer": "Microsoft Corporation",
    "software_agent": "gpt-image-2",
    "ai_generated": True,
    "signed_at": "2026-05-01T12:00:05+00:00",
    "signed_at_source": "timestamp",
    "ingredients": [],
    "issues": [],
}


def summary(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def image_with(app, content_credentials: dict[str, Any] | None, *, prompt: str = "cc") -> int:
    """An image row whose stored Content Credentials are `content_credentials`."""
    (image_id,) = insert_images(app, 1, prompt=prompt)
    with app.app_context(), write_transaction() as session:
        session.execute(
            update(Image)
            .where(Image.id == image_id)
            .values(
                file_name=f"images/00/{image_id:064d}.png",  # no file: the panel needs none
                **credentials.columns(content_credentials),
            )
        )
    return image_id


def panel_of(page: str) -> str:
    match = re.search(r'<section class="credentials".*?</section>', page, re.S)
    assert match, "the page has no Content Credentials panel"
    return match.group(0)


def text_of(fragment: str) -> str:
    """The visible text of markup, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def image_panel(app, content_credentials: dict[str, Any] | None) -> str:
    image_id = image_with(app, content_credentials)
    status, page, _ = get(app.test_client(), f"/images/{image_id}")
    assert status == 200, page
    return panel_of(page)


def fact(panel: str, term: str) -> str:
    """The text of the definition list's entry for `term`."""
    match = re.search(rf"<dt>{re.escape(term)}</dt><dd>(.*?)</dd>", panel, re.S)
    assert match, f"no {term!r} entry in {panel}"
    return text_of(match.group(1))


# --- the panel on the image page ----------------------------------------------------------------


def test_an_image_without_a_manifest_says_it_has_no_content_credentials(app):
    panel = image_panel(app, None)

    assert "No Content Credentials." in text_of(panel)
    assert "carries no signed C2PA manifest" in text_of(panel)
    assert "<dl" not in panel  # nothing to list


def test_a_valid_credential_from_an_unknown_authority_is_valid_but_not_trusted(app):
    panel = image_panel(app, summary(trusted=False))
    text = text_of(panel)

    assert 'class="credentials-status credentials-valid"' in panel
    assert "Valid. The signature verifies" in text
    assert "Signer not trusted." in text
    assert "does not know the certificate authority" in text
    assert "That is not tampering." in text
    assert "Invalid" not in text and "Trusted signer" not in text
    assert fact(panel, "Generator") == "Azure OpenAI"
    assert fact(panel, "Signer") == "Microsoft Corporation"
    assert fact(panel, "Software agent") == "gpt-image-2"
    assert fact(panel, "AI generation") == "Declares AI generation"


def test_a_valid_credential_from_a_configured_authority_is_trusted(app):
    text = text_of(image_panel(app, summary(trusted=True)))

    assert "Valid." in text and "Trusted signer." in text
    assert "not trusted" not in text


def test_an_invalid_credential_lists_its_issues_and_no_trust_verdict(app):
    issues = [
        "the file's bytes changed after signing: the data hash does not match "
        "(assertion.dataHash.mismatch)",
        "an ingredient: the claim signature does not verify",
    ]
    panel = image_panel(app, summary(valid=False, issues=issues))
    text = text_of(panel)

    assert 'class="credentials-status credentials-invalid"' in panel
    assert "Invalid. The manifest is there but does not check out" in text
    listed = re.search(r'<ul class="credentials-issues"[^>]*>(.*?)</ul>', panel, re.S).group(1)
    assert [text_of(item) for item in re.findall(r"<li>(.*?)</li>", listed, re.S)] == issues
    assert "Valid." not in text and "not trusted" not in text and "Trusted signer" not in text


def test_the_verdict_is_written_in_words_not_only_shown_in_colour(app):
    for content_credentials, words in (
        (None, "No Content Credentials."),
        (summary(), "Valid."),
        (summary(valid=False, issues=["broken"]), "Invalid."),
    ):
        panel = image_panel(app, content_credentials)
        status = re.search(r'<p class="credentials-status[^"]*">(.*?)</p>', panel, re.S).group(1)
        assert words in text_of(re.sub(r'<span[^>]*aria-hidden="true"[^>]*>.*?</span>', "", status))


def test_a_timestamped_signing_time_is_shown_in_utc_as_attested(app):
    panel = image_panel(app, summary(signed_at="2026-05-01T14:00:05+02:00"))

    assert '<time datetime="2026-05-01T12:00:05+00:00">2026-05-01 12:00:05 UTC</time>' in panel
    assert fact(panel, "Signed").endswith("(attested by a timestamp authority)")
    assert "stated by the signer" not in panel


def test_a_signing_time_the_manifest_only_claims_says_it_is_the_signers_word(app):
    panel = image_panel(app, summary(signed_at="2026-05-01T12:00:05Z", signed_at_source="claimed"))

    assert fact(panel, "Signed") == (
        "2026-05-01 12:00:05 UTC (stated by the signer, not attested by a timestamp authority)"
    )


def test_a_signing_time_that_is_not_iso_is_shown_as_stated_without_a_machine_time(app):
    panel = image_panel(app, summary(signed_at="yesterday at noon", signed_at_source="claimed"))

    assert fact(panel, "Signed").startswith("yesterday at noon (stated by the signer")
    assert "<time" not in panel


def test_an_edits_ingredients_are_listed_and_absent_without_any(app):
    panel = image_panel(app, summary(ingredients=["valley.png", "sky-mask.png"]))

    listed = re.search(r'<ul class="credentials-ingredients">(.*?)</ul>', panel, re.S).group(1)
    assert [text_of(item) for item in re.findall(r"<li>(.*?)</li>", listed, re.S)] == [
        "valley.png",
        "sky-mask.png",
    ]
    assert "inputs this edit names" in fact(panel, "Ingredients")
    assert "Ingredients" not in image_panel(app, summary(ingredients=[]))


def test_missing_names_show_a_dash_and_no_ai_declaration_says_so(app):
    panel = image_panel(
        app, summary(generator=None, signer=None, software_agent=None, ai_generated=False)
    )

    for term in ("Generator", "Signer", "Software agent"):
        assert fact(panel, term) == "—"
    assert fact(panel, "AI generation") == "Not declared"
    assert "Declares AI generation" not in panel


def test_names_from_a_manifest_are_escaped_and_bidi_controls_made_visible(app):
    panel = image_panel(
        app, summary(signer="<script>alert(1)</script>", generator="evil\u202egnp.exe")
    )

    assert "<script>alert(1)</script>" not in panel
    assert "&lt;script&gt;" in panel
    assert "\u202e" not in panel and "U+202E" in panel


# --- the share page -----------------------------------------------------------------------------


def shared_page(app, image_id: int) -> str:
    with app.app_context():
        owner = create_user(f"sharer{image_id}", "violet kettle harbour drums 42", admin=True)
        _, token = create_share(owner.id, image_id=image_id, days=7)
    status, page, _ = get(app.test_client(), f"/s/{token}")
    assert status == 200, page
    return page


def test_a_shared_image_shows_the_same_panel(app):
    image_id = image_with(app, summary(ingredients=["valley.png"], signed_at_source="claimed"))
    _, image_page, _ = get(app.test_client(), f"/images/{image_id}")

    page = shared_page(app, image_id)

    assert panel_of(page) == panel_of(image_page)
    assert "/static/credentials.css" in page


def test_a_shared_image_without_a_manifest_says_so(app):
    page = shared_page(app, image_with(app, None))

    assert "No Content Credentials." in text_of(panel_of(page))


# --- the gallery filter -------------------------------------------------------------------------


def filter_box(page: str) -> str:
    match = re.search(r'<input type="checkbox" id="filter-credentials"[^>]*>', page)
    assert match, "the gallery has no credentials filter"
    return match.group(0)


def test_the_valid_credentials_filter_shows_only_images_that_verified_and_stays_ticked(app):
    valid = image_with(app, summary(), prompt="valid")
    untrusted = image_with(app, summary(trusted=False), prompt="untrusted")
    invalid = image_with(app, summary(valid=False, issues=["broken"]), prompt="invalid")
    bare = image_with(app, None, prompt="bare")
    client = app.test_client()

    _, everything, _ = get(client, "/gallery")
    _, only_valid, _ = get(client, "/gallery?credentials=valid")

    assert set(cells(everything)) == {valid, untrusted, invalid, bare}
    box = filter_box(everything)
    assert 'name="credentials"' in box and 'value="valid"' in box and "checked" not in box
    assert 'for="filter-credentials">With valid credentials<' in everything
    assert set(cells(only_valid)) == {valid, untrusted}
    assert "checked" in filter_box(only_valid)
    # The partial that search-as-you-type loads keeps the filter in the address bar too.
    with client.get("/partials/gallery/results?credentials=valid") as response:
        assert "credentials=valid" in response.headers["HX-Replace-Url"]
        assert set(cells(response.get_data(as_text=True))) == {valid, untrusted}


def test_an_invalid_credentials_url_keeps_its_own_ticked_box(app):
    image_with(app, summary(), prompt="valid")
    invalid = image_with(app, summary(valid=False, issues=["broken"]), prompt="invalid")

    _, page, _ = get(app.test_client(), "/gallery?credentials=invalid")

    assert set(cells(page)) == {invalid}
    box = filter_box(page)
    assert 'value="invalid"' in box and "checked" in box
    assert "With invalid credentials" in page


def test_an_unknown_credentials_filter_is_refused_with_the_reason(app):
    image_with(app, summary())

    status, page, _ = get(app.test_client(), "/gallery?credentials=maybe")

    assert status == 400
    assert "Credentials must be one of valid, invalid." in page
    assert cells(page) == []


# --- ATELIER_C2PA_TRUST_ANCHORS -----------------------------------------------------------------


def test_no_trust_anchors_setting_means_none(tmp_path):
    settings = settings_from(tmp_path)

    assert settings["ATELIER_C2PA_TRUST_ANCHORS"] is None
    assert settings["ATELIER_C2PA_TRUST_ANCHORS_PEM"] is None


def test_a_missing_trust_anchors_file_stops_start_up_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"ATELIER_C2PA_TRUST_ANCHORS=.*cannot be read"):
        settings_from(tmp_path, ATELIER_C2PA_TRUST_ANCHORS=str(tmp_path / "nowhere.pem"))


def test_a_trust_anchors_folder_stops_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"ATELIER_C2PA_TRUST_ANCHORS=.*cannot be read"):
        settings_from(tmp_path, ATELIER_C2PA_TRUST_ANCHORS=str(tmp_path))


def test_a_trust_anchors_file_that_is_not_pem_stops_start_up(tmp_path):
    der = tmp_path / "root.der"
    der.write_bytes(b"\x30\x82\x01\x0a" + bytes(64))

    with pytest.raises(ConfigError, match=r"ATELIER_C2PA_TRUST_ANCHORS=.*holds no PEM certificate"):
        settings_from(tmp_path, ATELIER_C2PA_TRUST_ANCHORS=str(der))


def test_a_trust_anchors_file_with_a_damaged_certificate_stops_start_up(tmp_path):
    pem = ContentSigner().root_pem
    damaged = tmp_path / "roots.pem"
    damaged.write_text(
        pem + "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )

    with pytest.raises(ConfigError, match=r"ATELIER_C2PA_TRUST_ANCHORS=.*certificate 2 of 2"):
        settings_from(tmp_path, ATELIER_C2PA_TRUST_ANCHORS=str(damaged))


def test_the_trust_anchors_file_is_read_once_at_start_up(tmp_path):
    pem = ContentSigner().root_pem
    path = tmp_path / "roots.pem"
    path.write_text("Root CA of the test\n" + pem)

    settings = settings_from(tmp_path, ATELIER_C2PA_TRUST_ANCHORS=str(path))

    assert settings["ATELIER_C2PA_TRUST_ANCHORS"] == str(path)
    assert settings["ATELIER_C2PA_TRUST_ANCHORS_PEM"].strip() == pem.strip()


def signed_picture(signer: ContentSigner) -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (96, 64), "teal").save(buffer, "PNG")
    return signer.sign(buffer.getvalue(), "png", model="gpt-image-2")


def test_inspect_inside_the_app_trusts_the_configured_roots(tmp_path: Path, app):
    signer = ContentSigner()
    roots = tmp_path / "roots.pem"
    roots.write_text(signer.root_pem)
    data = signed_picture(signer)
    trusting = make_app(tmp_path / "trusting", ATELIER_C2PA_TRUST_ANCHORS=str(roots))

    with trusting.app_context():
        trusted = credentials.inspect(data, "image/png")
    with app.app_context():  # an app without the setting
        untrusted = credentials.inspect(data, "image/png")
    outside = credentials.inspect(data, "image/png")  # no app: no configured roots

    assert trusted is not None and trusted["valid"] and trusted["trusted"]
    assert untrusted is not None and untrusted["valid"] and not untrusted["trusted"]
    assert outside is not None and outside["valid"] and not outside["trusted"]


def test_an_explicit_trust_anchors_argument_wins_over_the_configured_roots(tmp_path, app):
    signer, stranger = ContentSigner(), ContentSigner()
    roots = tmp_path / "roots.pem"
    roots.write_text(stranger.root_pem)
    trusting_stranger = make_app(tmp_path / "other", ATELIER_C2PA_TRUST_ANCHORS=str(roots))
    data = signed_picture(signer)

    with trusting_stranger.app_context():
        configured = credentials.inspect(data, "image/png")
        explicit = credentials.inspect(data, "image/png", trust_anchors=signer.root_pem)

    assert configured is not None and not configured["trusted"]
    assert explicit is not None and explicit["trusted"]
