"""What pages show and the one place templates get their helpers from.

`init_app(app)` (called once from app.views.register) registers every Jinja filter, global and
context processor on the app; no blueprint registers its own. The functions here describe jobs
and images (labels, error titles, durations, costs, the polling delay, placeholder colours).
Values that need a query (why a queued job waits, the viewer's limits) are not template
globals: views compute them (`limits.wait_reasons`, `viewer_limits`) and pass them in.
"""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask, current_app, g, url_for
from markupsafe import Markup, escape

from app import covers, diffs, limits, lineage, pricing
from app.auth import sessions
from app.image_models import ImageModel
from app.models import Image, ImageStatus, InputRole, Job, JobInput, JobPhase, JobStatus, utcnow
from app.validation import ValidationError, form_size, parse_n, parse_options, parse_size
from app.views import polling
from app.views.content_files import content_url

# The vendored htmx, static/vendor/htmx-<version>.min.js: a new version is a new URL.
HTMX_VERSION = "2.0.11"

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
COST_SOURCE_LABELS = {
    "estimate": "estimated",
    "table": "estimated",
    "usage": "from token usage",
}
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def init_app(app: Flask) -> None:
    """Register everything templates call, on the app (every blueprint's templates see it)."""
    app.add_template_filter(visible_controls, "visible_controls")
    app.add_template_filter(format_duration, "duration")
    app.add_template_filter(placeholder_class, "placeholder_class")
    for name, function in {
        "status_label": status_label,
        "error_title": error_title,
        "poll_delay": poll_delay,
        "trigger_delay": trigger_delay,
        "provider_label": provider_label,
        "job_cost": job_cost,
        "form_estimate": form_estimate,
        "format_usd": pricing.format_usd,
        "content_url": content_url,
        "word_diff": diffs.word_diff,
        "has_changes": diffs.has_changes,
        "first_image": lineage.first_image,
        # Collections' cover images by id (templates/gallery/_collections.html).
        "collection_covers": covers.covers,
        "origin_label": lineage.origin_label,
        "can_edit": can_edit,
        "edited_from": edited_from,
        "input_url": input_url,
        "preview_url": preview_url,
        "signing_time": signing_time,
    }.items():
        app.add_template_global(function, name)
    app.add_template_global(f"vendor/htmx-{HTMX_VERSION}.min.js", "htmx_file")

    @app.context_processor
    def _per_request() -> dict[str, Any]:
        return {
            "using_emulator": app.config["ATELIER_USING_EMULATOR"],
            "viewer": g.get("viewer"),
        }


# --- values views compute for templates ---------------------------------------------------------


def viewer_limits() -> limits.Limits:
    """The viewer's quota and budget and what is used of them (the cost estimate shows it)."""
    return limits.limits_for(sessions.current_user())


# --- filters and globals ------------------------------------------------------------------------


def status_label(job: Job) -> str:
    if job.status == JobStatus.RUNNING:
        return PHASE_LABELS.get(job.phase, "Running")
    return STATUS_LABELS.get(job.status, job.status)


def can_edit(model: ImageModel) -> bool:
    """Whether the model takes reference images and a mask (images/edits)."""
    # `edits` comes with the provider part of issue #15; before it, the gpt-image families.
    return bool(getattr(model, "edits", model.gpt_image))


def edited_from(job: Job) -> list[Image]:
    """The gallery images the job's input images came from, in input order, each once; one
    deleted since (or no longer stored) is left out."""
    sources: list[Image] = []
    for job_input in job.inputs:
        source = job_input.source_image
        if (
            job_input.role == InputRole.IMAGE
            and source is not None
            and source.status == ImageStatus.STORED
            and source not in sources
        ):
            sources.append(source)
    return sources


def input_url(job_input: JobInput, *, thumbnail: bool = False) -> str:
    """The URL of an input's stored file, or of its thumbnail."""
    if thumbnail:
        return url_for("files.job_input_thumbnail", input_id=job_input.id)
    return url_for("files.job_input", input_id=job_input.id)


def preview_url(job: Job) -> str | None:
    """The latest streamed partial frame of a running job, or None. The frame's index is in
    the URL, so each new frame is a new URL (the browser fetches it, not a kept older one)."""
    if job.status != JobStatus.RUNNING or not job.preview_name:
        return None
    return url_for("files.job_preview", job_id=job.id, frame=job.preview_index or 0)


def error_title(code: str | None) -> str:
    return ERROR_TITLES.get(code or "", "Failed")


def provider_label(provider_id: str) -> str:
    """The configured provider's label, or its id when it is no longer configured."""
    for target in current_app.config["ATELIER_TARGETS"]:
        if target.id == provider_id:
            return target.label
    return provider_id


def poll_delay(job: Job) -> int:
    """Milliseconds before a card asks for news (app.views.polling)."""
    age = (utcnow() - job.created_at).total_seconds()
    return polling.delay_for(age, polling.expected_for(job.provider, job.model))


def trigger_delay(milliseconds: int) -> str:
    """An htmx delay: '250ms', '5s'."""
    if milliseconds % 1000:
        return f"{milliseconds}ms"
    return f"{milliseconds // 1000}s"


def format_duration(seconds: float | None) -> str:
    """'0.4 s', '12 s', '3 min 4 s', '2 h 5 min'; an em dash when unknown."""
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def job_cost(job: Job) -> str:
    """ "$0.04 estimated" / "$0.042 from token usage" / "cost unknown" (a model the price table
    does not list: never shown as $0)."""
    if job.cost_usd is None:
        return "cost unknown"
    label = COST_SOURCE_LABELS.get(job.cost_source or "", "estimated")
    return f"{pricing.format_usd(job.cost_usd)} {label}"


def form_estimate(model: ImageModel, values: Mapping[str, Any]) -> float | None:
    """The estimate for the form's current values, falling back to the model's defaults for a
    value that is not valid (the form itself reports that when it is sent)."""
    size, n, options = model.default_size, 1, model.option_defaults
    with contextlib.suppress(ValidationError):
        size = parse_size(form_size(values), model)
    with contextlib.suppress(ValidationError):
        n = parse_n(values.get("n"), model, from_form=True)
    with contextlib.suppress(ValidationError):
        options = parse_options(values, model, from_form=True)
    return pricing.known_estimate(model.name, size, n, options)


def signing_time(text: str | None) -> tuple[str | None, str]:
    """A Content Credentials signing time as (machine-readable UTC, shown text): an ISO 8601
    time with its zone becomes "2026-05-01 12:00:05 UTC"; anything else a manifest states is
    shown as it is, with no machine-readable form."""
    if not text:
        return None, "—"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None, text
    if moment.tzinfo is None:
        return None, text  # a local time of unknown zone: not converted to UTC by guesswork
    moment = moment.astimezone(UTC)
    return moment.isoformat(), moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def placeholder_class(colour: str | None) -> str:
    """The palette class for an image's average colour: each channel in 4 levels, `ph-RGB`.

    The strict CSP allows no style attributes, so the colour comes from one of 64 classes in
    static/gallery.css instead of an inline background.
    """
    if not colour or not HEX_COLOUR.fullmatch(colour):
        return "ph-none"
    levels = (round(int(colour[i : i + 2], 16) * 3 / 255) for i in (1, 3, 5))
    return "ph-" + "".join(str(level) for level in levels)


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
