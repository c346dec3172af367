"""When a job's card asks for news, and the watch that tells it at once (issue #18, point 1).

Two channels, so an image is on screen within a few hundred milliseconds of being stored, for
every job (a fresh install's first jobs and slower-than-usual ones included), while 100 tabs
watching jobs stay under 5 % of a core (`bench.web`, `bench.flow`):

- The watch (push, by long poll): a page with running jobs (static/prompt.js) sends one `GET
  /partials/jobs/watch?cards=<id>.<state>,...` naming each card it shows and the digest of the state
  it shows (`state_digest`, carried by the card). The request returns as soon as one of those cards
  shows something else than what the database holds now (its id is in `changed`, with its new card,
  which the page swaps in), or after `WATCH_S` with nothing changed; the page then watches again.
  While it waits it holds no database connection and costs no CPU: it sleeps until the data version
  moves (app.page_cache.wait_for_data_change, which sees any process's writes within 25 ms), then
  compares the cards' states again (one narrow query per job and data version, shared by every tab).
  Auth is that of the cards: states are read with the viewer's owner filter, so another user's job
  looks like no job at all, and a digest names a state only for this viewer (HMAC with the secret
  key). Each process lets at most `watch_slots()` requests wait at once (each holds a server thread:
  app.gunicorn_conf sizes them); beyond that a watch answers at once with `retry_ms`, and the page
  falls back to polling.
- Polling, by the card's own `hx-trigger` delay: on a watched page (the request says so with
  `X-Atelier-Watched`) only a safety net every `WATCHED_MS`. Unwatched (no JavaScript watch,
  no free slot), a slow schedule by the job's age, and four times a second in a short window
  around the moment the job is expected to finish: the median time recent jobs of the same
  provider and model took from creation to finish (none without enough history). Repeat
  polls of an unchanged card are 304s (app.views.partials).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import select

from app import page_cache, parsing
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

# The watch: how long one request waits for a change before the page asks again (well under
# the 60 s a reverse proxy usually allows a response), the most cards one watch may name, and
# how long a page waits before watching again when no slot was free.
WATCH_S = 20.0
MAX_WATCHED_CARDS = 50
BUSY_RETRY_MS = 2000
# Requests that may wait at once per process when the server does not say (app.gunicorn_conf
# sets it beside its request threads; `python -m app` has a thread per request).
DEFAULT_WATCH_SLOTS = 64
# A watched card's own polls: only a safety net (the watch tells it when to look).
WATCHED_MS = 30_000
WATCHED_HEADER = "X-Atelier-Watched"
# `cards`: "<job id>.<state digest>" pairs, comma-separated; a digest may be empty (a card
# rendered by a full page carries none, so the first watch fetches it once).
_CARD = re.compile(r"([0-9]{1,10})\.([0-9a-f]{0,32})")
DIGEST_CHARS = 16


class BadWatch(ValueError):
    """A watch request that names its cards wrongly (the message says how)."""


def parse_cards(raw: str) -> dict[int, str]:
    """The cards a watch names: job id -> the digest of the state the page shows."""
    parts = [part for part in raw.split(",") if part]
    if not parts:
        raise BadWatch("Name at least one card: cards=<job id>.<state>,...")
    if len(parts) > MAX_WATCHED_CARDS:
        raise BadWatch(f"A watch may name at most {MAX_WATCHED_CARDS} cards.")
    cards: dict[int, str] = {}
    for part in parts:
        found = _CARD.fullmatch(part)
        if found is None or parsing.parse_id(found.group(1)) is None:
            raise BadWatch(f"{part[:40]!r} is not <job id>.<state>.")
        cards[int(found.group(1))] = found.group(2)
    return cards


def state_digest(job_id: int, shown: str | None) -> str:
    """The digest of what a job's card shows for this viewer (None: no such job, or not
    theirs), signed with the secret key: a page echoes it in its watch."""
    material = repr((g.get("viewer_key", ""), job_id, shown))
    secret = str(current_app.secret_key or "").encode()
    return hmac.new(secret, material.encode(), hashlib.sha256).hexdigest()[:DIGEST_CHARS]


def watch(
    cards: dict[int, str],
    shown: Callable[[int], str | None],
    end_reads: Callable[[], None],
    gone: Callable[[], bool],
    timeout: float | None = None,
) -> list[int] | None:
    """The ids of the cards whose state now differs from the digest the page sent, as soon as
    there is one; [] after `timeout` (default `WATCH_S`) without any, or once the page has
    hung up (`gone()`, asked every `page_cache.GONE_CHECK_S` from the version watch's thread:
    a page that names new cards drops its watch, and the slot must not stay taken); None when
    no slot is free (the page polls).
    `shown(job_id)` is what the card shows now (one query per job and data version);
    `end_reads()` releases the database before each wait."""
    slots = _state(current_app).slots
    if not slots.acquire(blocking=False):
        return None
    try:
        deadline = time.monotonic() + (WATCH_S if timeout is None else timeout)
        while True:
            version = page_cache.data_version()  # before the states: they are at least this new
            changed = [
                job_id
                for job_id, digest in cards.items()
                if not hmac.compare_digest(state_digest(job_id, shown(job_id)), digest)
            ]
            if changed:
                return changed
            end_reads()
            left = deadline - time.monotonic()
            if left <= 0 or not page_cache.wait_for_data_change(version, left, gone):
                return []
    finally:
        slots.release()


def watch_slots(app: Flask | None = None) -> int:
    """Watches that may wait at once in this process: as app.gunicorn_conf set it, else
    ATELIER_WATCH_SLOTS from the environment (`python -m app`), else the default."""
    config = (app or current_app).config
    raw = config.get("ATELIER_WATCH_SLOTS", os.environ.get("ATELIER_WATCH_SLOTS"))
    return DEFAULT_WATCH_SLOTS if raw in (None, "") else int(raw)


def card_delay(age: float, job_id: int, watched: bool) -> int:
    """The delay a card asks for: the safety net on a watched page, else the schedule."""
    if watched:
        return WATCHED_MS
    return delay_for(age, expected_finish(job_id))


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
    def __init__(self, slots: int) -> None:
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(max(slots, 1)) if slots > 0 else _NoSlots()
        self.targets: dict[int, tuple[str, str]] = {}
        self.expected: dict[tuple[str, str], tuple[float, str, float | None]] = {}


def _state(app: Flask) -> _State:
    """Per app (tests run several apps in one process, on different databases)."""
    state: Any = app.extensions.get("atelier_polling")
    if state is None:
        state = app.extensions.setdefault("atelier_polling", _State(watch_slots(app)))
    return state


class _NoSlots:
    """ATELIER_WATCH_SLOTS=0: no request ever waits (every page polls)."""

    def acquire(self, blocking: bool = True) -> bool:
        return False

    def release(self) -> None:
        raise AssertionError("never acquired")
