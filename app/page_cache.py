"""Rendered pages and job cards kept in memory, and the versions of the data that key them.

The rules:

- What is kept, per process and per app (each an LRU: the least recently used goes first):
  - gallery pages (`/gallery`), rendered, keyed by the viewer (`g.viewer_key`), the script
    root, the full path (filters and cursor), the library version and the "new" marker's time
    (none when no image is newer than the visitor's last look, so all such visitors share one);
  - job-card states: what a card shows, as one narrow query returns it, keyed by the job, the
    data version and whose jobs the viewer may see;
  - job cards, rendered, keyed by the viewer, the script root, the card's state and the polling
    delay it asks for. A repeat poll whose ETag (`etag`) still matches gets 304 instead.
- Never kept: a gallery page while a flashed message waits (it is shown once).
- When a kept value goes stale: never in place. Every committed write moves a version, new
  requests then use new keys, and old entries age out of the LRU. The library version moves
  after every write the gallery can show (every write but an UPDATE of jobs: the gallery shows
  no job column the worker's updates touch); the data version after every write at all (a card
  shows a running job's phase). Writers need not remember this: every statement on this app's
  engine is watched, so a change made anywhere (views, the JSON API, the worker, the CLI, code
  not written yet) counts, and any statement the patterns cannot classify counts as a write.
- Why that is enough: a version never moves before its write is visible (on SQLite once the
  writing connection is back in the pool, that is after its transaction ended; on PostgreSQL in
  the writing transaction itself, so both commit together), and a reader ends its own read
  transaction and reads the version before it queries, so whatever it keeps under a version is
  at least as new as that version.
- Where the versions live: on SQLite in two small files in the data folder, which every process
  serving this library shares (the images are there too): a write by the worker process counts
  here. On PostgreSQL in the database, spread to every process and instance by app.coordination
  (its rules say how), so instances need not share a folder for them.
- Why the CSRF placeholder is safe: kept HTML never holds a session's token. Pages and cards are
  rendered with a fixed placeholder where the token goes, and every answer gets the placeholder
  replaced by the token of the session it is sent to. The placeholder is no secret and is made
  of letters, digits and dashes (escaping leaves it alone); should a viewer's own text contain
  it, it becomes that viewer's token, which the same page already carries in its forms.
- A card's ETag is a digest of its key, the session's CSRF token (a stored card must not
  outlive its session) and a time slot (nor the token's time limit), signed with the app's
  secret key, so nobody can guess the tag of a card they were never shown.
- Waiting for the data version to move (`wait_for_data_change`, the job cards' watch,
  app.views.polling): one thread per process and app runs while some request waits (and not
  otherwise), reads the version whenever it may have moved and wakes the waiters when it has.
  It is told: on SQLite by the kernel when any process writes the version file (inotify,
  app.file_watch), on PostgreSQL by the listener's notifications (app.coordination), and by
  this process's own writes at once; where it is not told (no inotify, the listener
  reconnecting), it looks every `WATCH_POLL_S`. So a write by any process or instance reaches
  a waiting request within milliseconds, whatever the number of waiters, and they cost no CPU
  while they wait. The same thread asks each waiter's `gone` check (has its client hung up?)
  every `GONE_CHECK_S` and wakes only those whose client is gone. Each timed wake-up of a
  thread cost about 0.15 ms of CPU on a small VM: looking 40 times a second in each of two
  processes, and a hang-up check per waiting tab every 2 s, were 2 % of a core for 100
  watching tabs (bench.web).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, current_app, g, get_flashed_messages, request, session
from flask_wtf.csrf import generate_csrf
from sqlalchemy import event

from app import coordination, file_watch, storage
from app.models import db

log = logging.getLogger(__name__)

T = TypeVar("T")

# Cached pages carry this instead of a CSRF token; each answer gets the session's own token.
CSRF_PLACEHOLDER = "atelier-csrf-placeholder-0c4e"
LIBRARY_VERSION_FILE = "library.version"
DATA_VERSION_FILE = "data.version"
# Rendered gallery pages are about 80 kB each.
PAGES_KEPT = 64
# Many tabs (or viewers) following one job share a rendered card.
CARDS_KEPT = 256
# Card states of polled jobs, so repeat polls between writes need no query.
STATES_KEPT = 1024
# How often a process looks at the data version while requests wait for it to move and nothing
# tells it of writes (no inotify, PostgreSQL's listener not connected); a write by another
# process (the worker of another gunicorn process, another instance) is then seen this late.
WATCH_POLL_S = 0.025
# The watching thread stops after this long without waiters (the next waiter starts it again).
WATCH_IDLE_S = 2.0
# How often the watching thread asks waiters whether their client has hung up.
GONE_CHECK_S = 2.0

_READ_ONLY = re.compile(
    r"\s*(SELECT|PRAGMA|SAVEPOINT|RELEASE|ROLLBACK|BEGIN|COMMIT|SHOW|SET|EXPLAIN)\b",
    re.IGNORECASE,
)
_JOB_UPDATE = re.compile(r'\s*UPDATE\s+"?jobs"?\s', re.IGNORECASE)
# A statement that may create or drop tables (a migration): the version table may come or go.
_SCHEMA_CHANGE = re.compile(r"\s*(CREATE|DROP|ALTER)\b", re.IGNORECASE)
_SCHEMA_CHANGED = "schema changed"
# Where a connection remembers, until it is back in the pool, which versions it is to move.
_PENDING = "atelier_pending_versions"
# Set on a connection whose transaction moved the versions (PostgreSQL), until back in the pool.
_BUMPED = "atelier_bumped_versions"


class LRU:
    """A small thread-safe LRU: values by key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._making: dict[Hashable, threading.Lock] = {}  # keys being made, one maker each

    def get(self, key: Hashable) -> Any:
        """The kept value, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get_or_make(self, key: Hashable, make: Callable[[], T | None]) -> T | None:
        """The kept value, else `make()`, kept unless None. One request makes a missing value
        while the others asking for the same key wait for it (a watch wakes 100 tabs at once:
        one query and one render, not 100, and not 100 pooled connections at once); the LRU's
        own lock is not held while making."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:
            value = self.get(key)
            if value is not None:
                return value
            try:
                value = make()
                if value is not None:
                    self.put(key, value)
            finally:
                with self._lock:
                    if self._making.get(key) is making:
                        del self._making[key]
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class VersionWatch:
    """Wakes requests waiting for the data version to move: one thread reads the version every
    `WATCH_POLL_S` while anyone waits, and notifies them all when it has changed."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._changed = threading.Condition()
        # Held while nobody has poked: the thread waits to acquire it (a bare lock's timed
        # wait costs half of an Event's, and this wait runs 40 times a second).
        self._poke = threading.Lock()
        self._poke.acquire()
        self._waiters = 0
        self._seen: str | None = None  # the version the thread read last
        self._reads = 0  # how many times it has read it
        self._versions: Counter[str] = Counter()  # the versions waiters wait to move away from
        self._checked: set[_HangUpCheck] = set()  # waiters that can tell their client hung up
        self._thread: threading.Thread | None = None
        self._stopping = False  # the engine was disposed: end the thread (the next wait restarts)
        self._notifier: file_watch.FileWatch | None = None  # SQLite: told of the file's writes

    @property
    def waiters(self) -> int:
        return self._waiters

    def wait(self, version: str, timeout: float, gone: Callable[[], bool] | None = None) -> bool:
        """Whether the data version moved away from `version` within `timeout` seconds. Only a
        read made after this call started counts (an older one may predate `version`). False
        early once `gone()` says so (the watching thread asks it every `GONE_CHECK_S`, from
        its own thread: it must not need the request's context)."""
        deadline = time.monotonic() + timeout
        check = _HangUpCheck(gone) if gone is not None else None
        with self._changed:
            self._waiters += 1
            self._versions[version] += 1
            if check is not None:
                self._checked.add(check)
            self._start()
            first = self._reads + 1
            try:
                while not (self._reads >= first and self._seen != version):
                    left = deadline - time.monotonic()
                    if left <= 0 or (check is not None and check.hung_up):
                        return False
                    self._changed.wait(left)
                return True
            finally:
                self._waiters -= 1
                self._versions[version] -= 1
                if not self._versions[version]:
                    del self._versions[version]
                if check is not None:
                    self._checked.discard(check)

    def poke(self) -> None:
        """The version has moved (this process wrote, or PostgreSQL's listener heard of it):
        read it now, not at the next tick."""
        with contextlib.suppress(RuntimeError):  # already poked
            self._poke.release()
        notifier = self._notifier
        if notifier is not None:
            notifier.wake()

    def stop(self) -> None:
        """The app's engine was disposed (shutdown, a test's end): end the thread now rather
        than let it read through a disposed engine (which would open a connection, and on
        PostgreSQL start the listener again). Waiting requests keep waiting for their timeout;
        the next wait starts a new thread."""
        with self._changed:
            self._stopping = True
            thread = self._thread
        self.poke()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1)

    def _start(self) -> None:
        """Called with the lock held."""
        self._stopping = False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="atelier-version-watch", daemon=True
            )
            self._thread.start()

    def _peek(self) -> str:
        """The data version, as cheaply as it can be had: this runs 40 times a second, and an
        app context and session would cost ten times the read. SQLite: the file, read
        directly; PostgreSQL: the listener's counter in memory, or the row while it is not
        listening."""
        kept: PageCache = self._app.extensions["page_cache"]
        coordinator = kept.coordinator
        if coordinator is None:
            return _read_file_version(os.path.join(kept.data_dir, DATA_VERSION_FILE))
        if coordinator.listening:
            return str(coordinator.data)
        with self._app.app_context():
            try:
                return data_version()
            finally:
                db.session.remove()

    def _check_gone(self) -> bool:
        """Ask each waiter's hang-up check (outside the lock: a check may take a moment);
        whether some waiter's client is gone."""
        with self._changed:
            checks = list(self._checked)
        hung_up = False
        for check in checks:
            try:
                if not check.hung_up and check.gone():
                    check.hung_up = hung_up = True
            except Exception:  # noqa: BLE001 - a failing check only leaves its waiter waiting
                log.exception("a watch's hang-up check failed")
        return hung_up

    def _run(self) -> None:
        kept: PageCache = self._app.extensions["page_cache"]
        coordinator = kept.coordinator
        if coordinator is None:
            self._notifier = _watch_file(os.path.join(kept.data_dir, DATA_VERSION_FILE))
        else:
            coordinator.on_data(self.poke)
        try:
            self._watch()
        finally:
            if coordinator is not None:
                coordinator.off_data(self.poke)
            notifier, self._notifier = self._notifier, None
            if notifier is not None:
                notifier.close()

    def _sleep(self, until: float) -> None:
        """Until the version may have moved, or `until` (the next hang-up check): told by the
        kernel (SQLite's file, on Linux) or by PostgreSQL's listener (a poke), else after
        `WATCH_POLL_S`."""
        notifier = self._notifier
        coordinator = self._app.extensions["page_cache"].coordinator
        told = (notifier is not None and not notifier.lost) or (
            coordinator is not None and coordinator.listening
        )
        if not told:
            self._poke.acquire(True, WATCH_POLL_S)
        elif notifier is not None:
            notifier.wait(until - time.monotonic())
        else:
            self._poke.acquire(True, max(0.0, until - time.monotonic()))

    def _watch(self) -> None:
        idle_since: float | None = None
        next_gone_check = time.monotonic() + GONE_CHECK_S
        while True:
            with self._changed:
                if self._stopping:
                    self._thread = None
                    return
            try:
                seen = self._peek()
            except Exception:  # noqa: BLE001 - a failed read must not end the watch
                log.exception("could not read the data version")
                seen = self._seen
            hung_up = False
            if time.monotonic() >= next_gone_check:
                next_gone_check = time.monotonic() + GONE_CHECK_S
                hung_up = self._check_gone()
            with self._changed:
                # Only when some waiter has news: waking them all on every read would cost
                # 40 wake-ups a second each.
                if hung_up or seen != self._seen or any(v != seen for v in self._versions):
                    self._changed.notify_all()
                self._seen = seen
                self._reads += 1
                if self._waiters:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > WATCH_IDLE_S:
                    self._thread = None
                    return
            self._sleep(next_gone_check)


