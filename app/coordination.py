"""Coordination between the processes and instances that share one PostgreSQL database: the
versions that key every process's page caches (app.page_cache), and wake-ups for idle workers.

Which mechanism each database uses:

- SQLite: nothing here runs. The versions are two small files in the data folder
  (app.page_cache) and idle workers poll for due jobs every `worker.MAX_IDLE_WAIT`.
- PostgreSQL: the versions are two counters in the one row of `data_versions`, spread by
  `NOTIFY atelier_versions`; idle workers wait on `NOTIFY atelier_jobs`.

The rules on PostgreSQL:

- Where a version moves: inside the writing transaction, as its last statement. When a
  connection that wrote (app.page_cache decides which versions its statements move) commits, the
  `commit` event increments the counters and sends `NOTIFY atelier_versions, '<library> <data>'`
  on the same connection, in the same transaction. The write and its new version commit together
  or not at all, and PostgreSQL delivers the notification only once it has committed.
  Why not after the transaction, as the files do: page_cache's rule is that a version may never
  be seen before its write is visible; after the commit keeps that, and so does the same
  transaction (the new counters are invisible until the commit makes the write visible too).
  But after the commit a crash or a lost connection between the commit and the bump loses the
  bump, and every process then keeps serving pages cached before that write until some later
  write; in the same transaction nothing can separate the two. Writers take turns on the row only
  for the moment of their commit (it is their last statement), and it is one row, so no deadlock.
  A write a commit does not cover (a rolled-back or autocommit one) moves the versions on its
  own when its connection goes back to the pool, as the files did. Before the migration that
  makes the table (and after a statement that changed the schema, until it is seen again),
  whether it exists is asked first; while it does not, writes move nothing.
- What a process knows: the highest counters it has seen (they only grow, so merging by maximum
  makes the order in which news arrives irrelevant), only ever from committed values: the
  notifications, the row read by the listener each time it (re)connects, the row read back when a
  connection that wrote goes back to the pool (so a process sees its own writes at once, as with
  the files), and readers' own queries.
- Readers stay cheap: while the listener is connected and listening, in this very process (a
  forked child does not inherit its thread), a reader takes the counters from memory. Otherwise
  it reads the row (one primary-key query): correctness never depends on the listener.
  Another instance's write shows once its notification arrives (milliseconds): until then a
  reader uses the older version, which keys only what was kept before, as it would have had it
  read a moment earlier.
- The listener: one thread and one dedicated psycopg connection (autocommit) per process and
  database (apps built in one process on one database URL share it), started on first need (a
  reader, an idle worker), never by create_app; it reconnects with backoff (`MIN_BACKOFF` doubling
  to `MAX_BACKOFF`), checks its connection every `HEALTH_SECONDS`, and is stopped when an app's
  engine is disposed (the next need starts it again).
- Jobs: the transactions that queue a job (create, retry, generate again) or free a place under
  the concurrency cap (cancel) send `NOTIFY atelier_jobs` (`jobs_changed`); every subscribed idle
  worker of every instance wakes at once, and again whenever the listener reconnects (it may have
  missed one). Jobs released until a later time are not announced: the thread that released one
  idles only until its next due time, and every idle thread wakes at least every
  `worker.NOTIFIED_IDLE_WAIT` while listening (`worker.MAX_IDLE_WAIT` when not).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session

from app.models import DataVersions, db

log = logging.getLogger(__name__)

VERSIONS_CHANNEL = "atelier_versions"
JOBS_CHANNEL = "atelier_jobs"
# The listener's connection, as pg_stat_activity shows it.
APPLICATION_NAME = "atelier-listener"
MIN_BACKOFF, MAX_BACKOFF = 0.1, 5.0
HEALTH_SECONDS = 5.0
# How often the listener looks up from waiting (to stop promptly).
WAIT_SLICE = 0.5

_BUMP = f"""
INSERT INTO data_versions (id, library_version, data_version) VALUES (1, %s, 1)
ON CONFLICT (id) DO UPDATE SET
    library_version = data_versions.library_version + EXCLUDED.library_version,
    data_version = data_versions.data_version + 1
RETURNING library_version, data_version,
    pg_notify('{VERSIONS_CHANNEL}', library_version || ' ' || data_version)
