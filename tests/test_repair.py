"""Repairing a library stored by earlier versions (`flask atelier repair-originals`, also run by
`verify --repair`): spliced PNGs back to the provider's bytes, moved with their rows, thumbnails,
edit inputs and share links; crash-safe and idempotent.

An "old" library is made for real: jobs run against a server over loopback, then every PNG is
stored again the way earlier versions did (`pngmeta.embed`, then the content-addressed store),
its rows pointed at that file, and the provider's file, its thumbnails and every sidecar removed.
"""

# The fixtures imported from test_originals are redefined as parameters (pytest's way).
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app import consistency, pngmeta, repair, storage
from app.auth import scoping
from app.cli import cli
from app.models import Image, Job, JobInput, db, write_transaction
from tests.helpers import EMULATOR_KEY, OWNER_PASSWORD, app_with_owners, csrf_token, signed_in
from tests.independent_azure import KEY as INDEPENDENT_KEY
from tests.originals_helpers import (  # noqa: F401  (fixtures)
    GPT,
    app,
    azure,
    client,
    data_dir,
    recorder,
    run_job,
    sha,
)

ROOT = Path(__file__).resolve().parent.parent


# --- an old library ------------------------------------------------------------------------


def age_library(app: Flask) -> dict[int, bytes]:
    """Turn the library into what an earlier version stored; return each image row's
    provider bytes (image id -> bytes)."""
    files = storage.current(app)
    provider: dict[int, bytes] = {}
    with app.app_context():
        images = db.session.scalars(
            select(Image)
            .where(Image.sha256.is_not(None))
            .options(selectinload(Image.job).selectinload(Job.inputs))
            .execution_options(**scoping.ALL_OWNERS)
        ).all()
        moves = []
        for image in images:
            data = files.read(image.file_name)
            provider[image.id] = data
            if image.content_type != "image/png":
                continue
            # The old code path: Storage.store_image embedded, then stored what it embedded.
            spliced = pngmeta.embed(data, pngmeta.row_metadata(image.job, image))
            old = files.store_prepared(storage.prepare_image(spliced))
            old = storage.StoredImage(
                **{**old.__dict__, "credentials": storage.credential_columns(spliced, PNG)}
            )
            moves.append((image.id, image.file_name, image.sha256, old))
        db.session.commit()
        for image_id, new_name, new_sha, old in moves:
            values = {
                "sha256": old.sha256,
                "bytes": old.bytes,
                "file_name": old.file_name,
                "thumbnail_name": old.thumbnail_name,
                "thumbnail_large_name": old.thumbnail_large_name,
            }
            with write_transaction() as session:
                session.execute(
                    update(Image).where(Image.id == image_id).values(**values, **old.credentials)
                )
                # An edit that used this gallery image named the spliced file then.
                session.execute(
                    update(JobInput)
                    .where(JobInput.file_name == new_name, JobInput.sha256 == new_sha)
                    .values(**values)
                )
        for _, new_name, new_sha, _ in moves:
            files.remove_files([new_name, *storage.thumbnail_names(new_sha)])
    for path in (data_dir(app) / storage.SIDECARS).rglob("*.json"):
        path.unlink()
    return provider


PNG = "image/png"


def files_under(app: Flask) -> dict[str, bytes]:
    root = data_dir(app)
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for folder in ("images", "thumbs", storage.SIDECARS, "orphans")
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def rows(app: Flask) -> tuple[list[tuple], list[tuple]]:
    with app.app_context():
        images = db.session.execute(
            select(
                Image.id,
                Image.job_id,
                Image.index,
                Image.sha256,
                Image.bytes,
                Image.file_name,
                Image.thumbnail_name,
                Image.thumbnail_large_name,
                Image.credentials_valid,
            )
            .order_by(Image.id)
            .execution_options(**scoping.ALL_OWNERS)
        ).all()
        inputs = db.session.execute(
            select(
                JobInput.id,
                JobInput.sha256,
                JobInput.file_name,
                JobInput.thumbnail_name,
                JobInput.thumbnail_large_name,
            ).order_by(JobInput.id)
        ).all()
        db.session.commit()
    return [tuple(row) for row in images], [tuple(row) for row in inputs]


