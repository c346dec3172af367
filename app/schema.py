"""The database schema brought to head when a server starts (gunicorn's master, `python -m app`).

Several instances starting together on one database take turns under a lock; whoever gets it
second finds the schema at head and has nothing to do.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from app import storage
from app.models import db

# Any constant shared by every Atelier instance; the PostgreSQL advisory lock's key.
MIGRATION_LOCK_KEY = 0x4154454C  # "ATEL"
LOCK_FILE = "migrate.lock"


@contextmanager
def migration_lock(app: Flask) -> Iterator[None]:
    """Hold a lock no other Atelier instance on this database can hold at the same time."""
    if db.engine.dialect.name == "postgresql":
        # Session-level advisory lock: taken and released on one connection held open meanwhile.
        with db.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
    else:  # SQLite: the database lives in the data folder, so a file lock there is enough
        with (storage.current(app).root / LOCK_FILE).open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade_database(app: Flask) -> None:
    """`flask db upgrade`, once across the instances starting on this database."""
    with app.app_context():
        try:
            with migration_lock(app):
                upgrade()
        finally:
            db.engine.dispose()  # no pooled connection may cross a fork (gunicorn's workers)
