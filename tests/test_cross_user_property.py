"""Two users doing random things to their libraries never lose each other's files or see
each other's rows (a Hypothesis rule-based state machine, through HTTP like a browser).

Each example signs in two fresh users on one app and runs a short random sequence of: generate
(one of a few prompts, as a JPEG, whose bytes are the same for both users, or as a PNG, whose
embedded job id makes it unique), star, add to a collection, trash, restore, delete the job,
share, empty the trash, and try to change the other user's work. After every step:

- every file any image row (of any owner) names exists on disk;
- each user's stored images, trashed or not, serve with the recorded bytes (original, and
  thumbnails at both sizes);
- each user's job list, gallery and trash hold exactly that user's rows, so never the other's;
- each share link of an image still in the gallery opens for anyone.

Bounded for CI: derandomized (the same examples every run), no example database, a few steps
per example, the emulator answering without delay.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import shutil
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, select

from app import search
from app.auth import accounts
from app.models import (
    Collection,
    CollectionImage,
    Image,
    ImageStatus,
    Job,
    ShareLink,
    db,
    write_transaction,
)
from tests.helpers import EMULATOR_KEY, csrf_token, wait_for_job

PASSWORD = "correct horse battery"
# Few prompts and mostly JPEG, so the two users often hold the very same files.
PROMPTS = ("a lighthouse in fog", "a red tractor")
FORMATS = ("jpeg", "jpeg", "png")
USERS = ("alice", "bob")
BOUNDS = settings(
    max_examples=12,
    stateful_step_count=6,
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: a failure is reported as the (reproducible) sequence that first failed,
    # at once, instead of minutes of replays against a shared emulator and worker.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def served(client: FlaskClient, url: str) -> tuple[int, bytes]:
    with client.get(url) as response:
        return response.status_code, response.get_data()


def cells(page: str) -> set[int]:
    """The image ids of the grid cells in a gallery page."""
    return {int(n) for n in re.findall(r'<li class="cell[^"]*" id="image-(\d+)"', page)}


def test_two_users_never_lose_each_others_files_or_see_each_others_rows(app_factory, emulator):
    app = app_factory(
        ATELIER_AUTH="on",
        ATELIER_EMULATOR_LATENCY_SECONDS=0,
        ATELIER_POLL_INTERVAL_SECONDS=0.05,
        AZURE_OPENAI_API_KEY=EMULATOR_KEY,
        AZURE_OPENAI_DEPLOYMENT="gpt-image-1=gpt-image-1",
    )
    numbers = itertools.count(1)

    class TwoUsers(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            number = next(numbers)
            self.app: Flask = app
            self.data_dir = Path(app.config["ATELIER_DATA_DIR"])
            self.clients: dict[str, FlaskClient] = {}
            self.csrf: dict[str, str] = {}
            self.names: dict[str, str] = {}
            for user in USERS:
                name = f"{user}{number}"
                with app.app_context():
                    accounts.create_user(name, PASSWORD)
                client = app.test_client()
                form = {
                    "username": name,
                    "password": PASSWORD,
                    "csrf_token": csrf_token(client, "/login"),
                }
                assert client.post("/login", data=form).status_code == 303
                self.clients[user], self.csrf[user] = client, csrf_token(client)
                self.names[user] = name
            # The model: what each user should have.
            self.jobs: dict[str, dict[int, list[int]]] = {user: {} for user in USERS}
            self.trashed: dict[str, dict[int, bool]] = {user: {} for user in USERS}
            self.sha: dict[int, str] = {}
            self.collection: dict[str, int | None] = {user: None for user in USERS}
            self.shares: list[tuple[str, int, str]] = []  # (user, image id, link path)

        def teardown(self) -> None:
            """Start the next example from an empty library, so each example (and each shrunk
            replay of a failing one) runs alone: no earlier example's rows keep files alive."""
            with self.app.app_context(), write_transaction() as session:
                for job_id in session.scalars(select(Job.id)).all():
                    search.unindex_job(session, job_id)
                for table in (CollectionImage, ShareLink, Image, Collection, Job):
                    session.execute(delete(table))
            for folder in ("images", "thumbs"):
                shutil.rmtree(self.data_dir / folder, ignore_errors=True)

        # --- helpers -------------------------------------------------------------------------

        def _images(self, user: str, *, trashed: bool) -> list[int]:
            return sorted(i for i, in_trash in self.trashed[user].items() if in_trash is trashed)

        def _bulk(self, user: str, action: str, image_id: int, **fields: Any) -> None:
            form = {"csrf_token": self.csrf[user], "action": action, "ids": str(image_id)}
            with self.clients[user].post("/gallery/bulk", data={**form, **fields}) as response:
                assert response.status_code == 303, (action, response.get_data(as_text=True))

        @staticmethod
        def _pick(items: list[int], pick: int) -> int | None:
            return items[pick % len(items)] if items else None

        # --- rules ---------------------------------------------------------------------------

        @initialize(alice_prompt=st.sampled_from(PROMPTS), bob_prompt=st.sampled_from(PROMPTS))
        def both_generate(self, alice_prompt: str, bob_prompt: str) -> None:
            """Each user starts with one JPEG; with the same prompt, they share its files."""
            self.generate("alice", alice_prompt, "jpeg")
            self.generate("bob", bob_prompt, "jpeg")

        @rule(
            user=st.sampled_from(USERS),
            prompt=st.sampled_from(PROMPTS),
            image_format=st.sampled_from(FORMATS),
        )
        def generate(self, user: str, prompt: str, image_format: str) -> None:
            client = self.clients[user]
            body = {
                "prompt": prompt,
                "provider": "azure:gpt-image-1",
                "size": "1024x1024",
                "options": {"quality": "low", "output_format": image_format},
            }
            response = client.post("/api/jobs", json=body, headers={"X-CSRFToken": self.csrf[user]})
            assert response.status_code == 202, response.get_json()
            job = wait_for_job(client, response.get_json()["id"])
            assert job["status"] == "succeeded", job
            self.jobs[user][job["id"]] = [image["id"] for image in job["images"]]
            for image in job["images"]:
                self.trashed[user][image["id"]] = False
                self.sha[image["id"]] = image["sha256"]

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def star(self, user: str, pick: int) -> None:
            image_id = self._pick(self._images(user, trashed=False), pick)
            if image_id is not None:
                self._bulk(user, "favorite", image_id)

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def add_to_collection(self, user: str, pick: int) -> None:
            image_id = self._pick(self._images(user, trashed=False), pick)
            if image_id is None:
                return
            if self.collection[user] is None:
                form = {"csrf_token": self.csrf[user], "name": "Favourites"}
                assert self.clients[user].post("/collections", data=form).status_code == 303
                with self.app.app_context():
                    owner = accounts.find_user(self.names[user]).id
                    self.collection[user] = db.session.scalar(
                        select(Collection.id).where(Collection.owner_id == owner)
                    )
            self._bulk(user, "add", image_id, collection_id=str(self.collection[user]))

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def trash(self, user: str, pick: int) -> None:
            image_id = self._pick(self._images(user, trashed=False), pick)
            if image_id is not None:
                self._bulk(user, "delete", image_id)
                self.trashed[user][image_id] = True

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def restore(self, user: str, pick: int) -> None:
            image_id = self._pick(self._images(user, trashed=True), pick)
            if image_id is not None:
                self._bulk(user, "restore", image_id)
                self.trashed[user][image_id] = False

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def delete_job(self, user: str, pick: int) -> None:
            job_id = self._pick(sorted(self.jobs[user]), pick)
            if job_id is None:
                return
            headers = {"X-CSRFToken": self.csrf[user]}
            assert (
                self.clients[user].delete(f"/api/jobs/{job_id}", headers=headers).status_code == 204
            )
            for image_id in self.jobs[user].pop(job_id):
                del self.trashed[user][image_id]

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def share(self, user: str, pick: int) -> None:
            image_id = self._pick(self._images(user, trashed=False), pick)
            if image_id is None:
                return
            form = {"csrf_token": self.csrf[user], "image_id": str(image_id), "days": "7"}
            with self.clients[user].post("/shares", data=form) as response:
                assert response.status_code == 201
                url = re.search(r'id="share-url">([^<]+)<', response.get_data(as_text=True))
            self.shares.append(
                (user, image_id, "/" + url.group(1).split("://", 1)[1].split("/", 1)[1])
            )

        @rule(user=st.sampled_from(USERS))
        def empty_trash(self, user: str) -> None:
            form = {"csrf_token": self.csrf[user]}
            assert self.clients[user].post("/gallery/trash/empty", data=form).status_code == 303
            for image_id in self._images(user, trashed=True):
                del self.trashed[user][image_id]
            for images in self.jobs[user].values():
                images[:] = [i for i in images if i in self.trashed[user]]

        @rule(user=st.sampled_from(USERS), pick=st.integers(0, 99))
        def meddle(self, user: str, pick: int) -> None:
            """Try to trash, star and delete the other user's work: nothing changes."""
            other = USERS[1 - USERS.index(user)]
            image_id = self._pick(sorted(self.trashed[other]), pick)
            job_id = self._pick(sorted(self.jobs[other]), pick)
            if image_id is not None:
                self._bulk(user, "delete", image_id)
                self._bulk(user, "favorite", image_id)
            if job_id is not None:
                headers = {"X-CSRFToken": self.csrf[user]}
                response = self.clients[user].delete(f"/api/jobs/{job_id}", headers=headers)
                assert response.status_code == 404

        # --- invariants ----------------------------------------------------------------------

        @invariant()
        def every_file_a_row_names_exists(self) -> None:
            with self.app.app_context():
                rows = db.session.execute(
                    select(
                        Image.id, Image.file_name, Image.thumbnail_name, Image.thumbnail_large_name
                    ).where(Image.status == ImageStatus.STORED)
                ).all()
            for row in rows:
                for name in row[1:]:
                    assert (self.data_dir / name).is_file(), (row.id, name)

        @invariant()
        def each_users_images_serve_with_their_bytes(self) -> None:
            for user in USERS:
                client = self.clients[user]
                for image_id in self.trashed[user]:
                    sha = self.sha[image_id]
                    status, data = served(client, f"/files/images/{image_id}")
                    assert status == 200, (user, image_id)
                    assert hashlib.sha256(data).hexdigest() == sha, (user, image_id)
                    assert served(client, f"/files/thumbs/{image_id}")[0] == 200, (user, image_id)
                    for size in (256, 512):
                        assert served(client, f"/files/{sha}-{size}.webp")[0] == 200

        @invariant()
        def each_user_sees_exactly_their_own_rows(self) -> None:
            for user in USERS:
                client = self.clients[user]
                listed = client.get("/api/jobs?limit=100").get_json()["items"]
                assert {job["id"] for job in listed} == set(self.jobs[user]), user
                for job in listed:
                    assert [image["id"] for image in job["images"]] == self.jobs[user][job["id"]]
                with client.get("/gallery") as response:
                    assert cells(response.get_data(as_text=True)) == set(
                        self._images(user, trashed=False)
                    ), user
                with client.get("/gallery?trash=1") as response:
                    assert cells(response.get_data(as_text=True)) == set(
                        self._images(user, trashed=True)
                    ), user

        @invariant()
        def share_links_of_gallery_images_open(self) -> None:
            anonymous = self.app.test_client()
            for user, image_id, path in self.shares:
                if self.trashed[user].get(image_id) is False:
                    assert served(anonymous, path)[0] == 200, (user, image_id, path)

    run_state_machine_as_test(TwoUsers, settings=BOUNDS)
