"""The prompt form: rendering and CSRF via Flask-WTF; the rules live in app.validation."""

from __future__ import annotations

import uuid

from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice

from app import jobs
from app.models import Job
from app.validation import (
    DEFAULT_SIZE,
    MAX_IMAGES,
    MAX_PROMPT_CHARS,
    MIN_IMAGES,
    SIZES,
    JobRequest,
    ValidationError,
    parse_idempotency_key,
    parse_job_request,
)


class PromptForm(FlaskForm):
    class Meta:
        # CSRFProtect checks every POST before any view runs; the template renders the token.
        csrf = False

    prompt = TextAreaField(
        "Prompt",
        render_kw={
            "rows": 3,
            "maxlength": MAX_PROMPT_CHARS,
            "required": True,
            "placeholder": "A watercolour fox reading a map by lantern light",
        },
    )
    size = SelectField(
        "Size", choices=[SelectChoice(size, size) for size in SIZES], default=DEFAULT_SIZE
    )
    n = IntegerField(
        "Images",
        default=1,
        render_kw={"min": MIN_IMAGES, "max": MAX_IMAGES, "inputmode": "numeric"},
    )
    # A fresh key per rendered form: a double-click or a resent POST creates one job.
    idempotency_key = HiddenField()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.idempotency_key.data:
            self.idempotency_key.data = uuid.uuid4().hex

    def create_job(self) -> Job | None:
        """Create the job the form describes, or return None with errors on the fields."""
        parsed = self.job_request()
        if parsed is None:
            return None
        job_request, key = parsed
        try:
            job, _ = jobs.create_job(job_request, idempotency_key=key)
        except jobs.JobConflict as error:
            self.prompt.errors = [error.message]
            return None
        return job

    def job_request(self) -> tuple[JobRequest, str | None] | None:
        """The validated request, or None with the errors attached to the form's fields."""
        raw = {
            "prompt": self.prompt.raw_data[0] if self.prompt.raw_data else None,
            "size": self.size.raw_data[0] if self.size.raw_data else None,
            "n": self.n.raw_data[0] if self.n.raw_data else None,
        }
        try:
            return (
                parse_job_request(raw, from_form=True),
                parse_idempotency_key(self.idempotency_key.data),
            )
        except ValidationError as error:
            getattr(self, error.field or "prompt").errors = [error.message]
            return None