def expected_files(app: Flask) -> set[str]:
    """Every file the rows account for: originals, thumbnails, sidecars."""
    images, inputs = rows(app)
    names = set()
    for _, job_id, index, digest, _, file_name, small, large, _ in images:
        names |= {file_name, small, large, storage.sidecar_name(digest, job_id, index)}
    for _, _, file_name, small, large in inputs:
        names |= {file_name, small, large}
    return names


def run_repair(app: Flask, **options: Any) -> repair.RepairReport:
    with app.app_context():
        return repair.repair_originals(storage.current(app), **options)


def run_verify(app: Flask, **options: Any) -> consistency.VerifyReport:
    with app.app_context():
        return consistency.verify(storage.current(app), **options)


def assert_repaired(app: Flask, provider: dict[int, bytes]) -> None:
    """Every row names the provider's bytes at their content address, and nothing else is on
    disk: no old file, no duplicate, no leftover thumbnail or sidecar."""
    images, inputs = rows(app)
    for image_id, _, _, digest, size, file_name, small, large, _ in images:
        data = provider[image_id]
        assert digest == sha(data)
        assert size == len(data)
        assert (data_dir(app) / file_name).read_bytes() == data
        assert file_name.endswith(f"/{digest}{Path(file_name).suffix}")
        assert (small, large) == storage.thumbnail_names(digest)
    provider_digests = {sha(data) for data in provider.values()}
    for _, digest, file_name, _, _ in inputs:
        assert (data_dir(app) / file_name).is_file()
        if file_name.endswith(".png") and digest in provider_digests:
            assert sha((data_dir(app) / file_name).read_bytes()) == digest
    assert set(files_under(app)) == expected_files(app)
    report = run_verify(app)
    assert report.clean, report.lines()


@pytest.fixture
def old_library(app: Flask, client: Any, recorder: Any) -> dict[str, Any]:
    """A PNG job of two images, a JPEG job, and an edit that used a PNG as its reference, all
    stored as an earlier version would have."""
    pngs = run_job(client, prompt="two lanterns", provider=GPT, n=2)
    jpeg = run_job(client, prompt="a jpeg", provider=GPT, options={"output_format": "jpeg"})
    edit = run_job(
        client, prompt="lit lanterns", provider=GPT, reference_images=[pngs["images"][0]["id"]]
    )
    sent = recorder.images_sent()
    provider = age_library(app)
    assert sorted(provider.values()) == sorted(sent)  # what the emulator sent, nothing else
    return {"pngs": pngs, "jpeg": jpeg, "edit": edit, "provider": provider}


# --- the happy path --------------------------------------------------------------------------


def test_stripping_the_chunk_gives_back_the_providers_bytes_exactly(old_library, app):
    images, _ = rows(app)
    spliced = [name for *_, name, _, _, _ in images if name.endswith(".png")]
    assert len(spliced) == 3
    for image_id, *_, file_name, _, _, _ in images:
        data = (data_dir(app) / file_name).read_bytes()
        if file_name.endswith(".png"):
            assert data != old_library["provider"][image_id]
            assert pngmeta.strip(data) == old_library["provider"][image_id]


def test_verify_reports_an_old_library_and_repair_restores_every_original(old_library, app):
    before = run_verify(app)
    assert len(before.spliced_originals) == 3
    assert len(before.missing_sidecars) == 4  # the JPEG has none either
    assert not before.clean

    report = run_repair(app)

    assert len(report.repaired) == 3
    assert (report.image_rows, report.input_rows) == (3, 1)
    assert report.sidecars_written == 4
    assert_repaired(app, old_library["provider"])
    images, _ = rows(app)
    assert all(valid for *_, valid in images)  # the provider's Content Credentials validate


def test_the_edit_keeps_its_input_and_its_sidecar_names_the_restored_file(old_library, app):
    run_repair(app)

    source = old_library["pngs"]["images"][0]
    restored = sha(old_library["provider"][source["id"]])
    _, inputs = rows(app)
    assert [(digest, name) for _, digest, name, _, _ in inputs] == [
        (restored, f"images/{restored[:2]}/{restored}.png")
    ]
    edit = old_library["edit"]
    output = old_library["provider"][edit["images"][0]["id"]]
    sidecar = data_dir(app) / storage.sidecar_name(sha(output), edit["id"], 0)
    assert f'"sha256":"{restored}"' in sidecar.read_text()


