"""Consistency tools: job parameters inside PNGs, `verify` (and repair), `rebuild`, the CLI.

Jobs are made for real (JSON API, worker, emulator); the data folder is then damaged by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image as PILImage

from app import consistency, pngmeta, storage
from app.cli import cli
from tests.helpers import wait_for_job

HOUR = 3600

METADATA = {
    "atelier": 1,
    "job_id": 7,
    "index": 0,
    "prompt": "a red kite over the dunes",
    "revised_prompt": None,
    "provider": "azure-async",
    "model": "dall-e-2",
    "size": "256x256",
    "n": 1,
    "options": {},
    "created_at": "2024-05-01T12:00:00Z",
}


# --- helpers ----------------------------------------------------------------------------------


def noisy_png(size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    PILImage.effect_noise(size, 60).convert("RGB").save(out, "PNG")
    return out.getvalue()


def pixels(data: bytes) -> bytes:
    with PILImage.open(io.BytesIO(data)) as image:
        return image.tobytes()


def chunk_types(data: bytes) -> list[bytes]:
    types, offset = [], 8
    while offset < len(data):
        length, chunk_type = struct.unpack(">I4s", data[offset : offset + 8])
        types.append(chunk_type)
        offset += 12 + length
    return types


def finished_job(client: FlaskClient, prompt: str, n: int = 1) -> dict[str, Any]:
    with client.post("/api/jobs", json={"prompt": prompt, "size": "256x256", "n": n}) as response:
        assert response.status_code == 202, response.get_json()
        job_id = response.get_json()["id"]
    job = wait_for_job(client, job_id)
    assert job["status"] == "succeeded", job
    return job


def get_job(client: FlaskClient, job_id: int) -> tuple[int, dict[str, Any]]:
    with client.get(f"/api/jobs/{job_id}") as response:
        return response.status_code, response.get_json()


def data_dir_of(app: Flask) -> Path:
    return Path(app.config["ATELIER_DATA_DIR"])


def original_name(image: dict[str, Any]) -> str:
    sha = image["sha256"]
    return f"images/{sha[:2]}/{sha}.png"


def thumbnail_name(image: dict[str, Any]) -> str:
    sha = image["sha256"]
    return f"thumbs/{sha[:2]}/{sha}-256.webp"


def make_old(path: Path, seconds: float = HOUR) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def drop_file(root: Path, relative: str, content: bytes, *, old: bool = True) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if old:
        make_old(path)
    return path


def run_verify(app: Flask, **options: Any) -> consistency.VerifyReport:
    with app.app_context():
        return consistency.verify(storage.current(app), **options)


def run_rebuild(app: Flask) -> consistency.RebuildReport:
    with app.app_context():
        return consistency.rebuild(storage.current(app))


def files_under(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.parts[len(root.parts)] in ("images", "thumbs", "orphans")
    }


def store_png_with_metadata(app: Flask, size: tuple[int, int] = (64, 48), **changes: Any) -> str:
    """Draw a PNG, embed job metadata, and put it where storage would (named by its sha256)."""
    metadata = {**METADATA, **changes}
    data = pngmeta.embed(noisy_png(size), metadata)
    sha = hashlib.sha256(data).hexdigest()
    name = f"images/{sha[:2]}/{sha}.png"
    drop_file(data_dir_of(app), name, data, old=False)
    return name


def invoke(app: Flask, *args: str) -> Any:
    if "atelier" not in app.cli.commands:
        app.cli.add_command(cli)
    return app.test_cli_runner().invoke(args=["atelier", *args])


# --- pngmeta ----------------------------------------------------------------------------------


def test_embed_leaves_the_pixels_untouched():
    original = noisy_png()

    embedded = pngmeta.embed(original, METADATA)

    assert embedded != original
    assert pixels(embedded) == pixels(original)


def test_embedded_png_still_opens_in_pillow_which_sees_the_text():
    embedded = pngmeta.embed(noisy_png(), METADATA)

    with PILImage.open(io.BytesIO(embedded)) as image:
        image.load()
        assert (image.format, image.size) == ("PNG", (64, 48))
        assert json.loads(image.text["atelier"]) == METADATA


def test_read_returns_what_embed_stored():
    assert pngmeta.read(pngmeta.embed(noisy_png(), METADATA)) == METADATA


def test_unicode_prompt_survives_the_round_trip():
    metadata = {**METADATA, "prompt": "Café au lait, 東京の夜景 🎨 — «ciel»"}

    assert pngmeta.read(pngmeta.embed(noisy_png(), metadata)) == metadata


def test_metadata_chunk_sits_right_after_ihdr():
    types = chunk_types(pngmeta.embed(noisy_png(), METADATA))

    assert types[:2] == [b"IHDR", b"iTXt"]
    assert types[-1] == b"IEND"


def test_embedding_twice_keeps_one_chunk_with_the_latest_metadata():
    once = pngmeta.embed(noisy_png(), METADATA)
    changed = {**METADATA, "prompt": "another prompt"}

    assert pngmeta.embed(once, METADATA) == once
    twice = pngmeta.embed(once, changed)
    assert chunk_types(twice).count(b"iTXt") == 1
    assert pngmeta.read(twice) == changed


def test_embed_writes_compact_json_with_sorted_keys():
    embedded = pngmeta.embed(noisy_png(), {"b": 1, "a": [1, 2]})

    assert b'{"a":[1,2],"b":1}' in embedded


def test_bytes_that_are_not_a_png_come_back_unchanged():
    out = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(out, "JPEG")
    jpeg = out.getvalue()

    assert pngmeta.embed(jpeg, METADATA) == jpeg
    assert pngmeta.read(jpeg) is None


def test_png_without_metadata_reads_as_none():
    assert pngmeta.read(noisy_png()) is None


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda png: png[:40], id="truncated"),
        pytest.param(lambda png: png[:20] + bytes([png[20] ^ 0xFF]) + png[21:], id="bad-crc"),
        pytest.param(lambda png: png[:8] + png[33:], id="no-ihdr-first"),
    ],
)
def test_damaged_png_raises_value_error(damage):
    damaged = damage(noisy_png())

    with pytest.raises(ValueError):
        pngmeta.embed(damaged, METADATA)
    with pytest.raises(ValueError):
        pngmeta.read(damaged)


# --- verify -----------------------------------------------------------------------------------


def test_verify_finds_nothing_wrong_with_a_fresh_library(app, client):
    finished_job(client, "a quiet harbour", n=2)

    report = run_verify(app)

    assert report.clean
    assert report.rows_checked == 2
    assert report.files_checked == 6  # each image: the original and two thumbnails
    assert report.lines()[-1] == "Consistent."


def test_verify_finds_a_row_whose_original_is_missing(app, client):
    job = finished_job(client, "a missing original")
    (data_dir_of(app) / original_name(job["images"][0])).unlink()

    report = run_verify(app)

    assert report.missing_originals == [job["images"][0]["id"]]
    assert not report.clean


def test_verify_finds_an_original_whose_hash_no_longer_matches(app, client):
    job = finished_job(client, "a corrupted original")
    path = data_dir_of(app) / original_name(job["images"][0])
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")

    report = run_verify(app)

    assert report.hash_mismatches == [job["images"][0]["id"]]
    assert report.missing_originals == []


def test_verify_finds_a_missing_thumbnail(app, client):
    job = finished_job(client, "a missing thumbnail")
    (data_dir_of(app) / thumbnail_name(job["images"][0])).unlink()

    report = run_verify(app)

    assert report.missing_thumbnails == [job["images"][0]["id"]]


def test_verify_finds_files_no_row_references(app, client):
    finished_job(client, "a tidy job")
    root = data_dir_of(app)
    drop_file(root, "images/ab/stray.png", b"not ours")
    drop_file(root, "thumbs/cd/lost-256.webp", b"nor this")

    report = run_verify(app)

    assert report.orphan_files == ["images/ab/stray.png", "thumbs/cd/lost-256.webp"]


def test_verify_finds_stale_temp_files_and_leaves_fresh_ones_alone(app, client):
    finished_job(client, "a job with leftovers")
    root = data_dir_of(app)
    drop_file(root, "images/ab/.tmp-old", b"interrupted")
    drop_file(root, "thumbs/ab/.tmp-new", b"in flight", old=False)

    report = run_verify(app, grace_seconds=900)

    assert report.stale_temp_files == ["images/ab/.tmp-old"]
    assert report.recent_files == ["thumbs/ab/.tmp-new"]


def test_verify_leaves_a_recent_file_without_a_row_alone(app, client):
    """The worker writes the file before committing its row: a young file may be in flight."""
    finished_job(client, "a job being stored")
    drop_file(data_dir_of(app), "images/ef/just-written.png", b"row not committed yet", old=False)

    report = run_verify(app, repair=True)

    assert report.orphan_files == []
    assert report.recent_files == ["images/ef/just-written.png"]
    assert (data_dir_of(app) / "images/ef/just-written.png").exists()
    assert report.clean


def test_verify_without_repair_changes_no_file(app, client):
    job = finished_job(client, "look but do not touch")
    root = data_dir_of(app)
    (root / thumbnail_name(job["images"][0])).unlink()
    drop_file(root, "images/ab/stray.png", b"stray")
    drop_file(root, "images/ab/.tmp-old", b"interrupted")
    before = files_under(root)

    report = run_verify(app)

    assert not report.clean
    assert files_under(root) == before


def test_repair_moves_files_without_rows_and_stale_temp_files_aside_with_their_content(app, client):
    finished_job(client, "a job with strays")
    root = data_dir_of(app)
    drop_file(root, "images/ab/stray.png", b"stray bytes")
    drop_file(root, "thumbs/ab/.tmp-old", b"half a thumbnail")

    report = run_verify(app, repair=True)

    assert report.clean
    assert report.archive_dir is not None and report.archive_dir.startswith("orphans/")
    archive = root / report.archive_dir
    assert (archive / "images/ab/stray.png").read_bytes() == b"stray bytes"
    assert (archive / "thumbs/ab/.tmp-old").read_bytes() == b"half a thumbnail"
    assert not (root / "images/ab/stray.png").exists()
    assert not (root / "thumbs/ab/.tmp-old").exists()


def test_repair_leaves_fresh_temp_files_in_place(app, client):
    finished_job(client, "a job still writing")
    fresh = drop_file(data_dir_of(app), "images/ab/.tmp-new", b"in flight", old=False)

    report = run_verify(app, repair=True)

    assert report.moved == []
    assert fresh.read_bytes() == b"in flight"


def test_repair_regenerates_a_missing_thumbnail_from_an_intact_original(app, client):
    job = finished_job(client, "a thumbnail to redo")
    image = job["images"][0]
    (data_dir_of(app) / thumbnail_name(image)).unlink()

    report = run_verify(app, repair=True)

    assert report.regenerated_thumbnails == [image["id"]]
    assert report.clean
    with client.get(image["thumbnail_url"]) as response:
        assert response.status_code == 200
        with PILImage.open(io.BytesIO(response.data)) as thumbnail:
            assert (thumbnail.format, max(thumbnail.size)) == ("WEBP", 256)


def test_repair_does_not_make_a_thumbnail_from_a_damaged_original(app, client):
    job = finished_job(client, "a damaged original")
    image = job["images"][0]
    root = data_dir_of(app)
    (root / original_name(image)).write_bytes(noisy_png())
    (root / thumbnail_name(image)).unlink()

    report = run_verify(app, repair=True)

    assert report.regenerated_thumbnails == []
    assert not (root / thumbnail_name(image)).exists()
    assert not report.clean


def test_repair_reports_rows_with_missing_or_damaged_files_but_never_changes_them(app, client):
    job = finished_job(client, "rows stay as they are", n=2)
    missing, damaged = job["images"]
    root = data_dir_of(app)
    (root / original_name(missing)).unlink()
    (root / original_name(damaged)).write_bytes(b"garbage")

    report = run_verify(app, repair=True)

    assert report.missing_originals == [missing["id"]]
    assert report.hash_mismatches == [damaged["id"]]
    assert get_job(client, job["id"]) == (200, job)


def test_second_verify_after_repair_reports_only_the_rows_it_cannot_fix(app, client):
    first = finished_job(client, "one of everything", n=2)
    second = finished_job(client, "a second job")
    root = data_dir_of(app)
    missing, damaged = first["images"]
    (root / original_name(missing)).unlink()
    (root / original_name(damaged)).write_bytes(b"garbage")
    (root / thumbnail_name(second["images"][0])).unlink()
    drop_file(root, "images/ab/stray.png", b"stray")
    drop_file(root, "images/ab/.tmp-old", b"interrupted")
    drop_file(root, "images/ab/.tmp-new", b"in flight", old=False)

    repaired = run_verify(app, repair=True)
    again = run_verify(app)

    assert sorted(repaired.moved) == ["images/ab/.tmp-old", "images/ab/stray.png"]
    assert repaired.regenerated_thumbnails == [second["images"][0]["id"]]
    assert again.missing_originals == [missing["id"]]
    assert again.hash_mismatches == [damaged["id"]]
    assert again.orphan_files == again.stale_temp_files == []
    assert again.recent_files == ["images/ab/.tmp-new"]
    assert again.missing_thumbnails == []
    assert again.remaining_problems == 2


# --- rebuild ----------------------------------------------------------------------------------


def test_rebuild_recreates_a_lost_job_that_the_api_returns(idle_app):
    first = store_png_with_metadata(idle_app, n=2, index=0, revised_prompt="a kite, red")
    second = store_png_with_metadata(idle_app, n=2, index=1)

    report = run_rebuild(idle_app)

    assert report.created_jobs == [7]
    assert report.created_images == {first: 7, second: 7}
    status, job = get_job(idle_app.test_client(), 7)
    assert status == 200
    assert (job["status"], job["prompt"], job["n"], job["size"]) == (
        "succeeded",
        METADATA["prompt"],
        2,
        "256x256",
    )
    assert (job["provider"], job["model"], job["options"]) == ("azure-async", "dall-e-2", {})
    assert job["created_at"] == job["finished_at"] == "2024-05-01T12:00:00Z"
    assert [image["index"] for image in job["images"]] == [0, 1]
    assert job["images"][0]["revised_prompt"] == "a kite, red"
    image = job["images"][0]
    assert (image["status"], image["width"], image["height"]) == ("stored", 64, 48)
    assert image["content_type"] == "image/png"
    assert original_name(image) == first


def test_rebuilt_images_are_served_with_a_regenerated_thumbnail(idle_app):
    name = store_png_with_metadata(idle_app)

    report = run_rebuild(idle_app)

    client = idle_app.test_client()
    image = get_job(client, 7)[1]["images"][0]
    small = thumbnail_name(image)
    assert report.regenerated_thumbnails == [small, small.replace("-256.webp", "-512.webp")]
    with client.get(image["url"]) as original:
        assert original.data == (data_dir_of(idle_app) / name).read_bytes()
    with client.get(image["thumbnail_url"]) as thumbnail:
        assert thumbnail.status_code == 200
        assert thumbnail.mimetype == "image/webp"


def test_rebuild_gives_a_new_id_when_the_recorded_one_belongs_to_another_prompt(app, client):
    existing = finished_job(client, "the job that kept its id")
    store_png_with_metadata(app, job_id=existing["id"])

    report = run_rebuild(app)

    assert len(report.created_jobs) == 1
    new_id = report.created_jobs[0]
    assert new_id != existing["id"]
    assert get_job(client, new_id)[1]["prompt"] == METADATA["prompt"]
    assert get_job(client, existing["id"])[1]["prompt"] == "the job that kept its id"


def test_rebuild_leaves_a_job_that_exists_with_the_same_prompt_alone(app, client):
    existing = finished_job(client, METADATA["prompt"])
    name = store_png_with_metadata(app, job_id=existing["id"])

    report = run_rebuild(app)

    assert report.created_jobs == []
    assert name in report.rejected
    assert get_job(client, existing["id"]) == (200, existing)


def test_rebuild_twice_creates_nothing_the_second_time(idle_app):
    store_png_with_metadata(idle_app, job_id=3, prompt="first")
    store_png_with_metadata(idle_app, job_id=4, prompt="second")

    first = run_rebuild(idle_app)
    second = run_rebuild(idle_app)

    assert first.created_jobs == [3, 4]
    assert second.created_jobs == []
    assert second.created_images == {}
    assert second.regenerated_thumbnails == []
    with idle_app.test_client().get("/api/jobs") as response:
        assert [job["id"] for job in response.get_json()["items"]] == [4, 3]


def test_rebuild_reports_a_file_without_metadata_as_unknown(idle_app):
    data = noisy_png()
    sha = hashlib.sha256(data).hexdigest()
    name = f"images/{sha[:2]}/{sha}.png"
    drop_file(data_dir_of(idle_app), name, data)

    report = run_rebuild(idle_app)

    assert report.unknown == [name]
    assert report.created_jobs == []
    assert f"Unknown (no Atelier metadata, left as is): {name}." in report.lines()


def test_rebuild_skips_files_that_rows_already_reference(app, client):
    finished_job(client, "already in the database", n=2)

    report = run_rebuild(app)

    assert (report.created_jobs, report.unknown, report.rejected) == ([], [], {})


def test_rebuild_refuses_a_file_not_named_by_its_content(idle_app):
    name = store_png_with_metadata(idle_app)
    moved = "images/00/" + "0" * 64 + ".png"
    (data_dir_of(idle_app) / "images/00").mkdir(parents=True)
    os.replace(data_dir_of(idle_app) / name, data_dir_of(idle_app) / moved)

    report = run_rebuild(idle_app)

    assert report.created_jobs == []
    assert "content-addressed" in report.rejected[moved]


def test_rebuild_refuses_metadata_without_a_prompt(idle_app):
    metadata = {key: value for key, value in METADATA.items() if key != "prompt"}
    data = pngmeta.embed(noisy_png(), metadata)
    sha = hashlib.sha256(data).hexdigest()
    name = f"images/{sha[:2]}/{sha}.png"
    drop_file(data_dir_of(idle_app), name, data)

    report = run_rebuild(idle_app)

    assert report.created_jobs == []
    assert "'prompt'" in report.rejected[name]


# --- CLI --------------------------------------------------------------------------------------


def test_cli_verify_exits_0_when_consistent(app, client):
    finished_job(client, "all is well")

    result = invoke(app, "verify")

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "Consistent."


def test_cli_verify_exits_1_and_lists_the_problems(app, client):
    job = finished_job(client, "something is off")
    root = data_dir_of(app)
    (root / thumbnail_name(job["images"][0])).unlink()
    drop_file(root, "images/ab/stray.png", b"stray")

    result = invoke(app, "verify")

    assert result.exit_code == 1
    assert f"Missing thumbnail: image {job['images'][0]['id']}" in result.output
    assert "File without a row: images/ab/stray.png." in result.output
    assert "--repair" in result.output


def test_cli_verify_repair_exits_0_when_everything_was_repaired(app, client):
    job = finished_job(client, "fixable")
    root = data_dir_of(app)
    (root / thumbnail_name(job["images"][0])).unlink()
    drop_file(root, "images/ab/stray.png", b"stray")

    result = invoke(app, "verify", "--repair")

    assert result.exit_code == 0, result.output
    assert ": regenerated." in result.output
    assert "File without a row: images/ab/stray.png: moved to orphans/" in result.output
    assert result.output.splitlines()[-1] == "Consistent after repair."


def test_cli_verify_repair_exits_1_when_a_row_has_lost_its_original(app, client):
    job = finished_job(client, "beyond repair")
    (data_dir_of(app) / original_name(job["images"][0])).unlink()

    result = invoke(app, "verify", "--repair")

    assert result.exit_code == 1
    assert f"Missing original: image {job['images'][0]['id']}" in result.output


def test_cli_verify_grace_seconds_decides_which_temp_files_are_stale(app, client):
    finished_job(client, "temp files")
    drop_file(data_dir_of(app), "images/ab/.tmp-x", b"x", old=False)
    make_old(data_dir_of(app) / "images/ab/.tmp-x", seconds=60)

    patient = invoke(app, "verify")
    strict = invoke(app, "verify", "--grace-seconds", "30")

    assert patient.exit_code == 0
    assert strict.exit_code == 1
    assert "Stale temporary file: images/ab/.tmp-x." in strict.output


def test_cli_rebuild_prints_what_it_recreated(idle_app):
    name = store_png_with_metadata(idle_app)

    result = invoke(idle_app, "rebuild")

    assert result.exit_code == 0, result.output
    assert f"Recreated job 7 with 1 image(s): {name}." in result.output


def test_cli_rebuild_says_so_when_there_is_nothing_to_do(idle_app):
    result = invoke(idle_app, "rebuild")

    assert result.exit_code == 0
    assert result.output.strip() == "Nothing to rebuild."
