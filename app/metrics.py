"""What an operator watches: readiness checks and metrics in Prometheus' text format.

Gauges (jobs by status, queue depth, stored images) are read from the database at scrape time,
so every process reports the same values. Counters and the duration histogram count what *this
process* did since it started (jobs it finished, failures it recorded, images it saved): with
several worker processes, scrape each one and sum. They are recorded through small hooks in
`app.jobs`; a hook never lets a metrics problem disturb the job it is counting.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from app import storage
from app.models import Image, ImageStatus, Job, JobStatus, db, utcnow

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
EXTENSION_KEY = "atelier_metrics"
# Seconds from a worker's first claim to the final status: seconds (sync) to minutes (async).
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)

OK = "ok"
NOT_RUNNING_HERE = "not running here"


# --- readiness ----------------------------------------------------------------------------------


def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, {"database", "images", "worker"}): each "ok" or what is wrong, never a secret."""
    parts = {
        "database": _database_state(),
        "images": _images_state(storage.current().root),
        "worker": _worker_state(),
    }
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
    return "\n".join(out) + "\n"


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
