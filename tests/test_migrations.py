"""The committed migrations build the schema the models describe, from an empty database."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy import create_engine, inspect

from tests.helpers import ROOT, database_url_for


def flask_db(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_DATA_DIR": str(tmp_path), "ATELIER_WORKER_THREADS": "0"}
    database_url = database_url_for(tmp_path, migrated=False)  # None on SQLite: the file
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def tables(tmp_path) -> set[str]:
    engine = create_engine(database_url_for(tmp_path) or f"sqlite:///{tmp_path / 'atelier.db'}")
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_then_check_finds_no_drift(tmp_path):
    upgrade = flask_db(tmp_path, "upgrade")
    check = flask_db(tmp_path, "check")

    assert upgrade.returncode == 0, upgrade.stderr
    assert {"jobs", "images", "collections", "alembic_version"} <= tables(tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_downgrade_to_base_and_upgrade_again(tmp_path):
    assert flask_db(tmp_path, "upgrade").returncode == 0

    downgrade = flask_db(tmp_path, "downgrade", "base")
    again = flask_db(tmp_path, "upgrade")

    assert downgrade.returncode == 0, downgrade.stderr
    assert again.returncode == 0, again.stderr
