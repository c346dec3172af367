"""Bidirectional controls in a prompt are shown as visible marks, never applied to the page."""

from __future__ import annotations

from app.views.display import visible_controls

TROJAN = "a cat \u202eeman eurt\u202c on a mat"


def test_a_bidi_control_becomes_a_mark_naming_it():
    html = str(visible_controls(TROJAN))

    assert "\u202e" not in html and "\u202c" not in html
    assert '<span class="control-char" title="Right-To-Left Override">U+202E</span>' in html
    assert '<span class="control-char" title="Pop Directional Formatting">U+202C</span>' in html


def test_text_around_a_mark_is_still_escaped():
    assert str(visible_controls("<b>\u2067x")) == (
        '&lt;b&gt;<span class="control-char" title="Right-To-Left Isolate">U+2067</span>x'
    )


def test_a_prompt_without_controls_is_only_escaped():
    assert str(visible_controls("fish & <chips>")) == "fish &amp; &lt;chips&gt;"


def test_every_page_that_shows_the_prompt_shows_the_marks(idle_app):
    client = idle_app.test_client()
    job_id = client.post("/api/jobs", json={"prompt": TROJAN}).get_json()["id"]

    for path in ("/", f"/jobs/{job_id}", "/history"):
        page = client.get(path).get_data(as_text=True)
        assert "\u202e" not in page, path
        assert 'title="Right-To-Left Override">U+202E</span>' in page, path
