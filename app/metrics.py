"""What an operator watches: readiness checks and metrics in Prometheus' text format.

Gauges (jobs by status, queue depth, stored images) are read from the database at scrape time,
so every process reports the same values. Counters and the duration histogram count what *this
process* did since it started (jobs it finished, failures it recorded, images it saved, bytes
moved to and from storage and the storage calls that failed, from app.storage_stats): with
several worker processes, scrape each one and sum. They are recorded through small hooks in
`app.jobs`; a hook never lets a metrics problem disturb the job it is counting. The spool
gauges describe this machine's data folder (downloads waiting for their upload), so each
instance reports its own.

Readiness with an object store (ATELIER_STORAGE_URL) also asks the storage service
(`StorageProbe`): one cheap call, answered within STORAGE_CHECK_TIMEOUT_SECONDS and remembered
for STORAGE_CHECK_TTL_SECONDS, so frequent scrapes from several load balancers do not each hit
the service, and a hung service cannot hang /readyz.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app import blobstore, storage, storage_stats
from app.config import ConfigError
from app.models import Image, ImageStatus, Job, JobStatus, db, utcnow

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXTENSION_KEY = "atelier_metrics"
# Seconds from a worker's first claim to the final status: seconds (sync) to minutes (async).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)

OK = "ok"
NOT_RUNNING_HERE = "not running here"
# The storage service's answer is remembered this long; a check that takes longer than the
# timeout reads as "timed out" (it goes on in the background, and its answer replaces that one).
STORAGE_CHECK_TTL_SECONDS = 5.0
STORAGE_CHECK_TIMEOUT_SECONDS = 2.0
TIMED_OUT = "timed out"
PROBE_KEY = "atelier_storage_probe"
# Operations app.storage_stats counts errors for; the current backend's are always rendered
# (0 until one fails), so a rate() alert has a series from the start.
STORAGE_OPERATIONS = ("put", "get", "stat", "delete", "list", "check", "sign")


# --- readiness ----------------------------------------------------------------------------------


def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, {"database", "images", ["storage",] "worker"}): each "ok" or what is wrong, never
    a secret. "images" is the data folder (the spool, uploads and SQLite live there whatever
    the backend); "storage" is there with an object store only."""
    files = storage.current()
    parts = {"database": _database_state(), "images": _images_state(files.root)}
    if not files.is_local:
        parts["storage"] = _storage_probe(files.blobs).state()
    parts["worker"] = _worker_state()
    return all(state in (OK, NOT_RUNNING_HERE) for state in parts.values()), parts


def _database_state() -> str:
    try:
        db.session.execute(text("SELECT 1"))
        db.session.rollback()
    except SQLAlchemyError as error:
        # The error text may contain the connection URL (with its password): log the type only.
        log.warning("readiness: the database did not answer (%s)", type(error).__name__)
        db.session.rollback()
        return "unavailable"
    return OK


def _images_state(data_dir: Path) -> str:
    try:
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=storage.TEMP_PREFIX + "readyz-"):
            pass
    except OSError as error:
        log.warning("readiness: the image folder is not writable (%s)", error.strerror)
        return "not writable"
    return OK


def _storage_probe(blobs: blobstore.BlobStore) -> StorageProbe:
    probe = current_app.extensions.get(PROBE_KEY)
    if probe is None or probe.blobs is not blobs:
        # (Two first requests at once may each make one: harmless, the last one stays.)
        probe = current_app.extensions[PROBE_KEY] = StorageProbe(blobs)
    return probe


class StorageProbe:
    """Asks the storage service whether it is usable (`blobs.check()`), at most once per
    STORAGE_CHECK_TTL_SECONDS, never keeping a request waiting longer than
    STORAGE_CHECK_TIMEOUT_SECONDS. Thread-safe: one check runs at a time, in its own daemon
    thread, and every request waiting meanwhile shares its answer."""

    def __init__(self, blobs: blobstore.BlobStore) -> None:
        self.blobs = blobs
        self._lock = threading.Lock()
        self._answer: tuple[str, float] | None = None  # (state, time.monotonic() it was set)
        self._pending: threading.Event | None = None  # set when the running check answers

    def state(self) -> str:
        with self._lock:
            answer = self._answer
            if answer is not None and time.monotonic() - answer[1] < STORAGE_CHECK_TTL_SECONDS:
                return answer[0]
            pending = self._pending
            if pending is None:
                pending = self._pending = threading.Event()
                threading.Thread(
                    target=self._check, args=(pending,), name="atelier-storage-check", daemon=True
                ).start()
        answered = pending.wait(STORAGE_CHECK_TIMEOUT_SECONDS)
        with self._lock:
            if self._answer is None or (not answered and self._pending is pending):
                # Remembered like any answer: scrapes in the next seconds do not each wait.
                log.warning("readiness: the storage service did not answer in time")
                self._answer = (TIMED_OUT, time.monotonic())
            return self._answer[0]

    def _check(self, pending: threading.Event) -> None:
        try:
            self.blobs.check()
            state = OK
        except (ConfigError, blobstore.StorageUnavailable) as error:
            state = storage_reason(error, self.blobs)
            # The full message goes to the log only (app.logs redacts the storage secrets).
            log.warning("readiness: storage is %s (%s)", state, error)
        except Exception:  # a readiness check reports, it never raises
            state = "failing"
            log.warning("readiness: the storage check failed unexpectedly", exc_info=True)
        with self._lock:
            self._answer = (state, time.monotonic())
            if self._pending is pending:
                self._pending = None
        pending.set()


