"""`flask atelier ...`: maintenance commands for the database and the image folder."""

from __future__ import annotations

from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from app import backup, consistency, curation, logs
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
    logs.configure_logging()
    try:
        run_worker_process(current_app._get_current_object())  # type: ignore[attr-defined]
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@cli.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--copy",
    "copy_files",
    is_flag=True,
    help="Copy the image files instead of hard-linking them (links need the same file system).",
)
def backup_command(dest: Path, copy_files: bool) -> None:
    """Write a consistent snapshot of the SQLite database and the image files into DEST.

    Safe while Atelier runs. For PostgreSQL, use pg_dump (this command says so and fails).
    """
    try:
        manifest = backup.create_backup(dest, link=not copy_files)
    except backup.BackupError as error:
        raise click.ClickException(str(error)) from None
    counts = manifest["counts"]
    click.echo(
        f"Backed up {counts['jobs']} job(s), {counts['stored_images']} stored image(s) and "
        f"{counts['files']} file(s) ({manifest['files_linked']} hard-linked) into {dest}."
    )
    for name in manifest["missing"]:
        click.echo(f"Missing (deleted while the backup ran): {name}.")


@cli.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that already has jobs.")
def restore_command(src: Path, force: bool) -> None:
    """Restore a backup made by `flask atelier backup` into the configured data folder.

    Stop Atelier and its workers first. Then run `flask atelier verify`.
    """
    try:
        result = backup.restore_backup(src, force=force)
    except backup.BackupError as error:
        raise click.ClickException(str(error)) from None
    counts = result.manifest["counts"]
    click.echo(
        f"Restored {counts['jobs']} job(s) and {counts['stored_images']} stored image(s) "
        f"({result.files_restored} file(s) written) from the backup of "
        f"{result.manifest['created_at']}."
    )
    if result.manifest["schema_revision"] != result.current_revision:
        click.echo(
            f"The backup's schema revision is {result.manifest['schema_revision']}, this "
            f"version's is {result.current_revision}: run `flask db upgrade`."
        )
