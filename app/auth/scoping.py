"""Query scoping: every ORM query of jobs, images and collections made while handling a
request is limited to the viewer's own rows, so a forgotten check in a view cannot leak
another user's work. Admins, open mode and background threads (no request) are not scoped."""

from __future__ import annotations

from flask import g, has_request_context
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from app.models import Collection, Image, Job, JobInput

# Execution options for the few reads that must see every owner's rows whoever is asking: the
# bookkeeping that decides whether a stored file is still used (files are content-addressed, so
# two owners' identical images share one file). Never for anything shown to the viewer.
# Use: `select(...).execution_options(**scoping.ALL_OWNERS)`.
ALL_OWNERS_OPTION = "atelier_all_owners"
ALL_OWNERS = {ALL_OWNERS_OPTION: True}


def set_scope(owner_id: int | None) -> None:
    """Limit this request's queries of jobs, images and collections to one owner."""
    g.scope_owner_id = owner_id


def install_scoping() -> None:
    """Add the request's owner filter to every ORM statement on jobs, images and collections."""
    if not event.contains(Session, "do_orm_execute", _scope):
        event.listen(Session, "do_orm_execute", _scope)


def _scope(state: ORMExecuteState) -> None:
    if not has_request_context():
        return
    owner_id = g.get("scope_owner_id")
    if owner_id is None or state.is_column_load or state.is_relationship_load:
        return
    if state.execution_options.get(ALL_OWNERS_OPTION):
        return
    if not (state.is_select or state.is_update or state.is_delete):
        return
    state.statement = state.statement.options(
        with_loader_criteria(Job, Job.owner_id == owner_id, include_aliases=True),
        with_loader_criteria(Image, Image.owner_id == owner_id, include_aliases=True),
        with_loader_criteria(JobInput, JobInput.owner_id == owner_id, include_aliases=True),
        with_loader_criteria(Collection, Collection.owner_id == owner_id, include_aliases=True),
    )
