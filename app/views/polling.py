"""When a job's card asks for news: its polling schedule (issue #18, point 1).

A card polls on a slow schedule by the job's age, and four times a second in a short window
around the moment the job is expected to finish: the median time recent jobs of the same
provider and model took from creation to finish. So an image is on screen within about a
quarter of a second of being stored when the provider is as fast as usual, while 100 tabs
watching a job still cost little (`bench.web`): 250 ms polls all the time would cost each tab
four requests a second. Without enough history (a new install, a new model) only the slow
schedule applies. Repeat polls of an unchanged card are 304s (app.views.partials).
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select

from app import page_cache
from app.models import Job, JobStatus, db

# The slow schedule, by the job's age: (younger than, seconds) -> milliseconds. A new card
# looks again after 1 s (a queued job is picked up at once and shows it is sending), then every
# 5 s for the first minute, 8 s up to five minutes, 10 s after that.
SCHEDULE_MS = ((1, 1000), (60, 5000), (300, 8000))
SLOWEST_MS = 10_000
# The fast window: from this long before the expected finish until this long after it.
FAST_MS = 250
WINDOW_BEFORE_S = 0.5
WINDOW_AFTER_S = 1.0
# Delays before the window are rounded down to this, so a card's delay (part of its ETag: each
# new value is a render) takes few values.
GRAIN_MS = 250
# The expected finish: the median of this many recent succeeded jobs, at least MIN_HISTORY of
# them, per provider and model; read again when the library version has moved (a job has
# finished, among other changes) and HISTORY_TTL_S seconds have passed, or right away while
# there is not enough history (a new install's first jobs).
HISTORY = 20
MIN_HISTORY = 3
HISTORY_TTL_S = 30.0
# Jobs whose provider and model are remembered per process (they never change).
KNOWN_JOBS = 4096


def delay_for(age: float, expected: float | None = None) -> int:
    """Milliseconds before the card of a job created `age` seconds ago asks for news, when
    jobs like it finish `expected` seconds after creation (None: not known)."""
    slow = slow_delay(age)
    if expected is None:
        return slow
    start, end = expected - WINDOW_BEFORE_S, expected + WINDOW_AFTER_S
    if start <= age < end:
        return FAST_MS
    if age < start:  # look first when the window opens, unless the slow schedule is sooner
        until = int((start - age) * 1000 // GRAIN_MS) * GRAIN_MS
        return max(FAST_MS, min(slow, until))
    return slow


def slow_delay(age: float) -> int:
    for younger_than, delay in SCHEDULE_MS:
        if age < younger_than:
            return delay
    return SLOWEST_MS


def expected_finish(job_id: int, app: Flask | None = None) -> float | None:
    """Seconds from creation to finish of recent succeeded jobs of this job's provider and
    model (their median), or None without enough of them."""
    state = _state(app or current_app)
    target = state.targets.get(job_id)
    if target is None:
        with db.engine.connect() as connection:
            row = connection.execute(
                select(Job.provider, Job.model).where(Job.id == job_id)
            ).first()
        if row is None:
            return None
        target = (row[0], row[1])
        with state.lock:
            if len(state.targets) >= KNOWN_JOBS:
                state.targets.clear()
            state.targets[job_id] = target
    return expected_for(*target, app=app)


def expected_for(provider: str, model: str, app: Flask | None = None) -> float | None:
    state = _state(app or current_app)
    now, version = time.monotonic(), page_cache.library_version()
    kept = state.expected.get((provider, model))
    if kept is not None and (
        kept[1] == version or (kept[2] is not None and now - kept[0] < HISTORY_TTL_S)
    ):
        return kept[2]
    with db.engine.connect() as connection:
        rows = connection.execute(
            select(Job.created_at, Job.finished_at)
            .where(
                Job.provider == provider,
                Job.model == model,
                Job.status == JobStatus.SUCCEEDED,
                Job.finished_at.is_not(None),
            )
            .order_by(Job.id.desc())
            .limit(HISTORY)
        ).all()
    took = [(finished - created).total_seconds() for created, finished in rows]
    value = statistics.median(took) if len(took) >= MIN_HISTORY else None
    with state.lock:
        state.expected[(provider, model)] = (now, version, value)
    return value


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.targets: dict[int, tuple[str, str]] = {}
        self.expected: dict[tuple[str, str], tuple[float, str, float | None]] = {}


def _state(app: Flask) -> _State:
    """Per app (tests run several apps in one process, on different databases)."""
    state: Any = app.extensions.get("atelier_polling")
    if state is None:
        state = app.extensions.setdefault("atelier_polling", _State())
    return state
