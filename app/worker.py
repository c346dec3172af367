"""Background worker threads: claim due jobs, drive the provider, store the results.

A job is advanced one step per claim and released between polls, so a few threads follow many
jobs and a restarted process picks each job up where its recorded phase says it was:

    no phase     -> asynchronous API: submit and keep the operation URL before anything else;
                    synchronous API: one generation call, then store its images at once
    submitting   -> found after a crash: the request's outcome is unknown (it may have been
                    generated and billed), so the job fails with code "interrupted" and a
                    one-click Retry instead of a silent resubmit. This is the policy for both
                    APIs: never send the same job twice without the user asking.
    polling      -> poll the operation URL again (never resubmit)
    downloading  -> asynchronous: poll again (idempotent) and fetch the slots not yet recorded;
                    synchronous: the answer died with the process, so keep what was stored

While a worker waits on a long call it renews its lease from a helper thread, so no other
worker mistakes a slow generation for a dead one.

An edit sends its stored input files exactly as they are on disk (`GenerationRequest.inputs`).
Every result is stored exactly as the provider delivered it (its sha256 is the provider's; its
Content Credentials are read then and kept with the row); the job's parameters go into the
image's sidecar, written before its row commits (app.storage).
A streaming call hands each partial frame to `jobs.record_preview`, a write fenced by the lease:
a worker that lost the job gets LeaseLost out of the stream and stops. A stream that breaks
after it began (`stream_interrupted`) may have been billed, so, like a call in flight at a
crash, it fails the job with a Retry and is never sent again on its own.

No database session or transaction is held across HTTP or disk I/O: only ids and plain values
(`jobs.Claim`) pass between steps, and the configuration they need travels as one frozen
`WorkerSettings`, read when the worker is built.

Idle threads wait for the soonest due job, and are woken by a job queued in this process
(`wake`) or, on PostgreSQL, in any instance (`NOTIFY atelier_jobs`, app.coordination); `idle`
says which ended the wait.

`build_worker` makes the worker without starting it (tests step it with `run_once`);
`start_background` starts it. Demo mode's emulator comes from `app.demo`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import func, select

from app import coordination, curation, demo, jobs, limits, pngmeta, storage
from app.crashpoints import crash_point
from app.models import ImageStatus, Job, JobPhase, JobStatus, db, utcnow
from app.providers import (
    AsyncProvider,
    GenerationRequest,
    ImageSlot,
    PollResult,
    Provider,
    ProviderError,
    SyncProvider,
    build_clients,
)
from app.providers.base import InputImage
from app.providers.generations import end_user_id

log = logging.getLogger(__name__)

MIN_POLL_DELAY, MAX_POLL_DELAY = 0.2, 60.0
MAX_IDLE_WAIT = 1.0
# On PostgreSQL, while the listener is connected, new jobs announce themselves (NOTIFY): idle
# threads then wake at the next due time and at least this often, for what is not announced (a
# dead worker's lease running out, a provider's pause ending). Not listening: MAX_IDLE_WAIT.
NOTIFIED_IDLE_WAIT = 5.0
BLOCKED_GRACE_SECONDS = 0.25
PURGE_EVERY_SECONDS = 3600

INTERRUPTED_MESSAGE = (
    "Atelier stopped while sending this prompt, so it cannot tell whether Azure received it. "
    "It was not sent again automatically (that could bill you twice); use Retry to send it again."
)
UNKNOWN_OUTCOME_MESSAGE = (
    "The connection broke while sending this prompt, so Atelier cannot tell whether it was "
    "received (and billed). It was not sent again automatically; use Retry to send it again."
)
SAVE_INTERRUPTED_MESSAGE = (
    "Atelier stopped while saving this job's images; the images saved before that are kept. "
    "Use Retry to generate again."
)
# Rate-limited or failing submissions are requeued with backoff, at most this many times.
MAX_SUBMIT_ATTEMPTS = 5
# A submission still rate limited after the provider client's own retries pauses the provider
# for every worker, for the retry-after it asked for (else the backoff), within these bounds.
MIN_PAUSE_SECONDS, MAX_PAUSE_SECONDS = 1.0, 60.0


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker's steps need from the configuration, read once when it is built."""

    deadline_seconds: int  # ATELIER_JOB_DEADLINE_SECONDS (named in the deadline message)
    lease_seconds: int  # ATELIER_LEASE_SECONDS
    poll_interval_seconds: float  # ATELIER_POLL_INTERVAL_SECONDS, when no retry-after came
    safety_identifier: bool  # ATELIER_SAFETY_IDENTIFIER: send a hashed account id
    secret_key: str  # salts that hash
    storage: storage.Storage  # where the images go

    @classmethod
    def from_app(cls, app: Flask) -> WorkerSettings:
        config = app.config
        return cls(
            deadline_seconds=config["ATELIER_JOB_DEADLINE_SECONDS"],
            lease_seconds=config["ATELIER_LEASE_SECONDS"],
            poll_interval_seconds=config["ATELIER_POLL_INTERVAL_SECONDS"],
            safety_identifier=config["ATELIER_SAFETY_IDENTIFIER"] == "on",
            secret_key=config["SECRET_KEY"],
            storage=storage.current(app),
        )


