"""`flask atelier ...`: maintenance commands for the database and the image folder."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import AppGroup

from app import consistency, curation
from app.worker import run_worker_process

cli = AppGroup("atelier", help="Atelier maintenance commands.")


@cli.command("verify")
@click.option(
    "--repair",
    is_flag=True,
    help="Move stray and stale temporary files to orphans/<timestamp>/ (never deleted) and "
    "regenerate missing thumbnails. Rows are only reported.",
)
@click.option(
    "--grace-seconds",
    type=click.IntRange(min=0),
    default=consistency.DEFAULT_GRACE_SECONDS,
    show_default=True,
    help="Leave files younger than this alone: they may be writes in progress.",
)
def verify_command(repair: bool, grace_seconds: int) -> None:
    """Check that image rows and files agree. Exit status 1 when problems remain."""
    report = consistency.verify(
        current_app.config["ATELIER_DATA_DIR"], repair=repair, grace_seconds=grace_seconds
    )
    for line in report.lines():
        click.echo(line)
    if not report.clean:
        click.get_current_context().exit(1)


@cli.command("rebuild")
def rebuild_command() -> None:
    """Recreate jobs and image rows from the metadata inside stored PNGs no row references.

    Run it before `verify --repair`, which moves unreferenced files aside.
    """
    report = consistency.rebuild(current_app.config["ATELIER_DATA_DIR"])
    for line in report.lines():
        click.echo(line)


@cli.command("purge")
@click.option(
    "--all", "everything", is_flag=True, help="Empty the whole trash, not only old items."
)
def purge_command(everything: bool) -> None:
    """Delete images that have been in the trash longer than ATELIER_TRASH_DAYS."""
    count = curation.purge() if everything else curation.purge_expired()
    click.echo(f"Purged {count} image(s) from the trash.")


@cli.command("worker")
def worker_command() -> None:
    """Run only the background worker (no web server) until SIGTERM or Ctrl-C.

    Any number of worker processes and web processes can share one database and image folder.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_worker_process(current_app._get_current_object())  # type: ignore[attr-defined]
    except ValueError as error:
        raise click.UsageError(str(error)) from None
