"""The prompt form: Flask-WTF renders the prompt and provider; the model's own fields (size,
number of images, options) are rendered from app.image_models by `_model_options.html`, so they
change with the chosen provider. The rules live in app.validation; the reference images and the
mask (uploads and gallery image ids) are read and checked by app.inputs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from flask import current_app, request
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, TextAreaField
from wtforms.fields.choices import SelectChoice

from app import inputs, jobs, library
from app.image_models import parse_dimensions
from app.models import Image, Job
from app.parsing import parse_id
from app.providers.catalog import Target, replacement_for
from app.validation import (
    CUSTOM_SIZE_FIELDS,
    JobRequest,
    ValidationError,
    find_target,
    parse_idempotency_key,
)
from app.views.display import can_edit

MODEL_FIELDS = ("size", "n", *CUSTOM_SIZE_FIELDS)
# The fields of the reference images and the mask; their errors are shown in the form's
# references section.
INPUT_FIELDS = ("image", "mask", "reference_image")
# The most reference images an edit takes (images/edits: 1..16).
MAX_REFERENCES = inputs.MAX_IMAGES


def edit_targets(targets: Sequence[Target]) -> list[Target]:
    """The configured providers whose model can edit, retired ones last."""
    able = [target for target in targets if can_edit(target.model)]
    return sorted(able, key=lambda target: target.retired)


def visible_images(raw_ids: Sequence[str]) -> list[Image]:
    """The gallery images named by `raw_ids` that the viewer may see (stored, not in the
    trash), in the order asked, each once, at most MAX_REFERENCES. Ids that are malformed, of
    another user or of no image are left out alike, so nothing tells them apart."""
    ids: list[int] = []
    for raw in raw_ids:
        image_id = parse_id(str(raw).strip())
        if image_id is not None and image_id not in ids:
            ids.append(image_id)
    found = {image.id: image for image in library.images_by_ids(ids[:MAX_REFERENCES])}
    return [found[image_id] for image_id in ids if image_id in found]


class PromptForm(FlaskForm):
    class Meta:
        # CSRFProtect checks every POST before any view runs; the template renders the token.
        csrf = False

    prompt = TextAreaField(
        "Prompt",
        render_kw={
            "rows": 3,
            "required": True,
            "placeholder": "A watercolour fox reading a map by lantern light",
        },
    )
    provider = SelectField("Provider")
    max_references = MAX_REFERENCES
    # A fresh key per rendered form: a double-click or a resent POST creates one job.
    idempotency_key = HiddenField()
    # "Use this prompt": the job the prompt came from, for the prompt's lineage.
    parent = HiddenField()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.targets: Sequence[Target] = current_app.config["ATELIER_TARGETS"]
        self.provider.choices = [SelectChoice(t.id, t.label) for t in self.targets]
        if not self.idempotency_key.data:
            self.idempotency_key.data = uuid.uuid4().hex
        # Errors of the model's fields (size, n, options), shown by _model_options.html.
        self.model_errors: dict[str, str] = {}
        # "Generate again" on a job of a retired model: that model's name, said above the form.
        self.replaced_model: str | None = None
        # Gallery images chosen as references (`?edit=`, or sent back after an error).
        self.references: list[Image] = []
        if self.is_submitted():
            self.references = visible_images(request.form.getlist("reference_image"))
        # Errors of the reference images and the mask, by field (INPUT_FIELDS).
        self.input_errors: dict[str, str] = {}

    @classmethod
    def reusing(cls, source: Job) -> PromptForm:
        """A form prefilled with another job's prompt, provider and options. A job of a model
        that is retired (or a provider no longer configured) is offered the current model."""
        form = cls(formdata=None, data={"prompt": source.prompt, "parent": source.id})
        old = next((t for t in form.targets if t.id == source.provider), None)
        target = replacement_for(list(form.targets), old)
        form.provider.data = target.id
        form.replaced_model = source.model if target is not old else None
        values: dict[str, Any] = {"size": source.size, "n": source.n, **(source.options or {})}
        dimensions = parse_dimensions(source.size or "")
        if dimensions:
            values.update(zip(CUSTOM_SIZE_FIELDS, map(str, dimensions), strict=True))
        form.reused_values = values
        return form

    @classmethod
    def editing(cls, images: Sequence[Image]) -> PromptForm:
        """A form with these gallery images as references and the first one's prompt, on the
        default provider when it can edit, else on the first one that can."""
        first = images[0]
        form = cls(formdata=None, data={"prompt": first.job.prompt})
        form.references = list(images)
        able = edit_targets(form.targets)
        if able and not can_edit(form.target.model):
            form.provider.data = able[0].id
        return form

    def next_form(self) -> PromptForm:
        """The form to show after this one created a job: the same prompt, provider, options,
        gallery references and parent (so the next try is a small change away), with a new
        idempotency key (so it creates a new job). Uploaded files are not kept: a file input
        cannot be refilled by the server."""
        fresh = type(self)(
            formdata=None,
            data={
                "prompt": self.prompt.data,
                "provider": self.target.id,
                "parent": self.parent.data,
            },
        )
        fresh.references = list(self.references)
        fresh.reused_values = {k: v for k, v in self.model_values().items() if v is not None}
        return fresh

    @property
    def target(self) -> Target:
        """The chosen provider, or the default one when none (or an unknown one) was chosen."""
        try:
            return find_target(self.targets, self.provider.data)
        except ValidationError:
            return self.targets[0]

    def model_values(self) -> dict[str, Any]:
        """What was submitted for the model's fields, to render them again after an error."""
        if not self.is_submitted():
            return getattr(self, "reused_values", {})
        names = [*MODEL_FIELDS, *(option.name for option in self.target.model.options)]
        return {name: request.form.get(name) for name in names}

    def create_job(self, *, owner_id: int | None) -> Job | None:
        """Create the job the form describes, owned by `owner_id`, or return None with errors
        on the fields."""
        parsed = self.job_request()
        if parsed is None:
            return None
        job_request, key = parsed
        parent_id = parse_id(str(self.parent.data or "").strip())
        if parent_id is not None and jobs.get_job(parent_id) is None:
            parent_id = None  # the parent was deleted meanwhile: keep the prompt, drop the link
        try:
            job, _ = jobs.create_job(
                job_request,
                owner_id=owner_id,
                idempotency_key=key,
                parent_id=parent_id,
                origin="reuse" if parent_id else None,
            )
        except jobs.JobConflict as error:
            self.prompt.errors = [error.message]
            return None
        return job

    def job_request(self) -> tuple[JobRequest, str | None] | None:
        """The validated request, or None with the error attached to its field."""
        try:
            return (
                inputs.request_from_form(request.form, request.files, self.targets),
                parse_idempotency_key(self.idempotency_key.data),
            )
        except ValidationError as error:
            if error.field in ("prompt", "provider"):
                getattr(self, error.field).errors = [error.message]
            elif error.field in INPUT_FIELDS:
                self.input_errors[error.field] = error.message
            else:
                self.model_errors[error.field or "prompt"] = error.message
            return None
