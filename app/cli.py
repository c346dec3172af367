"""`flask atelier ...`: maintenance commands for the database, the image folder and accounts."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from app import backup, consistency, curation, logs, repair, setup, storage, storage_migrate
from app.auth import accounts, tokens
from app.models import User, db, write_transaction
from app.validation import ValidationError
from app.worker import start_background

log = logging.getLogger(__name__)

cli = AppGroup("atelier", help="Atelier maintenance commands.")


@cli.command("verify")
@click.option(
    "--repair",
    is_flag=True,
    help="First restore originals stored by earlier versions to the provider's bytes and write "
    "missing sidecars (as repair-originals does); then move stray and stale temporary files to "
    "orphans/<timestamp>/ (never deleted; in object storage, ATELIER_STORAGE_URL, unreferenced "
    "objects older than the grace period are deleted), regenerate missing thumbnails and remove "
    "spool leftovers whose bytes are stored (same sha256, named by a row). Rows "
    "whose original is missing or no longer matches its sha256 are only reported.",
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
        storage.current(), repair=repair, grace_seconds=grace_seconds, progress=_progress
    )
    for line in report.lines():
        click.echo(line)
    if not report.clean:
        click.get_current_context().exit(1)


@cli.command("repair-originals")
def repair_originals_command() -> None:
    """Restore originals stored by earlier versions (which spliced Atelier's metadata into every
    PNG) to the provider's exact bytes, move them to their new content address with their
    rows and thumbnails, and write every image's sidecar. Safe to interrupt and run again.
    `verify --repair` runs it too."""
    report = repair.repair_originals(storage.current(), progress=_progress)
    for line in report.lines():
        click.echo(line)
    if report.left_alone:
        click.get_current_context().exit(1)


def _progress(line: str) -> None:
    click.echo(line, err=True)


@cli.command("rebuild")
def rebuild_command() -> None:
    """Recreate jobs and image rows from the sidecars beside the originals no row references
    (and from the metadata inside PNGs stored by earlier versions).

    Run it before `verify --repair`, which moves unreferenced files aside.
    """
    report = consistency.rebuild(storage.current())
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

    Any number of worker processes and web processes can share one database and image folder:
    claims are atomic and every change is fenced by its lease.
    """
    logs.configure_logging()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if app.config["ATELIER_WORKER_THREADS"] == 0:
        raise click.UsageError("ATELIER_WORKER_THREADS is 0: this worker would do nothing.")
    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    worker = start_background(app)
    assert worker is not None
    log.info("worker process %s running; stop it with SIGTERM or Ctrl-C", os.getpid())
    try:
        stopping.wait()
    finally:
        worker.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


# --- storage ------------------------------------------------------------------------------------


@cli.group("storage")
def storage_group() -> None:
    """Where the library's objects live (ATELIER_STORAGE_URL)."""


@storage_group.command("migrate")
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="file: (the data folder), az://CONTAINER/PREFIX or s3://BUCKET/PREFIX, with "
    "credentials from the same variables as ATELIER_STORAGE_URL.",
)
def storage_migrate_command(target_url: str) -> None:
    """Copy every image, thumbnail, edit input and sidecar to URL, verifying each, then record
    URL in the database as the library's storage: from then on every instance must run with
    ATELIER_STORAGE_URL=URL. Resumable: run it again after an interruption. The source is
    never deleted. Exit status 1 when an object is damaged, missing or failed (no switch)."""
    try:
        report = storage_migrate.migrate(storage.current(), target_url, progress=_progress)
    except storage_migrate.MigrationRefused as error:
        raise click.ClickException(str(error)) from None
    for line in report.lines():
        click.echo(line)
    if not report.switched:
        click.get_current_context().exit(1)


# --- accounts -----------------------------------------------------------------------------------


@cli.group("users")
def users_group() -> None:
    """Accounts: create, list, set passwords and limits."""


def _password_from(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password (12+ characters)", hide_input=True, confirmation_prompt=True)


@users_group.command("create")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Administrators see and manage everyone's work.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(username: str, admin: bool, password_stdin: bool) -> None:
    """Create an account (asks for its password)."""
    try:
        user = accounts.create_user(username, _password_from(password_stdin), admin=admin)
    except ValidationError as error:
        raise click.ClickException(error.message) from None
    setup.ensure_token(current_app._get_current_object())  # the setup link is no longer needed
    click.echo(f"Created {'administrator' if user.is_admin else 'user'} {user.username}.")


@users_group.command("list")
def users_list() -> None:
    """List accounts."""
    for user in db.session.scalars(select(User).order_by(User.username)):
        role = "admin" if user.is_admin else "user"
        click.echo(f"{user.id}\t{user.username}\t{role}\t{user.created_at:%Y-%m-%d}")


@users_group.command("set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_set_password(username: str, password_stdin: bool) -> None:
    """Set a new password (signs the account out everywhere)."""
    user = _user_named(username)
    try:
        accounts.set_password(user.id, _password_from(password_stdin))
    except ValidationError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Password of {user.username} changed; its sessions have ended.")


@users_group.command("set-limits")
@click.argument("username")
@click.option("--daily-images", type=click.IntRange(min=0), help="Images per day (0: no limit).")
@click.option("--monthly-budget", type=click.FloatRange(min=0), help="US dollars (0: none).")
@click.option("--default", "use_default", is_flag=True, help="Back to the site-wide defaults.")
def users_set_limits(
    username: str, daily_images: int | None, monthly_budget: float | None, use_default: bool
) -> None:
    """Give one account its own quota or budget."""
    user = _user_named(username)
    with write_transaction() as session:
        row = session.get(User, user.id)
        if use_default:
            row.daily_image_quota = row.monthly_budget_usd = None
        if daily_images is not None:
            row.daily_image_quota = daily_images
        if monthly_budget is not None:
            row.monthly_budget_usd = monthly_budget
    click.echo(f"Limits of {user.username} updated.")


@cli.group("tokens")
def tokens_group() -> None:
    """API tokens: create and revoke."""


@tokens_group.command("create")
@click.argument("username")
@click.argument("name")
def tokens_create(username: str, name: str) -> None:
    """Create an API token for USERNAME; prints it once."""
    user = _user_named(username)
    try:
        row, token = tokens.create_token(user.id, name)
    except ValidationError as error:
        raise click.ClickException(error.message) from None
    click.echo(f"Token {row.id} for {user.username} (shown once):", err=True)
    click.echo(token)


@tokens_group.command("list")
@click.argument("username")
def tokens_list(username: str) -> None:
    """List live tokens of USERNAME."""
    for row in tokens.tokens_of(_user_named(username).id):
        used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
        click.echo(f"{row.id}\t{row.name}\t{row.prefix}…\tlast used {used}")


@tokens_group.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id."""
    if not tokens.revoke_token(None, token_id):
        raise click.ClickException(f"There is no live token {token_id}.")
    click.echo(f"Token {token_id} revoked.")


def _user_named(username: str) -> User:
    user = accounts.find_user(username)
    if user is None:
        raise click.ClickException(f"There is no account called {username!r}.")
    return user