"""
_READ = "SELECT library_version, data_version FROM data_versions WHERE id = 1"


class Coordinator:
    """One process's view of one database's versions, and its listener."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.library = 0
        self.data = 0
        self.min_backoff = MIN_BACKOFF  # a test may hold the listener off longer
        self.notifications = 0  # version notifications received (tests look)
        self.connections = 0  # successful (re)connections of the listener
        self._lock = threading.Lock()
        self._listening_pid = 0  # the pid whose listener is connected, 0 when none
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._stop = threading.Event()
        self._table_ready = False
        self._job_callbacks: list[Callable[[str], None]] = []
        self._data_callbacks: list[Callable[[], None]] = []
        self._connection: Any = None

    # --- readers --------------------------------------------------------------------------

    def versions(self, session: Session) -> tuple[int, int]:
        """(library, data): from memory while listening, else read from the row."""
        if self._listening_pid == os.getpid():
            return self.library, self.data
        self.ensure_listening()
        row = session.execute(select(DataVersions.library_version, DataVersions.data_version))
        found = row.first()
        if found is not None:
            self.merge(found[0], found[1])
        return self.library, self.data

    @property
    def listening(self) -> bool:
        return self._listening_pid == os.getpid()

    def merge(self, library: int, data: int) -> None:
        with self._lock:
            self.library = max(self.library, int(library))
            moved = int(data) > self.data
            self.data = max(self.data, int(data))
            callbacks = list(self._data_callbacks) if moved else []
        for callback in callbacks:
            callback()

    def on_data(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever the data version moves (the cards' watch sleeps until
        then instead of looking 40 times a second)."""
        with self._lock:
            self._data_callbacks.append(callback)

    def off_data(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._data_callbacks.remove(callback)

    # --- writers (raw DBAPI connections, from the engine's events) -----------------------

    def bump_in_transaction(
        self, dbapi_connection: Any, library: bool, recheck: bool = False
    ) -> bool:
        """Move the versions as the transaction's last statement. False when the table does
        not exist (a database being migrated; `recheck` after the schema changed) or the
        transaction has already failed."""
        from psycopg.pq import TransactionStatus

        if dbapi_connection.info.transaction_status == TransactionStatus.INERROR:
            return False
        if recheck:
            self._table_ready = False
        if not self._table_exists(dbapi_connection):
            return False
        with dbapi_connection.cursor() as cursor:
            cursor.execute(_BUMP, (1 if library else 0,))
        return True

    def bump_alone(self, dbapi_connection: Any, library: bool, recheck: bool = False) -> None:
        """Move the versions in a transaction of their own (a write no commit covered)."""
        try:
            if self.bump_in_transaction(dbapi_connection, library, recheck):
                dbapi_connection.commit()
        except Exception as error:
            log.warning("could not move the data versions: %s", error)
        finally:
            _end_transaction(dbapi_connection)

    def read_back(self, dbapi_connection: Any) -> None:
        """Learn the row's counters on a connection that has just committed a bump."""
        found = None
        try:
            if self._table_exists(dbapi_connection):
                with dbapi_connection.cursor() as cursor:
                    cursor.execute(_READ)
                    found = cursor.fetchone()
        except Exception as error:  # the notification will tell us
            log.warning("could not read the data versions back: %s", error)
        finally:
            _end_transaction(dbapi_connection)
        if found is not None:
            self.merge(*found)

    def _table_exists(self, dbapi_connection: Any) -> bool:
        if not self._table_ready:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('data_versions') IS NOT NULL")
                self._table_ready = bool(cursor.fetchone()[0])
        return self._table_ready

    # --- job wake-ups ---------------------------------------------------------------------

    def on_jobs(self, callback: Callable[[str], None]) -> None:
        """Call `callback("notified")` on every job notification (`"reconnected"` after the
        listener reconnects) until `off_jobs`."""
        with self._lock:
            self._job_callbacks.append(callback)
        self.ensure_listening()

    def off_jobs(self, callback: Callable[[str], None]) -> None:
        with self._lock:
            if callback in self._job_callbacks:
                self._job_callbacks.remove(callback)

    def _wake_workers(self, reason: str) -> None:
        with self._lock:
            callbacks = list(self._job_callbacks)
        for callback in callbacks:
            callback(reason)

    # --- the listener ---------------------------------------------------------------------

    def ensure_listening(self) -> None:
        """Start the listener thread unless this process already runs it."""
        pid = os.getpid()
        with self._lock:
            if self._thread is not None and self._thread_pid == pid and self._thread.is_alive():
                return
            if self._thread_pid != pid:  # forked: the parent's connection is not ours to use
                self._connection = None
                self._listening_pid = 0
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._listen, args=(self._stop,), name="atelier-listener", daemon=True
            )
            self._thread_pid = pid
            self._thread.start()

    def stop(self) -> None:
        """Stop the listener (readers read the row until something starts it again)."""
        with self._lock:
            self._stop.set()
            self._listening_pid = 0
            thread = self._thread
            self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(2 * WAIT_SLICE + 1)

    def _listen(self, stop: threading.Event) -> None:
        backoff = self.min_backoff
        while not stop.is_set():
            delay = max(backoff, self.min_backoff)
            connected_before = self.connections
            try:
                self._listen_once(stop)
            except Exception as error:
                if stop.is_set():
                    break
                if self.connections != connected_before:  # it was connected: start over
                    delay = self.min_backoff
                log.warning(
                    "database listener disconnected (%s); readers query the versions, "
                    "reconnecting in %.1f s",
                    error.__class__.__name__,
                    delay,
                )
            finally:
                self._listening_pid = 0
            stop.wait(delay)
            backoff = min(delay * 2, max(MAX_BACKOFF, self.min_backoff))

    def _listen_once(self, stop: threading.Event) -> None:
        """Connect, listen, and hand on notifications until the connection fails or stop."""
        import psycopg

        connection = psycopg.connect(
            self.url, autocommit=True, connect_timeout=5, application_name=APPLICATION_NAME
        )
        # This thread's own connection, closed by this thread whatever happens: a listener
        # started again while a stopped one is still finishing (stop, then a reader's
        # ensure_listening) must neither close the other's connection nor drop its own open.
        self._connection = connection
        try:
            self._listen_on(connection, stop)
        finally:
            if self._connection is connection:
                self._connection = None
            with contextlib.suppress(Exception):  # already broken
                connection.close()

    def _listen_on(self, connection: Any, stop: threading.Event) -> None:
        connection.execute(f"LISTEN {VERSIONS_CHANNEL}")
        connection.execute(f"LISTEN {JOBS_CHANNEL}")
        # Listening first, then reading: a commit after the read is notified, one before it
        # is in the row.
        found = connection.execute(_READ).fetchone()
        if found is not None:
            self.merge(*found)
        self.connections += 1
        self._listening_pid = os.getpid()
        log.info("database listener connected")
        self._wake_workers("reconnected")
        waited = 0.0
        while not stop.is_set():
            for notice in connection.notifies(timeout=WAIT_SLICE):
                self._received(notice.channel, notice.payload)
            waited += WAIT_SLICE
            if waited >= HEALTH_SECONDS:
                connection.execute("SELECT 1")  # a dead connection raises here
                waited = 0.0

    def _received(self, channel: str, payload: str) -> None:
        if channel == VERSIONS_CHANNEL:
            try:
                library, data = (int(part) for part in payload.split())
            except ValueError:
                log.warning("ignoring a malformed %s payload %r", channel, payload)
                return
            self.merge(library, data)
            self.notifications += 1
        elif channel == JOBS_CHANNEL:
            self._wake_workers("notified")

    def backend_pid(self) -> int | None:
        """The listener connection's server process id (tests terminate it), or None."""
        connection = self._connection
        return connection.info.backend_pid if connection is not None and self.listening else None


def _end_transaction(dbapi_connection: Any) -> None:
    """Leave a pooled connection as the pool left it: no transaction open, none failed."""
    with contextlib.suppress(Exception):  # broken: the pool finds out at its next checkout
        dbapi_connection.rollback()


_coordinators: dict[str, Coordinator] = {}
_registry_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """On PostgreSQL, give the app this process's coordinator for its database (None on SQLite),
    stopped whenever the app's engine is disposed. Starts nothing."""
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "postgresql":
        app.extensions["coordination"] = None
        return
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with _registry_lock:
        coordinator = _coordinators.setdefault(url, Coordinator(url))
    app.extensions["coordination"] = coordinator

    def _disposed(_engine: Engine) -> None:
        coordinator.stop()

    event.listen(engine, "engine_disposed", _disposed)


def for_app(app: Flask | None = None) -> Coordinator | None:
    """The app's (by default the current app's) coordinator; None on SQLite."""
    return (app or current_app).extensions.get("coordination")


def jobs_changed(session: Session) -> None:
    """Announce, when `session`'s transaction commits, that a job may be claimable now."""
    if for_app() is not None:
        session.execute(text(f"NOTIFY {JOBS_CHANNEL}"))
