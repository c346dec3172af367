"""Everything Atelier writes is private to the service user: files 0600, folders 0700.

The data folder holds every user's images and the database (with its -wal/-shm), and a backup
holds a copy of all of it; other local accounts must read none of it, whatever umask the
service was started with.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import on_postgresql, wait_for_job


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Start as a typical service does (umask 022, so files 0644), and put the umask back."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def loose_entries(root: Path) -> list[str]:
    """Every file with a group or other permission bit, every folder not exactly 0700."""
    found = []
    for folder, _folders, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            mode = stat.S_IMODE(os.lstat(name).st_mode)
            is_folder = name == folder
            if (is_folder and mode != 0o700) or (not is_folder and mode & 0o077):
                found.append(f"{oct(mode)} {os.path.relpath(name, root)}")
    return found


@pytest.mark.parametrize("copy", [False, True], ids=["linked", "copied"])
def test_data_folder_and_backups_are_private_to_the_service_user(
    permissive_umask, app_factory, tmp_path, copy
):
    app = app_factory()
    client = app.test_client()
    response = client.post("/api/jobs", json={"prompt": "a private garden", "size": "256x256"})
    assert response.status_code == 202
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    data_dir = Path(app.config["ATELIER_DATA_DIR"])
    stored = {p.name for p in data_dir.rglob("*")}
    assert any(name.endswith(".png") for name in stored)
    assert any(name.endswith("-512.webp") for name in stored)
    if not on_postgresql():  # the database lives in the data folder, with its -wal and -shm
        assert {"atelier.db", "atelier.db-wal", "atelier.db-shm"} <= stored, stored

    assert loose_entries(data_dir) == []

    if on_postgresql():
        return  # PostgreSQL is backed up with pg_dump, not `flask atelier backup`
    dest = tmp_path / "backup"
    args = ["atelier", "backup", str(dest), *(["--copy"] if copy else [])]
    backed_up = app.test_cli_runner().invoke(args=args)
    assert backed_up.exit_code == 0, backed_up.output
    assert (dest / "atelier.db").is_file() and (dest / "manifest.json").is_file()
    assert loose_entries(dest) == []
    assert loose_entries(data_dir) == []