def test_pages_and_downloads_serve_the_restored_files(old_library, app, client):
    run_repair(app)

    for image_id, data in old_library["provider"].items():
        with client.get(f"/files/images/{image_id}/original") as response:
            assert response.get_data() == data
        with client.get(f"/files/thumbs/{image_id}") as response:
            assert response.status_code == 200
        page = client.get(f"/images/{image_id}").get_data(as_text=True)
        assert sha(data) in page
        with client.get(f"/files/{sha(data)}-256.webp") as response:
            assert response.status_code == 200


def test_a_second_run_changes_nothing(old_library, app):
    run_repair(app)
    files, table = files_under(app), rows(app)

    again = run_repair(app)

    assert (again.repaired, again.finished, again.left_alone) == ({}, [], {})
    assert again.sidecars_written == 0
    assert files_under(app) == files
    assert rows(app) == table
    assert again.lines() == ["Every original is the provider's, and every image has its sidecar."]


def test_progress_is_reported_every_so_many_files(old_library, app):
    lines: list[str] = []

    run_repair(app, progress=lines.append, every=2)

    assert lines == [
        "Repaired 2 of 3 originals with embedded metadata.",
        "Repaired 3 of 3 originals with embedded metadata.",
    ]


# --- crashes -------------------------------------------------------------------------------


class Crash(Exception):
    pass


@pytest.mark.parametrize("point", ["written", "committed", "thumbnails_removed"])
def test_a_crash_at_any_step_then_a_rerun_loses_and_duplicates_nothing(
    old_library, app, monkeypatch, point
):
    steps: list[str] = []

    def crash_on_second_file(name: str) -> None:
        steps.append(name)
        if name == point and steps.count(point) == 2:
            raise Crash(name)

    monkeypatch.setattr(repair, "_step", crash_on_second_file)
    with pytest.raises(Crash):
        run_repair(app)
    monkeypatch.undo()

    report = run_repair(app)

    assert len(report.repaired) + len(report.finished) == 2  # the first file was done
    assert_repaired(app, old_library["provider"])
    assert run_repair(app).repaired == {}


