"""Prompt lineage: the family of a job made by "retry", "generate again" or "use this prompt".

A job's `parent_id` names the job it was made from and `origin` says how. `family_of(job)`
reads the chain of ancestors up to the root (bounded, in one recursive query) and the job's
direct children, with their images loaded, so a page can link every member to an image.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import literal, select
from sqlalchemy.orm import selectinload

from app.models import Image, ImageStatus, Job, db

MAX_ANCESTORS = 20
MAX_CHILDREN = 50

ORIGIN_LABELS = {
    "retry": "Retry",
    "again": "Generated again",
    "reuse": "Prompt reused",
}


@dataclass(frozen=True)
class Family:
    ancestors: list[Job]  # the root first, the parent last
    children: list[Job]  # oldest first
    more_ancestors: bool  # the chain goes on beyond MAX_ANCESTORS
    more_children: bool  # there are more than MAX_CHILDREN children

    @property
    def parent(self) -> Job | None:
        return self.ancestors[-1] if self.ancestors else None

    @property
    def is_alone(self) -> bool:
        return not self.ancestors and not self.children


def family_of(job: Job) -> Family:
    ancestors: list[Job] = []
    if job.parent_id is not None:
        chain = (
            select(Job.id.label("id"), Job.parent_id.label("parent_id"), literal(1).label("depth"))
            .where(Job.id == job.parent_id)
            .cte("ancestors", recursive=True)
        )
        chain = chain.union_all(
            select(Job.id, Job.parent_id, chain.c.depth + 1)
            .join(chain, Job.id == chain.c.parent_id)
            .where(chain.c.depth < MAX_ANCESTORS)
        )
        rows = db.session.execute(
            select(Job)
            .join(chain, Job.id == chain.c.id)
            .options(selectinload(Job.images))
            .order_by(chain.c.depth.desc())
        ).scalars()
        ancestors = list(rows)
    children = list(
        db.session.scalars(
            select(Job)
            .where(Job.parent_id == job.id)
            .options(selectinload(Job.images))
            .order_by(Job.created_at, Job.id)
            .limit(MAX_CHILDREN + 1)
        )
    )
    return Family(
        ancestors=ancestors,
        children=children[:MAX_CHILDREN],
        more_ancestors=bool(ancestors) and ancestors[0].parent_id is not None,
        more_children=len(children) > MAX_CHILDREN,
    )


def first_image(job: Job) -> Image | None:
    """The job's first image that can be shown (stored, not in the trash)."""
    return next(
        (
            image
            for image in job.images
            if image.status == ImageStatus.STORED and image.deleted_at is None
        ),
        None,
    )


def origin_label(origin: str | None) -> str:
    return ORIGIN_LABELS.get(origin or "", "Made from")
