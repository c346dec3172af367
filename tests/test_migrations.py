"""The committed migrations build the schema the models describe, from an empty database."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from tests.helpers import database_url_for, flask_db


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