class Worker:
    """A pool of threads that advance due jobs until stopped."""

    def __init__(self, app: Flask, clients: dict[str, Provider], threads: int) -> None:
        self.app = app
        self.clients = clients
        self.settings = WorkerSettings.from_app(app)
        self.thread_count = threads
        self.emulator = None  # the embedded emulator this worker started, if any
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._wake_reason = "woken"
        self.last_wake = ""  # why the last idle wait ended: timeout, woken, notified, ...
        self._threads: list[threading.Thread] = []
        self._next_purge = 0.0  # time.monotonic() of the next trash purge
        self._purge_lock = threading.Lock()

    def start(self) -> None:
        self.follow_notifications()
        for number in range(self.thread_count):
            thread = threading.Thread(
                target=self._run, name=f"atelier-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("worker started with %d thread(s)", self.thread_count)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let each thread finish its current step (which releases its job)."""
        self._stopping.set()
        self._wake_up("stopping")
        self.unfollow_notifications()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        log.info("worker stopped")

    def wake(self) -> None:
        """A job was queued: stop idling now."""
        self._wake_up("woken")

    def _wake_up(self, reason: str) -> None:
        self._wake_reason = reason
        self._wake.set()

    def follow_notifications(self) -> None:
        """On PostgreSQL, wake on other instances' new jobs (NOTIFY); nothing on SQLite."""
        coordinator = coordination.for_app(self.app)
        if coordinator is not None:
            coordinator.on_jobs(self._wake_up)

    def unfollow_notifications(self) -> None:
        coordinator = coordination.for_app(self.app)
        if coordinator is not None:
            coordinator.off_jobs(self._wake_up)

    def idle_limit(self) -> float:
        """The longest an idle thread waits: see NOTIFIED_IDLE_WAIT."""
        coordinator = coordination.for_app(self.app)
        if coordinator is not None and coordinator.listening:
            return NOTIFIED_IDLE_WAIT
        return MAX_IDLE_WAIT

    def idle(self, seconds: float) -> str:
        """Wait up to `seconds` or until woken; why it ended (also kept in `last_wake`)."""
        if self._stopping.is_set():
            self.last_wake = "stopping"
            return self.last_wake
        woken = self._wake.wait(seconds)
        # Once stopping, the wake-up stays set for every thread: one that clears it must not
        # leave another (still finishing a step) to sleep a whole idle wait before it stops.
        if not self._stopping.is_set():
            self._wake.clear()
        self.last_wake = self._wake_reason if woken else "timeout"
        return self.last_wake

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        with self.app.app_context():
            while not self._stopping.is_set():
                try:
                    worked = self.run_once()
                    if not worked:
                        self.purge_trash_when_due()
                    idle = 0.0 if worked else _seconds_until_next_due(self.idle_limit())
                except Exception:
                    log.exception("worker step failed; continuing")
                    db.session.rollback()
                    idle = MAX_IDLE_WAIT
                finally:
                    db.session.close()
                if idle > 0:
                    self.idle(idle)

    def purge_trash_when_due(self) -> None:
        """Empty expired trash about once an hour, from one thread at a time."""
        if time.monotonic() < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            self._next_purge = time.monotonic() + PURGE_EVERY_SECONDS
            curation.purge_expired()
        finally:
            self._purge_lock.release()

    def run_once(self) -> bool:
        """Claim one due job and advance it by one step. False when nothing was due."""
        claim = jobs.claim_due_job()
        if claim is None:
            return False
        try:
            advance(claim, self.clients.get(claim.provider), self.settings)
        except jobs.LeaseLost:
            log.info("job %s: lease lost (canceled or taken over); step abandoned", claim.job_id)
        return True


def advance(claim: jobs.Claim, client: Provider | None, settings: WorkerSettings) -> None:
    """Take the one step the claimed job's phase calls for."""
    if utcnow() >= claim.deadline_at:
        jobs.mark_failed(
            claim,
            "deadline",
            f"No result within {settings.deadline_seconds} seconds; Atelier stopped "
            "waiting (ATELIER_JOB_DEADLINE_SECONDS).",
        )
    elif client is None:
        jobs.mark_failed(
            claim,
            "provider_unavailable",
            f"The provider {claim.provider!r} is not configured any more, so this job cannot run.",
        )
    elif claim.phase == JobPhase.SUBMITTING:
        jobs.mark_failed(claim, "interrupted", INTERRUPTED_MESSAGE)
    elif client.synchronous:
        if claim.phase is None:
            _generate(claim, client, settings)
        else:  # downloading: the provider's answer was lost with the process
            jobs.finish_from_images(claim, SAVE_INTERRUPTED_MESSAGE)
    elif claim.phase is None:
        _submit(claim, client, settings)
    else:
        _follow(claim, client, settings)


def _submit_failed(claim: jobs.Claim, error: ProviderError) -> None:
    """What a failed submission means: unknown outcome, try again later, or a final error.

    A server's wait (`retry_after`) is honoured by requeueing, never by sleeping, and only
    within the job's deadline: a job that could not be sent again before its deadline fails
    now, saying how long the provider asked to wait."""
    if error.code == "unknown_outcome":
        jobs.mark_failed(claim, "interrupted", UNKNOWN_OUTCOME_MESSAGE)
        return
    now = utcnow()
    wait = error.retry_after
    paused_until = None
    if error.status == 429 and error.retryable:
        # A rate limit applies to the whole deployment: stop every worker from sending it new
        # jobs until it has cooled down, instead of each queued job hitting it in turn. The
        # pause is bounded; a job whose own wait is longer is requeued (or failed) below.
        pause = wait if wait is not None else _backoff(claim.submit_count)
        seconds = min(max(pause, MIN_PAUSE_SECONDS), MAX_PAUSE_SECONDS)
        paused_until = limits.pause_provider(claim.provider, seconds, error.message)
    if not error.retryable:
        jobs.mark_failed(claim, error.code, error.message)
    elif (too_long := _wait_beyond_deadline(claim, error, now)) is not None:
        jobs.mark_failed(claim, error.code, f"{error.message} {too_long}")
    elif claim.submit_count >= MAX_SUBMIT_ATTEMPTS:
        jobs.mark_failed(
            claim, error.code, f"{error.message} Gave up after {claim.submit_count} attempts."
        )
    else:
        delay = wait if wait is not None else _backoff(claim.submit_count)
        next_attempt_at = max(now + timedelta(seconds=delay), paused_until or now)
        # A backoff reaching past the deadline: be due at the deadline, which then fails it.
        jobs.requeue_submission(claim, min(next_attempt_at, claim.deadline_at), error.message)


def _wait_beyond_deadline(
    claim: jobs.Claim, error: ProviderError, now: datetime, doing: str = "retrying"
) -> str | None:
    """Why the provider's wait cannot be honoured (it outlasts the job's deadline), or None."""
    remaining = (claim.deadline_at - now).total_seconds()
    if error.retry_after is None or error.retry_after <= remaining:
        return None
    return (
        f"{error.service or 'The provider'} asks to wait {error.retry_after:.0f} s before "
        f"{doing}, longer than this job's remaining {max(remaining, 0):.0f} s "
        "(ATELIER_JOB_DEADLINE_SECONDS)."
    )


def _submit(claim: jobs.Claim, client: AsyncProvider, settings: WorkerSettings) -> None:
    jobs.mark_submitting(claim)
    try:
        submitted = client.submit(claim.prompt, claim.size, claim.n)
    except ProviderError as error:
        _submit_failed(_counted(claim), error)
        return
    crash_point("during_submit")
    jobs.mark_submitted(claim, submitted.operation_url, _next_poll(submitted.retry_after, settings))


def _generate(claim: jobs.Claim, client: SyncProvider, settings: WorkerSettings) -> None:
    try:
        inputs = _input_images(claim, settings)
    except (OSError, storage.StorageUnavailable) as error:
        # Nothing was sent: an input file is gone (restored badly?) or storage is failing.
        jobs.mark_failed(
            claim,
            "input_missing",
            f"An input image of this job cannot be read from storage "
            f"({getattr(error, 'strerror', None) or error}); nothing was sent.",
        )
        return
    jobs.mark_submitting(claim)

    def on_partial(index: int, data: bytes) -> None:
        jobs.record_preview(claim, index, data)

    try:
        with LeaseKeeper(claim, settings):
            request = GenerationRequest(
                claim.prompt,
                claim.size,
                claim.n,
                claim.options,
                _end_user(claim, settings),
                inputs=inputs,
                on_partial=on_partial,
            )
            generation = client.generate(request)
    except ProviderError as error:
        _submit_failed(_counted(claim), error)
        return
    crash_point("during_submit")
    jobs.mark_downloading(claim, generation.usage)
    _store_slots(claim, client, generation.slots, settings)


def _input_images(claim: jobs.Claim, settings: WorkerSettings) -> tuple[InputImage, ...]:
    """The job's stored inputs (images in order, then the mask), read byte for byte."""
    return tuple(
        InputImage(item.role, settings.storage.read(item.file_name), item.content_type)
        for item in jobs.input_files(claim.job_id)
    )


def _end_user(claim: jobs.Claim, settings: WorkerSettings) -> str | None:
    """The hashed account id the request carries (ATELIER_SAFETY_IDENTIFIER)."""
    if not settings.safety_identifier:
        return None
    return end_user_id(settings.secret_key, claim.owner_id)


def _counted(claim: jobs.Claim) -> jobs.Claim:
    """The claim as mark_submitting left it (one more submission counted)."""
    return dataclasses.replace(claim, submit_count=claim.submit_count + 1)


def _follow(claim: jobs.Claim, client: AsyncProvider, settings: WorkerSettings) -> None:
    assert claim.operation_url is not None
    try:
        result = client.poll(claim.operation_url)
    except ProviderError as error:
        if not error.retryable:
            jobs.mark_failed(claim, error.code, error.message)
        elif too_long := _wait_beyond_deadline(claim, error, utcnow(), "polling"):
            # The operation was sent and may yet be generated (and billed): a deadline failure.
            jobs.mark_failed(claim, "deadline", f"{error.message} {too_long}")
        elif error.retry_after is not None:
            # The server's wait is honoured in full (no 60 s cap as for a poll interval), by
            # releasing the job; no thread waits for it.
            wait = timedelta(seconds=max(error.retry_after, MIN_POLL_DELAY))
            jobs.release_until(claim, utcnow() + wait)
        else:
            jobs.release_until(claim, _next_poll(None, settings))
        return
    crash_point("mid_poll")
    if result.state == PollResult.PENDING:
        jobs.release_until(claim, _next_poll(result.retry_after, settings))
    elif result.state == PollResult.FAILED:
        jobs.mark_failed(claim, result.error_code or "failed", result.error_message or "Failed.")
    elif not result.slots:
        jobs.mark_failed(claim, "empty_result", "Azure reported success but returned no images.")
    else:
        jobs.mark_downloading(claim)
        _store_slots(claim, client, result.slots, settings)
        try:
            client.delete(claim.operation_url)  # we hold copies; free Azure's
        except ProviderError as error:
            log.info("job %s: could not delete the operation (%s)", claim.job_id, error.code)


def _store_slots(
    claim: jobs.Claim, client: Provider, slots: list[ImageSlot], settings: WorkerSettings
) -> bool:
    """Fetch and store every slot not yet recorded, then finish the job. False when a
    retryable download failure left the job to be continued later."""
    recorded = jobs.recorded_image_indexes(claim.job_id)
    # Plain values: the rows would expire at the next commit.
    inputs = [(item.role, item.sha256) for item in jobs.input_files(claim.job_id)]
    for slot in slots:
        if slot.index in recorded:
            continue
        if slot.error_code is not None:
            filtered = slot.error_code == "contentFilter"
            status = ImageStatus.FILTERED if filtered else ImageStatus.FAILED
            message = slot.error_message or ""
            jobs.record_missing_image(claim, slot, status, slot.error_code, message)
            continue
        try:
            with LeaseKeeper(claim, settings):
                # A download spooled while storage failed is not fetched again.
                data = settings.storage.spooled(claim.job_id, slot.index)
                stored = jobs.store_downloaded(
                    claim,
                    settings.storage,
                    slot.index,
                    data if data is not None else client.fetch_image(slot),
                    pngmeta.image_metadata(claim, slot, inputs),
                )
        except ProviderError as error:
            # The fetch already retried what can be retried; this slot has no image.
            jobs.record_missing_image(claim, slot, ImageStatus.FAILED, error.code, error.message)
        except storage.ImageRejected as error:
            jobs.record_missing_image(claim, slot, ImageStatus.FAILED, "bad_image", str(error))
        except storage.StorageUnavailable as error:
            jobs.record_missing_image(
                claim, slot, ImageStatus.FAILED, jobs.STORAGE_FAILING, str(error)
            )
        else:
            crash_point("after_rename")
            jobs.record_stored_image(claim, slot, stored)
            crash_point("mid_download")
    jobs.finish_from_images(claim)


class LeaseKeeper:
    """Renews a claim's lease from a helper thread while the worker waits on a long call.

    If renewal finds the lease lost (the job was canceled), it stops; the worker's next fenced
    write then raises LeaseLost and nothing is overwritten.
    """

    def __init__(self, claim: jobs.Claim, settings: WorkerSettings) -> None:
        self.claim = claim
        self.interval = max(0.5, settings.lease_seconds / 3)
        self.app = current_app._get_current_object()  # type: ignore[attr-defined]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="atelier-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        with self.app.app_context():
            try:
                while not self._done.wait(self.interval):
                    jobs.renew_lease(self.claim)
            except jobs.LeaseLost:
                pass
            except Exception:
                log.exception("job %s: lease renewal failed", self.claim.job_id)
            finally:
                db.session.remove()


def _next_poll(retry_after: float | None, settings: WorkerSettings) -> datetime:
    delay = settings.poll_interval_seconds if retry_after is None else retry_after
    return utcnow() + timedelta(seconds=min(max(delay, MIN_POLL_DELAY), MAX_POLL_DELAY))


def _backoff(attempt: int) -> float:
    return random.uniform(1.0, min(60.0, 2.0 ** max(attempt, 1)))


def _seconds_until_next_due(limit: float = MAX_IDLE_WAIT) -> float:
    """How long the thread may idle: until the soonest active job is due, at most `limit`.

    Jobs that have been due for a while yet were not claimable (held by another worker, held
    back by the concurrency cap or a provider pause) are left out, so a thread does not spin on
    them; a job that only just became due is taken at once."""
    recently = utcnow() - timedelta(seconds=BLOCKED_GRACE_SECONDS)
    soonest = db.session.scalar(
        select(func.min(Job.next_attempt_at)).where(
            Job.status.in_(JobStatus.ACTIVE), Job.next_attempt_at > recently
        )
    )
    if soonest is None:
        return limit
    return min(limit, max(0.02, (soonest - utcnow()).total_seconds()))


def build_worker(app: Flask) -> Worker:
    """The app's worker with its provider clients, its threads not started: `start()` runs
    them, or a test advances jobs itself with `run_once()`. In demo mode (no provider
    configured) the clients talk to the built-in emulator, which `stop()` stops if this
    process started it."""
    emulator = demo.emulator_for(app) if demo.needed(app) else None
    if emulator is None:
        clients = build_clients(app.config)
    else:
        clients = build_clients(app.config, emulator.url, emulator.api_key)
    worker = Worker(app, clients, app.config["ATELIER_WORKER_THREADS"])
    worker.emulator = emulator.server if emulator is not None else None
    return worker


def start_background(app: Flask) -> Worker | None:
    """Build and start the app's worker (None when ATELIER_WORKER_THREADS is 0)."""
    if app.config["ATELIER_WORKER_THREADS"] == 0:
        return None
    worker = build_worker(app)
    app.extensions["atelier_worker"] = worker
    worker.start()
    return worker