def test_sigkill_after_the_commit_then_a_rerun_finishes(old_library, app):
    env = {
        **os.environ,
        "ATELIER_DATA_DIR": str(data_dir(app)),
        "AZURE_OPENAI_ENDPOINT": app.config["AZURE_OPENAI_ENDPOINT"],
        "AZURE_OPENAI_API_KEY": EMULATOR_KEY,
        "AZURE_OPENAI_DEPLOYMENT": "gpt-image-1=gpt-image-1",
        "ATELIER_WORKER_THREADS": "0",
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
    }
    command = [sys.executable, "-m", "flask", "--app", "app", "atelier", "repair-originals"]
    with app.app_context():
        db.engine.dispose()

    killed = subprocess.run(
        command, cwd=ROOT, env={**env, "ATELIER_TEST_CRASH_AT": "repair_committed"}, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL
    rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert rerun.returncode == 0, rerun.stderr
    # The first file's move was committed: its old file is what is left of it.
    assert "Finished an interrupted repair" in rerun.stdout
    assert "Repaired 3 of 3 originals" in rerun.stderr
    assert_repaired(app, old_library["provider"])


# --- files no row names, damaged files -------------------------------------------------------


def test_an_orphan_or_damaged_spliced_file_is_left_alone(app, client):
    job = run_job(client, prompt="one lantern", provider=GPT)
    provider = age_library(app)
    (image,) = job["images"]
    _, _, _, digest, _, file_name, *_ = rows(app)[0][0]
    damaged = data_dir(app) / file_name
    damaged.write_bytes(damaged.read_bytes().replace(b"one lantern", b"two lantern"))
    orphan = pngmeta.embed(provider[image["id"]], {"atelier": 1, "prompt": "an orphan"})
    orphan_name = f"images/{sha(orphan)[:2]}/{sha(orphan)}.png"
    (data_dir(app) / orphan_name).parent.mkdir(parents=True, exist_ok=True)
    (data_dir(app) / orphan_name).write_bytes(orphan)
    table = rows(app)

    report = run_repair(app)

    assert sorted(report.left_alone) == sorted([file_name, orphan_name])
    assert "does not hash to its name" in report.left_alone[file_name]
    assert "no row names it" in report.left_alone[orphan_name]
    assert rows(app) == table
    assert (data_dir(app) / orphan_name).read_bytes() == orphan
    verify = run_verify(app, grace_seconds=0)
    assert verify.hash_mismatches == [image["id"]]


# --- two owners, share links -----------------------------------------------------------------


@pytest.fixture
def owners_app(app_factory: Any, azure: Any) -> Flask:
    return app_with_owners(
        app_factory, AZURE_OPENAI_ENDPOINT=azure.url, AZURE_OPENAI_API_KEY=INDEPENDENT_KEY
    )


def owners_job(client: Any) -> dict[str, Any]:
    response = client.post(
        "/api/jobs",
        json={"prompt": "a lighthouse both asked for", "provider": GPT, "size": "1024x1024"},
        headers={"X-CSRFToken": csrf_token(client)},
    )
    assert response.status_code == 202, response.get_json()
    from tests.helpers import wait_for_job

    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job
    return job


def test_two_owners_spliced_copies_become_one_file_and_share_links_still_work(owners_app):
    app = owners_app
    alice = signed_in(app, "alice", OWNER_PASSWORD)
    bob = signed_in(app, "bob", OWNER_PASSWORD)
    alice_image = owners_job(alice)["images"][0]
    bob_image = owners_job(bob)["images"][0]
    assert alice_image["sha256"] == bob_image["sha256"]
    provider = age_library(app)
    images, _ = rows(app)
    assert images[0][5] != images[1][5]  # earlier versions: one file per owner (the chunk)
    created = alice.post(
        "/shares",
        data={"image_id": alice_image["id"], "days": "7", "csrf_token": csrf_token(alice)},
    )
    assert created.status_code == 201
    token = re.search(r"/s/([A-Za-z0-9_-]{20,})", created.get_data(as_text=True))[1]

    report = run_repair(app)

    assert len(report.repaired) == 2
    assert_repaired(app, provider)
    images, _ = rows(app)
    assert images[0][5] == images[1][5]  # one file for both
    folder = data_dir(app) / storage.sidecar_folder(images[0][3])
    assert len(list(folder.iterdir())) == 2  # a sidecar per row
    page = app.test_client().get(f"/s/{token}").get_data(as_text=True)
    assert f"/s/{token}/files/{images[0][3]}" in page
    with app.test_client().get(f"/s/{token}/files/{images[0][3]}.png?download=1") as response:
        assert response.status_code == 200
        assert response.get_data() == provider[alice_image["id"]]
    with alice.get(f"/files/images/{alice_image['id']}/original") as response:
        assert response.get_data() == provider[alice_image["id"]]


# --- the commands ----------------------------------------------------------------------------


def invoke(app: Flask, *args: str) -> Any:
    if "atelier" not in app.cli.commands:
        app.cli.add_command(cli)
    return app.test_cli_runner().invoke(args=["atelier", *args])


def test_verify_repair_restores_an_old_library_and_ends_consistent(old_library, app):
    assert invoke(app, "verify").exit_code == 1

    result = invoke(app, "verify", "--repair")

    assert result.exit_code == 0, result.output
    assert "Restored 3 original(s) to the provider's bytes" in result.output
    assert "Repaired 3 of 3 originals with embedded metadata." in result.output
    assert result.output.rstrip().endswith("Consistent.")
    assert_repaired(app, old_library["provider"])


def test_cli_repair_originals_prints_what_it_did(old_library, app):
    result = invoke(app, "repair-originals")

    assert result.exit_code == 0, result.output
    assert "Wrote 4 sidecar(s)." in result.output
    assert invoke(app, "repair-originals").output.strip() == (
        "Every original is the provider's, and every image has its sidecar."
    )
