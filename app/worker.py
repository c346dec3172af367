"""Background worker threads: claim due jobs, drive the provider, store the results.

A job is advanced one step per claim (submit, one poll, or the downloads) and released between
polls, so a few threads follow many jobs and a restarted process picks each job up where its
recorded phase says it was:

    no phase     -> submit; keep the operation URL before anything else
    submitting   -> found after a crash: the submit's outcome is unknown, so the job fails
                    with code "interrupted" and a one-click Retry instead of a silent resubmit
    polling      -> poll the operation URL again (never resubmit)
    downloading  -> poll again (idempotent) and fetch the slots not yet recorded

No database session or transaction is held across HTTP or disk I/O: only ids and plain values
(`jobs.Claim`) pass between steps.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import func, select

from app import jobs, storage
from app.models import ImageStatus, Job, JobPhase, JobStatus, db, utcnow
from app.providers import PollResult, Provider, ProviderError, build_provider

log = logging.getLogger(__name__)

MIN_POLL_DELAY, MAX_POLL_DELAY = 0.2, 60.0
MAX_IDLE_WAIT = 1.0

INTERRUPTED_MESSAGE = (
    "Atelier stopped while sending this prompt, so it cannot tell whether Azure received it. "
    "It was not sent again automatically (that could bill you twice); use Retry to send it again."
)
UNKNOWN_OUTCOME_MESSAGE = (
    "The connection broke while sending this prompt, so Atelier cannot tell whether Azure "
    "received it. It was not sent again automatically; use Retry to send it again."
)


class Worker:
    """A pool of threads that advance due jobs until stopped."""

    def __init__(self, app: Flask, provider: Provider, threads: int) -> None:
        self.app = app
        self.provider = provider
        self.thread_count = threads
        self.emulator = None  # the embedded emulator this worker started, if any
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
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
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        log.info("worker stopped")

    def wake(self) -> None:
        """A job was queued: stop idling now."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _run(self) -> None:
        with self.app.app_context():
            while not self._stopping.is_set():
                try:
                    worked = self.run_once()
                    idle = 0.0 if worked else _seconds_until_next_due()
                except Exception:
                    log.exception("worker step failed; continuing")
                    db.session.rollback()
                    idle = MAX_IDLE_WAIT
                finally:
                    db.session.close()
                if idle > 0:
                    self._wake.wait(idle)
                    self._wake.clear()

    def run_once(self) -> bool:
        """Claim one due job and advance it by one step. False when nothing was due."""
        claim = jobs.claim_due_job()
        if claim is None:
            return False
        try:
            advance(claim, self.provider, self.app.config)
        except jobs.LeaseLost:
            log.info("job %s: lease lost (canceled or taken over); step abandoned", claim.job_id)
        return True


def advance(claim: jobs.Claim, provider: Provider, config: dict) -> None:
    """Take the one step the claimed job's phase calls for."""
    if utcnow() >= claim.deadline_at:
        jobs.mark_failed(
            claim,
            "deadline",
            f"No result within {config['ATELIER_JOB_DEADLINE_SECONDS']} seconds; Atelier stopped "
            "waiting (ATELIER_JOB_DEADLINE_SECONDS).",
        )
    elif claim.phase is None:
        _submit(claim, provider, config)
    elif claim.phase == JobPhase.SUBMITTING:
        jobs.mark_failed(claim, "interrupted", INTERRUPTED_MESSAGE)
    else:
        _follow(claim, provider, config)


def _submit(claim: jobs.Claim, provider: Provider, config: dict) -> None:
    jobs.mark_submitting(claim)
    try:
        submitted = provider.submit(claim.prompt, claim.size, claim.n)
    except ProviderError as error:
        if error.code == "unknown_outcome":
            jobs.mark_failed(claim, "interrupted", UNKNOWN_OUTCOME_MESSAGE)
        elif error.retryable:
            delay = error.retry_after or _backoff(claim.submit_count)
            jobs.requeue_submission(claim, utcnow() + timedelta(seconds=delay), error.message)
        else:
            jobs.mark_failed(claim, error.code, error.message)
        return
    jobs.mark_submitted(claim, submitted.operation_url, _next_poll(submitted.retry_after, config))


