"""What the tests of edits through the app share (issue #15): the provider that edits, test
pictures and masks as file bytes, and the files an app has stored."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from flask import Flask
from PIL import Image as PILImage

from tests.helpers import EMULATOR_KEY

EDITOR = "azure:gpt-image-1"  # a provider whose model takes images, on the test emulator
# app_factory settings for an app that edits with EDITOR on the test emulator, without latency.
EDITOR_SETTINGS: dict[str, Any] = {
    "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
    "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1",
    "ATELIER_EMULATOR_LATENCY_SECONDS": 0,
}


def png(size: tuple[int, int] = (64, 48), mode: str = "RGB", color: Any = (200, 40, 40)) -> bytes:
    """A PNG of one colour."""
    out = io.BytesIO()
    PILImage.new(mode, size, color).save(out, "PNG")
    return out.getvalue()


def mask(size: tuple[int, int] = (64, 48)) -> bytes:
    """A mask PNG: opaque, but for its transparent left half, the area to change."""
    image = PILImage.new("RGBA", size, (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def stored_files(app: Flask) -> set[str]:
    """The image and thumbnail files in the app's data folder, as paths relative to it."""
    root = Path(app.config["ATELIER_DATA_DIR"])
    return {
        str(path.relative_to(root))
        for folder in ("images", "thumbs")
        for path in (root / folder).rglob("*")
        if path.is_file()
    }