def storage_reason(error: Exception, blobs: blobstore.BlobStore) -> str:
    """A short reason for /readyz from what `check()` raised: no URL, account or secret.

    app.blobstore's check() raises ConfigError with a sentence naming the setting: these are
    the cases its sentences distinguish (tests/test_storage_operations.py sees unreachable,
    missing and refused on real servers, so a reworded sentence fails there)."""
    text = str(error).lower()
    bucket = "bucket" if isinstance(blobs, blobstore.S3Store) else "container"
    if "does not exist" in text:
        return f"{bucket} missing"
    if "no s3 credentials" in text:
        return "no credentials"
    if "refused the credentials" in text:
        return "credentials refused"
    if "cannot be reached" in text or "timed out" in text or "timeout" in text:
        return "unreachable"
    status = re.search(r"(?:answered|http) (\d{3})\b", text)
    if status is not None:
        return f"answered HTTP {status[1]}"
    return "unavailable" if isinstance(error, blobstore.StorageUnavailable) else "failing"


def _worker_state() -> str:
    worker = current_app.extensions.get("atelier_worker")
    if current_app.config["ATELIER_WORKER_THREADS"] == 0 or worker is None:
        return NOT_RUNNING_HERE
    return OK if worker.alive else "stopped"


# --- in-process counters ------------------------------------------------------------------------


class Recorder:
    """This process's counters and histogram; thread-safe (the worker threads all record)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.failures: dict[str, int] = defaultdict(int)
        self.requeues = 0
        self.images_saved = 0
        # status -> [count per bucket (not cumulative)], and status -> (count, sum)
        self.duration_buckets: dict[str, list[int]] = {}
        self.duration_totals: dict[str, tuple[int, float]] = {}

    def observe_duration(self, status: str, seconds: float) -> None:
        with self._lock:
            buckets = self.duration_buckets.setdefault(status, [0] * len(DURATION_BUCKETS))
            buckets[next(i for i, le in enumerate(DURATION_BUCKETS) if seconds <= le)] += 1
            count, total = self.duration_totals.get(status, (0, 0.0))
            self.duration_totals[status] = (count + 1, total + seconds)

    def count_failure(self, code: str) -> None:
        with self._lock:
            self.failures[code] += 1

    def count_requeue(self) -> None:
        with self._lock:
            self.requeues += 1

    def count_image_saved(self) -> None:
        with self._lock:
            self.images_saved += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "failures": dict(self.failures),
                "requeues": self.requeues,
                "images_saved": self.images_saved,
                "duration_buckets": {k: list(v) for k, v in self.duration_buckets.items()},
                "duration_totals": dict(self.duration_totals),
            }


def recorder() -> Recorder:
    extensions = current_app.extensions
    found = extensions.get(EXTENSION_KEY)
    return found if found is not None else extensions.setdefault(EXTENSION_KEY, Recorder())


# --- hooks called by app.jobs -------------------------------------------------------------------


def job_finished(job_id: int, status: str) -> None:
    """A job reached a final status through a worker: record how long it ran."""
    try:
        row = db.session.execute(
            select(Job.started_at, Job.finished_at).where(Job.id == job_id)
        ).one_or_none()
        if row is not None and row.started_at is not None and row.finished_at is not None:
            seconds = (row.finished_at - row.started_at).total_seconds()
            recorder().observe_duration(status, max(0.0, seconds))
    except Exception:
        log.warning("metrics: could not record the duration of job %s", job_id, exc_info=True)
    finally:
        # End this read here: the worker may go on to network I/O (deleting the operation).
        db.session.rollback()


def job_failed(code: str) -> None:
    """A job failed with `code` (the provider's error code when the failure is upstream)."""
    recorder().count_failure(code)


def submission_requeued() -> None:
    """The provider refused a submission for now (rate limit, outage); it will be retried."""
    recorder().count_requeue()


def image_saved() -> None:
    recorder().count_image_saved()


# --- exposition ---------------------------------------------------------------------------------


def render() -> str:
    """Every metric in Prometheus' text exposition format 0.0.4."""
    by_status = dict(
        db.session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    )
    queue_depth = db.session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.status == JobStatus.QUEUED, Job.next_attempt_at <= utcnow())
    )
    stored_images = db.session.scalar(
        select(func.count()).select_from(Image).where(Image.status == ImageStatus.STORED)
    )
    db.session.rollback()
    counts = recorder().snapshot()
    files = storage.current()
    spool_files, spool_bytes = spool_usage(files)
    moved = storage_stats.snapshot()
    backend = backend_kind(files.blobs)

    out: list[str] = []
    _family(out, "atelier_jobs", "gauge", "Jobs in the database, by status.")
    for status in JobStatus.ALL:
        out.append(_sample("atelier_jobs", {"status": status}, by_status.get(status, 0)))
    _family(out, "atelier_queue_depth", "gauge", "Queued jobs that are due now.")
    out.append(_sample("atelier_queue_depth", {}, queue_depth or 0))
    _family(
        out, "atelier_stored_images", "gauge", "Stored images in the database (trash included)."
    )
    out.append(_sample("atelier_stored_images", {}, stored_images or 0))
    _family(
        out, "atelier_images_saved_total", "counter", "Images this process saved since it started."
    )
    out.append(_sample("atelier_images_saved_total", {}, counts["images_saved"]))
    _family(
        out,
        "atelier_job_failures_total",
        "counter",
        "Jobs this process failed since it started, by error code (the provider's code for "
        "upstream errors, e.g. rate_limited, unauthorized, contentFilter).",
    )
    for code, value in sorted(counts["failures"].items()):
        out.append(_sample("atelier_job_failures_total", {"code": code}, value))
    _family(
        out,
        "atelier_submission_requeues_total",
        "counter",
        "Submissions the provider refused for now (rate limit, outage), to be retried.",
    )
    out.append(_sample("atelier_submission_requeues_total", {}, counts["requeues"]))
    _family(
        out,
        "atelier_job_duration_seconds",
        "histogram",
        "Seconds from a job's start to its final status, for jobs this process finished.",
    )
    for status, buckets in sorted(counts["duration_buckets"].items()):
        cumulative = 0
        for le, in_bucket in zip(DURATION_BUCKETS, buckets, strict=True):
            cumulative += in_bucket
            labels = {"status": status, "le": "+Inf" if math.isinf(le) else f"{le:g}"}
            out.append(_sample("atelier_job_duration_seconds_bucket", labels, cumulative))
        count, total = counts["duration_totals"][status]
        out.append(_sample("atelier_job_duration_seconds_sum", {"status": status}, total))
        out.append(_sample("atelier_job_duration_seconds_count", {"status": status}, count))
    _storage_families(out, backend, moved, spool_files, spool_bytes)
    return "\n".join(out) + "\n"