def _follow(claim: jobs.Claim, provider: Provider, config: dict) -> None:
    assert claim.operation_url is not None
    try:
        result = provider.poll(claim.operation_url)
    except ProviderError as error:
        if error.retryable:
            jobs.release_until(claim, _next_poll(error.retry_after, config))
        else:
            jobs.mark_failed(claim, error.code, error.message)
        return
    if result.state == PollResult.PENDING:
        jobs.release_until(claim, _next_poll(result.retry_after, config))
    elif result.state == PollResult.FAILED:
        jobs.mark_failed(claim, result.error_code or "failed", result.error_message or "Failed.")
    elif not result.slots:
        jobs.mark_failed(claim, "empty_result", "Azure reported success but returned no images.")
    else:
        _download(claim, provider, config, result)


def _download(claim: jobs.Claim, provider: Provider, config: dict, result: PollResult) -> None:
    jobs.mark_downloading(claim)
    recorded = jobs.recorded_image_indexes(claim.job_id)
    for slot in result.slots:
        if slot.index in recorded:
            continue
        if slot.error_code is not None:
            status = (
                ImageStatus.FILTERED if slot.error_code == "contentFilter" else ImageStatus.FAILED
            )
            jobs.record_missing_image(
                claim, slot.index, status, slot.error_code, slot.error_message or ""
            )
            continue
        jobs.renew_lease(claim)
        try:
            stored = storage.store_image(config["ATELIER_DATA_DIR"], provider.fetch_image(slot))
        except ProviderError as error:
            if error.retryable:
                # Keep what was stored; the next claim polls again and fetches the rest.
                jobs.release_until(claim, _next_poll(error.retry_after, config))
                return
            jobs.record_missing_image(
                claim, slot.index, ImageStatus.FAILED, error.code, error.message
            )
        except storage.ImageRejected as error:
            jobs.record_missing_image(
                claim, slot.index, ImageStatus.FAILED, "bad_image", str(error)
            )
        else:
            jobs.record_stored_image(claim, slot.index, stored, slot.revised_prompt)
    jobs.finish_from_images(claim)
    try:
        provider.delete(claim.operation_url)  # we hold copies; free Azure's before they expire
    except ProviderError as error:
        log.info("job %s: could not delete the finished operation (%s)", claim.job_id, error.code)


def _next_poll(retry_after: float | None, config: dict) -> datetime:
    delay = config["ATELIER_POLL_INTERVAL_SECONDS"] if retry_after is None else retry_after
    return utcnow() + timedelta(seconds=min(max(delay, MIN_POLL_DELAY), MAX_POLL_DELAY))


def _backoff(attempt: int) -> float:
    return random.uniform(1.0, min(60.0, 2.0 ** max(attempt, 1)))


def _seconds_until_next_due() -> float:
    """How long the thread may idle: until the soonest active job is due, at most a second."""
    soonest = db.session.scalar(
        select(func.min(Job.next_attempt_at)).where(Job.status.in_(JobStatus.ACTIVE))
    )
    if soonest is None:
        return MAX_IDLE_WAIT
    return min(MAX_IDLE_WAIT, max(0.02, (soonest - utcnow()).total_seconds()))


def start_background(app: Flask) -> Worker | None:
    """Start the worker threads (and the built-in emulator when no Azure endpoint is set)."""
    config = app.config
    if config["ATELIER_WORKER_THREADS"] == 0:
        return None
    emulator = None
    if config["AZURE_OPENAI_ENDPOINT"]:
        endpoint, api_key = config["AZURE_OPENAI_ENDPOINT"], config["AZURE_OPENAI_API_KEY"]
    else:
        emulator = start_embedded_emulator(config)
        endpoint, api_key = emulator.url, emulator.config.api_key
    worker = Worker(
        app, build_provider(config, endpoint, api_key), config["ATELIER_WORKER_THREADS"]
    )
    worker.emulator = emulator
    app.extensions["atelier_worker"] = worker
    worker.start()
    return worker


def start_embedded_emulator(config: dict):  # -> EmulatorServer
    """Serve the emulator on loopback; its operations survive restarts in the data folder."""
    from app.emulator import EmulatorConfig, EmulatorServer

    emulator_config = EmulatorConfig(
        api_key=secrets.token_urlsafe(24),
        latency=config["ATELIER_EMULATOR_LATENCY_SECONDS"],
        state_file=f"{config['ATELIER_DATA_DIR']}/emulator-operations.json",
    )
    port = config["ATELIER_EMULATOR_PORT"]
    try:
        server = EmulatorServer(emulator_config, host="127.0.0.1", port=port).start()
    except OSError:
        log.warning("emulator port %s is busy; using a free port instead", port)
        server = EmulatorServer(emulator_config, host="127.0.0.1", port=0).start()
    log.info("built-in Azure emulator serving at %s", server.url)
    return server
