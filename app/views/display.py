"""How jobs are described on pages: labels, error titles, and the polling delay."""

from __future__ import annotations

import unicodedata

from flask import current_app
from markupsafe import Markup, escape

from app.models import Job, JobPhase, JobStatus, utcnow

# Bidirectional controls ("Trojan source"): in a prompt they would reorder how the text around
# them reads. They are shown as visible marks instead of being applied.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)

PHASE_LABELS = {
    None: "Starting",
    JobPhase.SUBMITTING: "Sending",
    JobPhase.POLLING: "Generating",
    JobPhase.DOWNLOADING: "Saving images",
}
STATUS_LABELS = {
    JobStatus.QUEUED: "Queued",
    JobStatus.SUCCEEDED: "Done",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELED: "Canceled",
}
ERROR_TITLES = {
    "contentFilter": "Refused by the safety system",
    "deadline": "Took too long",
    "interrupted": "Interrupted",
    "canceled": "Canceled by Azure",
    "unauthorized": "Azure rejected the credentials",
    "not_found": "Endpoint not found",
    "rate_limited": "Rate limited",
    "download_failed": "Images could not be saved",
    "provider_unavailable": "Provider not configured",
    "upstream_unavailable": "The provider had a problem",
    "entra_id_error": "No Entra ID token",
}


def status_label(job: Job) -> str:
    if job.status == JobStatus.RUNNING:
        return PHASE_LABELS.get(job.phase, "Running")
    return STATUS_LABELS.get(job.status, job.status)


def error_title(code: str | None) -> str:
    return ERROR_TITLES.get(code or "", "Failed")


def provider_label(provider_id: str) -> str:
    """The configured provider's label, or its id when it is no longer configured."""
    for target in current_app.config["ATELIER_TARGETS"]:
        if target.id == provider_id:
            return target.label
    return provider_id


# A job's card asks for news after these delays, by the job's age: (younger than, seconds).
# A new card looks again after 1 s (a queued job is picked up at once and shows it is
# sending); providers then take seconds to make an image (Azure's gpt-image-1 often 10-60 s),
# so the card waits 5 s between looks, longer once the job is old. Each change of delay
# changes the card, so there are few steps; repeat polls of an unchanged card are answered
# with a 304 (app.views.partials).
POLL_SCHEDULE = ((1, 1), (60, 5), (300, 8))
SLOWEST_POLL = 10


def poll_delay(job: Job) -> int:
    """Seconds before a card asks for news: soon at first, backing off while a job waits."""
    return delay_for_age((utcnow() - job.created_at).total_seconds())


def delay_for_age(age: float) -> int:
    """The polling delay for a job created `age` seconds ago."""
    for younger_than, delay in POLL_SCHEDULE:
        if age < younger_than:
            return delay
    return SLOWEST_POLL


def visible_controls(text: str | None) -> Markup:
    """`text`, escaped, with every bidirectional control shown as a mark naming it."""
    if not text or BIDI_CONTROLS.isdisjoint(text):
        return escape(text or "")
    parts = []
    for char in text:
        if char in BIDI_CONTROLS:
            name = unicodedata.name(char, "BIDI CONTROL").title()
            parts.append(
                Markup('<span class="control-char" title="{}">U+{:04X}</span>').format(
                    name, ord(char)
                )
            )
        else:
            parts.append(escape(char))
    return Markup("").join(parts)
