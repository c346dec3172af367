"""The documentation keeps up with the code: every setting is in README.md and .env.example."""

from __future__ import annotations

import pytest

from app.config import SETTINGS
from tests.helpers import ROOT


@pytest.mark.parametrize("document", ["README.md", ".env.example"])
def test_every_setting_is_documented(document):
    text = (ROOT / document).read_text()

    missing = [setting.name for setting in SETTINGS if setting.name not in text]

    assert missing == []


def test_readme_shows_the_two_commands():
    text = (ROOT / "README.md").read_text()

    assert "make run" in text
    assert "make test" in text