@dataclass(eq=False)  # one per waiting request, kept in a set by identity
class _HangUpCheck:
    gone: Callable[[], bool]  # whether the waiter's client has hung up
    hung_up: bool = False  # what it said last: the waiter stops waiting


@dataclass
class PageCache:
    """One app's kept values, and where its versions live: the folder holding its version files
    (SQLite), or the coordinator of its database (PostgreSQL)."""

    data_dir: str
    coordinator: coordination.Coordinator | None = None
    pages: LRU = field(default_factory=lambda: LRU(PAGES_KEPT))
    cards: LRU = field(default_factory=lambda: LRU(CARDS_KEPT))
    states: LRU = field(default_factory=lambda: LRU(STATES_KEPT))
    watch: VersionWatch | None = None

    def note_write(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """Remember, on the connection, which versions its writes are to move."""
        if not writes(statement):
            return
        pending = conn.info.setdefault(_PENDING, set())
        pending.add(DATA_VERSION_FILE)
        if changes_gallery(statement):
            pending.add(LIBRARY_VERSION_FILE)
        if self.coordinator is not None and _SCHEMA_CHANGE.match(statement):
            pending.add(_SCHEMA_CHANGED)

    def bump_files(self, dbapi_connection: Any, record: Any) -> None:
        """SQLite: move the version files a connection's writes noted, once it is back in the
        pool, that is after its transaction committed (or rolled back: a needless new version
        costs only a render)."""
        pending = record.info.pop(_PENDING, None) if record is not None else None
        for name in sorted(pending or ()):
            path = os.path.join(self.data_dir, name)
            try:
                bump_version(path)
            except OSError as error:  # e.g. a test's data folder, already deleted
                log.warning("could not write the version file %s: %s", path, error)
        if pending and self.watch is not None:
            self.watch.poke()

    def bump_in_transaction(self, conn: Any) -> None:
        """PostgreSQL: as a writing transaction commits, move its versions inside it."""
        pending = conn.info.get(_PENDING)
        if not pending or self.coordinator is None:
            return
        library = LIBRARY_VERSION_FILE in pending
        recheck = _SCHEMA_CHANGED in pending
        dbapi_connection = conn.connection.dbapi_connection
        if self.coordinator.bump_in_transaction(dbapi_connection, library, recheck):
            conn.info.pop(_PENDING, None)
            conn.info[_BUMPED] = True

    def after_checkin(self, dbapi_connection: Any, record: Any) -> None:
        """PostgreSQL: back in the pool, move the versions of writes no commit covered, and
        learn the versions this connection moved (this process sees its own writes at once)."""
        if record is None or self.coordinator is None:
            return
        pending = record.info.pop(_PENDING, None)
        bumped = record.info.pop(_BUMPED, False)
        if dbapi_connection is None:  # invalidated: the notification will tell
            return
        if pending:
            self.coordinator.bump_alone(
                dbapi_connection, LIBRARY_VERSION_FILE in pending, _SCHEMA_CHANGED in pending
            )
        if pending or bumped:
            self.coordinator.read_back(dbapi_connection)
            if self.watch is not None:
                self.watch.poke()


def init_app(app: Flask) -> None:
    """Give the app its caches and watch its engine (and no other) for writes."""
    kept = PageCache(data_dir=str(storage.current(app).root), coordinator=coordination.for_app(app))
    kept.watch = VersionWatch(app)
    app.extensions["page_cache"] = kept
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", kept.note_write)
    # Before the coordinator stops (insert): a read by the watch in between would start its
    # listener again.
    event.listen(engine, "engine_disposed", lambda _engine: kept.watch.stop(), insert=True)
    if kept.coordinator is None:
        event.listen(engine, "checkin", kept.bump_files)
    else:
        event.listen(engine, "commit", kept.bump_in_transaction)
        event.listen(engine, "checkin", kept.after_checkin)


def caches(app: Flask | None = None) -> PageCache:
    """The app's (by default the current app's) kept values."""
    return (app or current_app).extensions["page_cache"]


# --- what the views call ------------------------------------------------------------------------


def key(*parts: Hashable) -> tuple[Hashable, ...]:
    """A key for something rendered for this viewer: who sees it (their data and their links)
    and what it shows (`parts`)."""
    return (g.get("viewer_key", ""), request.script_root, *parts)


def message_waiting() -> bool:
    """Whether a flashed message waits to be shown (a page that shows it is never kept).
    `get_flashed_messages` is Flask's public way to look: it takes the messages out of the
    session once per request and hands every later call (the page's own) the same list."""
    return bool(get_flashed_messages())


def placeholder_token() -> str:
    """Stands in for `csrf_token()` in templates rendered to be kept."""
    return CSRF_PLACEHOLDER


def with_csrf(page: str) -> str:
    """The page with the session's CSRF token where the placeholder stands."""
    if CSRF_PLACEHOLDER not in page:
        return page
    return page.replace(CSRF_PLACEHOLDER, generate_csrf())


def end_read_transaction() -> None:
    """End a read transaction this request may have begun (SQLite keeps its snapshot until
    then), so the next queries see everything committed before a version was read."""
    current = db.session()
    if current.in_transaction():
        current.commit()


def etag(card_key: tuple[Hashable, ...]) -> str:
    """A card's ETag: see the rules at the top."""
    limit = current_app.config.get("WTF_CSRF_TIME_LIMIT", 3600)
    slot = int(time.time() // (limit / 2)) if limit else 0
    csrf_key = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    material = repr((card_key, session.get(csrf_key), slot))
    secret = str(current_app.secret_key or "").encode()
    return hmac.new(secret, material.encode(), hashlib.sha256).hexdigest()[:32]


# --- versions of the data -----------------------------------------------------------------------


def library_version() -> str:
    """The library's version: it changes after every change the gallery can show."""
    coordinator = caches().coordinator
    if coordinator is not None:
        return str(coordinator.versions(db.session())[0])
    return _read_version(LIBRARY_VERSION_FILE)


def data_version() -> str:
    """The data's version: it changes after every committed write."""
    coordinator = caches().coordinator
    if coordinator is not None:
        return str(coordinator.versions(db.session())[1])
    return _read_version(DATA_VERSION_FILE)


def wait_for_data_change(
    version: str, timeout: float, gone: Callable[[], bool] | None = None
) -> bool:
    """Whether the data version moved away from `version` within `timeout` seconds; False as
    soon as `gone()` (asked every `GONE_CHECK_S` from another thread) says the client hung up.
    The caller must hold no database connection (end its read transaction first): it may wait
    long."""
    watch = caches().watch
    assert watch is not None
    return watch.wait(version, timeout, gone)


def bump_version(path: str | Path) -> None:
    """A new random version, written over the old one in place (every version has the same
    length). Workers commit often, so this is one small write, not a new file and a rename. A
    reader racing it may see a mix of the two; that only ever costs a render, because a version
    moves after its change is committed, so whatever a reader renders is at least that new."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(descriptor, secrets.token_hex(8).encode(), 0)
    finally:
        os.close(descriptor)


def writes(statement: str) -> bool:
    """Whether an SQL statement may write (when in doubt, it may)."""
    return not _READ_ONLY.match(statement)


def changes_gallery(statement: str) -> bool:
    """Whether an SQL statement may change what the gallery shows (when in doubt, it may)."""
    return writes(statement) and not _JOB_UPDATE.match(statement)


def _read_version(name: str) -> str:
    """The version in this file of the data folder ("0" before the first write)."""
    return _read_file_version(os.path.join(caches().data_dir, name))


def _watch_file(path: str) -> file_watch.FileWatch | None:
    """A kernel watch on a version file, or None where there is none to be had. A missing
    file is made holding "0", the version its absence reads as (linked into place whole, so
    no reader ever sees it empty)."""
    if not os.path.exists(path):
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
        with open(temporary, "wb") as made:
            made.write(b"0")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    return file_watch.FileWatch.open(path)


def _read_file_version(path: str) -> str:
    """Plain os calls: this runs on every poll, and pathlib's would cost more than the read."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "0"
    try:
        return os.read(descriptor, 64).decode()
    finally:
        os.close(descriptor)
