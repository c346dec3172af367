"""The worker's step machine and the job lifecycle's fencing, driven one step at a time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from app import jobs, storage
from app.models import Job, db, utcnow
from app.validation import JobRequest
from tests.helpers import emulator_counts, stepper_of


@pytest.fixture
def stepper(idle_app, emulator):
    """A worker that is never started: the test calls run_once() itself."""
    with idle_app.app_context():
        yield stepper_of(idle_app)


def queue(prompt: str = "a step at a time", n: int = 1) -> int:
    request = JobRequest(prompt=prompt, provider="azure-async", size="256x256", n=n)
    job, _ = jobs.create_job(request, owner_id=None)
    return job.id


def expire_lease(job_id: int) -> None:
    """As if the lease holder died: the job is due now and its lease has run out."""
    now = utcnow()
    db.session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(lease_expires_at=now - timedelta(seconds=1), next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def test_claim_takes_each_due_job_once(stepper):
    first, second = queue(), queue()

    claims = [jobs.claim_due_job(), jobs.claim_due_job(), jobs.claim_due_job()]

    assert [claim.job_id for claim in claims[:2]] == [first, second]
    assert claims[2] is None


def test_job_found_mid_submit_after_a_crash_is_interrupted_not_resubmitted(stepper, emulator):
    job_id = queue()
    claim = jobs.claim_due_job()
    jobs.mark_submitting(claim)  # then the process "dies" before the provider answers
    expire_lease(job_id)

    assert stepper.run_once() is True

    job = jobs.get_job(job_id)
    assert job.status == "failed"
    assert job.error_code == "interrupted"
    assert "Retry" in job.error_message
    assert emulator_counts(emulator)["submit"] == 0


def test_worker_that_lost_its_lease_cannot_finish_the_job(stepper):
    job_id = queue()
    old = jobs.claim_due_job()
    expire_lease(job_id)
    new = jobs.claim_due_job()  # another worker takes the job over
    assert new.job_id == job_id

    with pytest.raises(jobs.LeaseLost):
        jobs.mark_failed(old, "late", "the old worker woke up")
    with pytest.raises(jobs.LeaseLost):
        jobs.mark_submitted(old, "http://127.0.0.1/op", utcnow())

    jobs.mark_failed(new, "current", "the new worker still can")
    assert jobs.get_job(job_id).error_code == "current"


def test_cancel_fences_out_the_worker(stepper):
    job_id = queue()
    claim = jobs.claim_due_job()

    jobs.cancel_job(job_id)

    with pytest.raises(jobs.LeaseLost):
        jobs.mark_submitting(claim)
    assert jobs.get_job(job_id).status == "canceled"
    assert jobs.claim_due_job() is None


def test_live_lease_is_not_taken_over(stepper):
    queue()
    jobs.claim_due_job()

    assert jobs.claim_due_job() is None


def test_steps_follow_the_recorded_phase(stepper, emulator):
    job_id = queue(n=2)

    stepper.run_once()  # submit
    job = jobs.get_job(job_id)
    assert (job.status, job.phase, job.submit_count) == ("running", "polling", 1)
    assert job.operation_url.startswith(emulator.url)
    assert job.lease_token is None  # released while waiting for the next poll

    for _ in range(200):
        if jobs.get_job(job_id).is_final:
            break
        if not stepper.run_once():
            db.session.expire_all()
            time.sleep(0.05)
    job = jobs.get_job(job_id)
    assert job.status == "succeeded"
    assert len(job.stored_images) == 2
    assert emulator_counts(emulator)["submit"] == 1
    assert emulator_counts(emulator)["delete"] == 1  # Azure's copy is cleaned up after storing


def test_interrupted_download_fetches_only_the_missing_images(stepper, emulator):
    job_id = queue(n=3)
    stepper.run_once()  # submit
    claim = None
    for _ in range(100):  # wait until the emulator says succeeded, then take one image only
        time.sleep(0.05)
        expire_lease(job_id)
        claim = jobs.claim_due_job()
        result = stepper.clients["azure-async"].poll(claim.operation_url)
        if result.state == "succeeded":
            break
        jobs.release_until(claim, utcnow())
    jobs.mark_downloading(claim)
    first = result.slots[0]
    stored = storage.current(stepper.app).store_image(
        stepper.clients["azure-async"].fetch_image(first)
    )
    jobs.record_stored_image(claim, first, stored)  # ...and then the process "dies"
    expire_lease(job_id)
    blobs_before = emulator_counts(emulator)["blob"]

    stepper.run_once()

    job = jobs.get_job(job_id)
    assert job.status == "succeeded"
    assert [image.index for image in job.stored_images] == [0, 1, 2]
    assert emulator_counts(emulator)["blob"] - blobs_before == 2
    assert emulator_counts(emulator)["submit"] == 1
