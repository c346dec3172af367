"""Deliberate crashes at named points, so tests can prove that no fault loses or repeats work.

With ATELIER_TEST_CRASH_AT=<point> the process kills itself (SIGKILL: no cleanup, like a power
cut or the OOM killer) the first time it reaches that point. Unset, `crash_point` does nothing.

    after_commit    a new job's row is committed, the request has not answered yet
    during_submit   the provider accepted the prompt, the answer is not recorded yet
    mid_poll        a poll was answered, the answer is not recorded yet
    mid_download    one image is stored and recorded, the others are not
    after_rename    an image file is in place, its row is not written yet
    mid_stream      a streaming job's first partial frame is recorded, the stream goes on
    repair_written  `repair-originals`: a restored original, its thumbnails and sidecars are
                    written, no row names them yet
    repair_committed            ... the rows name the restored original, the old file is there
    repair_thumbnails_removed   ... the old thumbnails are gone, the old original is not
    migrate_copy    `storage migrate`: a few objects are copied to the target, the rest not
"""

from __future__ import annotations

import os
import signal

from flask import current_app

POINTS = (
    "after_commit",
    "during_submit",
    "mid_poll",
    "mid_download",
    "after_rename",
    "mid_stream",
    "repair_written",
    "repair_committed",
    "repair_thumbnails_removed",
    "migrate_copy",
)


def crash_point(name: str) -> None:
    if current_app.config.get("ATELIER_TEST_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
