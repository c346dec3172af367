"""Full-text search over prompts and the models' revised prompts.

SQLite: the FTS5 table `job_search` (rowid = job id, created by a migration), kept in sync by the
app in the same transaction as every change to a job's prompt or revised prompts. PostgreSQL:
a GIN index over `to_tsvector('simple', prompt || revised_prompts)`, kept by the database.
Words match by prefix, all of them must match, so results narrow as a person types.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, func, select, text

from app.models import Job, db

MAX_WORDS = 12
WORD = re.compile(r"\w+", re.UNICODE)


def _words(query: str) -> list[str]:
    return WORD.findall(query.lower())[:MAX_WORDS]


def _is_sqlite() -> bool:
    return db.engine.dialect.name == "sqlite"


def index_job(session: Any, job_id: int, prompt: str, revised_prompts: str | None) -> None:
    """(Re)index one job; call inside the write transaction that changed it."""
    if not _is_sqlite():
        return
    session.execute(text("DELETE FROM job_search WHERE rowid = :id"), {"id": job_id})
    session.execute(
        text("INSERT INTO job_search (rowid, prompt, revised_prompts) VALUES (:id, :p, :r)"),
        {"id": job_id, "p": prompt, "r": revised_prompts or ""},
    )


def unindex_job(session: Any, job_id: int) -> None:
    if _is_sqlite():
        session.execute(text("DELETE FROM job_search WHERE rowid = :id"), {"id": job_id})


def _fts_query(words: list[str]) -> str:
    return " ".join('"' + word.replace('"', "") + '"*' for word in words)


def few_matching_job_ids(query: str, limit: int) -> list[int] | None:
    """The ids of the jobs matching `query` when there are at most `limit` of them (SQLite);
    None when there are more, or on PostgreSQL, or when the query has no words."""
    words = _words(query)
    if not words or not _is_sqlite():
        return None
    ids = db.session.scalars(
        select(text("rowid"))
        .select_from(text("job_search"))
        .where(text("job_search MATCH :fts").bindparams(fts=_fts_query(words)))
        .limit(limit + 1)
    ).all()
    return list(ids) if len(ids) <= limit else None


def matches(query: str) -> ColumnElement[bool] | None:
    """A condition on Job selecting jobs whose prompt or revised prompt has every word of
    `query` (as a prefix); None when the query has no words."""
    words = _words(query)
    if not words:
        return None
    if _is_sqlite():
        fts = " ".join('"' + word.replace('"', "") + '"*' for word in words)
        ids = (
            select(text("rowid"))
            .select_from(text("job_search"))
            .where(text("job_search MATCH :fts").bindparams(fts=fts))
        )
        return Job.id.in_(ids)
    document = func.to_tsvector(
        "simple", func.coalesce(Job.prompt, "") + " " + func.coalesce(Job.revised_prompts, "")
    )
    return document.op("@@")(func.to_tsquery("simple", " & ".join(f"{w}:*" for w in words)))