def _storage_families(
    out: list[str],
    backend: str,
    moved: dict[str, dict[tuple[str, str], int]],
    spool_files: int,
    spool_bytes: int,
) -> None:
    # The current backend's series exist from the start (0); any other backend this process
    # touched (a `storage migrate` copies between two) shows once it counted something.
    transferred = {(backend, direction): 0 for direction in storage_stats.DIRECTIONS}
    transferred.update(moved["bytes"])
    _family(
        out,
        "atelier_storage_bytes_total",
        "counter",
        "Bytes this process moved to (written) and from (read) image storage since it started, "
        "by backend (file, az, s3).",
    )
    for (kind, direction), value in sorted(transferred.items()):
        out.append(
            _sample("atelier_storage_bytes_total", {"backend": kind, "direction": direction}, value)
        )
    failed = {(backend, operation): 0 for operation in STORAGE_OPERATIONS}
    failed.update(moved["errors"])
    _family(
        out,
        "atelier_storage_errors_total",
        "counter",
        "Storage calls of this process that failed since it started (unreachable, timed out, "
        "refused, or stored something other than what was sent), by backend and operation.",
    )
    for (kind, operation), value in sorted(failed.items()):
        labels = {"backend": kind, "operation": operation}
        out.append(_sample("atelier_storage_errors_total", labels, value))
    _family(
        out,
        "atelier_storage_spool_files",
        "gauge",
        "Downloaded images waiting in this machine's spool for their upload to storage.",
    )
    out.append(_sample("atelier_storage_spool_files", {}, spool_files))
    _family(
        out,
        "atelier_storage_spool_bytes",
        "gauge",
        "Bytes of the downloads waiting in this machine's spool (ATELIER_STORAGE_SPOOL_MB bounds "
        "it).",
    )
    out.append(_sample("atelier_storage_spool_bytes", {}, spool_bytes))


def backend_kind(blobs: blobstore.BlobStore) -> str:
    """The backend label app.storage_stats counts under: "file", "az" or "s3"."""
    return "file" if blobs.local else urlsplit(blobs.url).scheme


def spool_usage(files: storage.Storage) -> tuple[int, int]:
    """(files, bytes) in the data folder's spool of downloads waiting for their upload."""
    count = size = 0
    for name in files.spool_files():
        try:
            size += (files.root / storage.SPOOL / name).stat().st_size
        except FileNotFoundError:  # uploaded (unspooled) since it was listed
            continue
        count += 1
    return count, size


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _sample(name: str, labels: dict[str, str], value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
        name = f"{name}{{{inner}}}"
    return f"{name} {value!r}" if isinstance(value, float) else f"{name} {value}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
