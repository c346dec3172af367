"""Atelier answers only to the host names it serves (DNS rebinding), and builds absolute links
from ATELIER_PUBLIC_URL, or from a trusted request host, never from whatever Host was sent.

The first tests use the test client (which says `Host: localhost` unless told otherwise); the
last ones run the container's start command (gunicorn) as a real process, since the bind
address reaches each web worker only there."""

from __future__ import annotations

import html
import re
import subprocess
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from app import security
from app.auth import accounts
from app.config import ConfigError
from app.models import Job, ShareLink, db
from tests.helpers import free_port, insert_images, token_in, wait_for_job, wait_until_up
from tests.processes import container_command, container_run_env

PASSWORD = "correct horse battery"


def jobs_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job))


# --- the host check -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "127.0.0.1.evil.example"])
def test_open_mode_refuses_another_host_name_on_the_api(idle_app, host):
    client = idle_app.test_client()

    response = client.post("/api/jobs", json={"prompt": "a fox"}, headers={"Host": host})

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "untrusted_host"
    assert client.get("/api/jobs", headers={"Host": host}).status_code == 400
    assert jobs_count(idle_app) == 0


def test_a_browser_on_another_host_name_gets_an_error_page(idle_app):
    response = idle_app.test_client().get("/gallery", headers={"Host": "evil.example"})

    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert 'role="alert"' in response.get_data(as_text=True)
    assert "ATELIER_TRUSTED_HOSTS" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "LOCALHOST"]
)
def test_the_loopback_names_are_always_served(idle_app, host):
    assert idle_app.test_client().get("/api/jobs", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("atelier.example.com", 200),
        ("atelier.example.com:8443", 200),
        ("example.org", 200),
        ("photos.example.org", 200),
        ("notexample.org", 400),
        ("other.example.com", 400),
        ("[2001:db8::1]", 200),
    ],
)
def test_trusted_hosts_adds_names_and_domains(app_factory, host, status):
    app = app_factory(ATELIER_TRUSTED_HOSTS="Atelier.Example.com, .example.org,[2001:db8::1]")

    assert app.test_client().get("/api/jobs", headers={"Host": host}).status_code == status


def test_the_public_url_host_is_trusted(app_factory):
    app = app_factory(ATELIER_PUBLIC_URL="https://atelier.example.com/")
    client = app.test_client()

    assert client.get("/api/jobs", headers={"Host": "atelier.example.com"}).status_code == 200
    assert client.get("/api/jobs", headers={"Host": "evil.example"}).status_code == 400


def test_a_forwarded_host_is_checked_too(app_factory):
    app = app_factory(ATELIER_PROXY_HOPS=1)
    client = app.test_client()

    forged = client.get("/api/jobs", headers={"X-Forwarded-Host": "evil.example"})

    assert forged.status_code == 400


@pytest.mark.parametrize(
    ("served_on", "settings", "host", "allowed"),
    [
        (["0.0.0.0"], {}, "anything.example", True),  # the container: whatever people type
        (["::"], {}, "anything.example", True),
        (["0.0.0.0"], {"ATELIER_PUBLIC_URL": "https://a.example/"}, "anything.example", False),
        (["0.0.0.0"], {"ATELIER_PUBLIC_URL": "https://a.example/"}, "a.example", True),
        (["0.0.0.0"], {"ATELIER_TRUSTED_HOSTS": "b.example"}, "b.example", True),
        (["0.0.0.0"], {"ATELIER_TRUSTED_HOSTS": "b.example"}, "anything.example", False),
        (["192.0.2.7"], {}, "192.0.2.7:8000", True),
        (["192.0.2.7"], {}, "anything.example", False),
        (["127.0.0.1"], {"ATELIER_TRUSTED_HOSTS": "*"}, "anything.example", True),
    ],
)
def test_the_address_served_on_decides_the_default(app_factory, served_on, settings, host, allowed):
    app = app_factory(**settings)
    security.serve_on(app, served_on)

    status = app.test_client().get("/api/jobs", headers={"Host": host}).status_code
    assert status == (200 if allowed else 400)


@pytest.mark.parametrize(
    "raw",
    [
        "ftp://atelier.example.com/",
        "atelier.example.com",
        "https://atelier.example.com/?x=1",
        "https://atelier.example.com/#top",
        "https://user:pw@atelier.example.com/",
        "https://atelier.example.com:99999/",
    ],
)
def test_a_malformed_public_url_stops_start_up(app_factory, raw):
    with pytest.raises(ConfigError, match="ATELIER_PUBLIC_URL"):
        app_factory(ATELIER_PUBLIC_URL=raw)


@pytest.mark.parametrize(
    "raw", ["https://atelier.example.com", "atelier.example.com:8443", "a/b", "bücher.de"]
)
def test_a_malformed_trusted_host_stops_start_up(app_factory, raw):
    with pytest.raises(ConfigError, match="ATELIER_TRUSTED_HOSTS"):
        app_factory(ATELIER_TRUSTED_HOSTS=raw)


# --- absolute links -----------------------------------------------------------------------------


def share_link(app, host: str) -> str:
    with app.app_context():
        accounts.create_user("alice", PASSWORD, admin=True)
    [image_id] = insert_images(app, 1, prompt="a quiet harbour")
    client = app.test_client()
    headers = {"Host": host}
    token = token_in(client.get("/login", headers=headers).get_data(as_text=True))
    form = {"username": "alice", "password": PASSWORD, "csrf_token": token}
    assert client.post("/login", data=form, headers=headers).status_code == 303
    page = client.get("/", headers=headers).get_data(as_text=True)
    form = {"image_id": str(image_id), "csrf_token": token_in(page)}
    response = client.post("/shares", data=form, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)[:300]
    match = re.search(r'id="share-url">([^<]+)<', response.get_data(as_text=True))
    assert match, "the page shows no link"
    return html.unescape(match.group(1))


def test_share_links_are_built_on_the_public_url_whatever_the_host(app_factory):
    app = app_factory(
        ATELIER_AUTH="on",
        ATELIER_PUBLIC_URL="https://atelier.example.com/",
        ATELIER_TRUSTED_HOSTS="alias.example.com",
    )

    url = share_link(app, "alias.example.com")

    assert url.startswith("https://atelier.example.com/s/")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ShareLink)) == 1


def test_a_public_url_with_a_path_prefix_keeps_the_prefix(app_factory):
    app = app_factory(ATELIER_AUTH="on", ATELIER_PUBLIC_URL="https://example.com/atelier")

    assert share_link(app, "localhost").startswith("https://example.com/atelier/s/")


def test_without_a_public_url_links_use_the_trusted_request_host(app_factory):
    app = app_factory(ATELIER_AUTH="on")

    assert share_link(app, "localhost:5000").startswith("http://localhost:5000/s/")


def test_api_image_urls_are_built_on_the_public_url(app_factory):
    app = app_factory(ATELIER_PUBLIC_URL="https://atelier.example.com/")
    client = app.test_client()
    response = client.post("/api/jobs", json={"prompt": "a fox", "size": "256x256"})
    assert response.status_code == 202

    job = wait_for_job(client, response.get_json()["id"])

    image = job["images"][0]
    assert image["url"] == f"https://atelier.example.com/files/images/{image['id']}"
    assert image["thumbnail_url"] == f"https://atelier.example.com/files/thumbs/{image['id']}"


# --- the real server ----------------------------------------------------------------------------


class Container:
    """The container's start command on `bind`, its output in a log file."""

    def __init__(self, tmp_path: Path, bind_host: str, **settings: str) -> None:
        self.port = free_port()
        reach = "127.0.0.1" if bind_host == "0.0.0.0" else bind_host
        self.base = f"http://{reach}:{self.port}"
        self.log_path = tmp_path / f"server-{self.port}.log"
        env = container_run_env(
            tmp_path / f"data-{self.port}",
            ATELIER_BIND=f"{bind_host}:{self.port}",
            ATELIER_EMULATOR_PORT="0",
            ATELIER_WEB_WORKERS="1",
            ATELIER_WORKER_THREADS="0",
            **settings,
        )
        with self.log_path.open("wb") as handle:
            self.popen = subprocess.Popen(
                container_command(), env=env, stdout=handle, stderr=subprocess.STDOUT
            )

    def wait_healthy(self) -> None:
        wait_until_up(self.base + "/healthz", self.popen, self.log_path, timeout=30)

    def get(self, path: str, host: str) -> requests.Response:
        return requests.get(self.base + path, headers={"Host": host}, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(timeout=30)


@pytest.fixture
def start_container(tmp_path):
    started: list[Container] = []

    def start(bind_host: str, **settings: str) -> Container:
        started.append(Container(tmp_path, bind_host, **settings))
        started[-1].wait_healthy()
        return started[-1]

    yield start
    for container in started:
        if container.popen.poll() is None:
            container.popen.kill()
            container.popen.wait()


def test_a_rebinding_page_cannot_use_an_open_server_on_loopback(start_container):
    server = start_container("127.0.0.1", ATELIER_AUTH="off")

    refused = server.get("/api/jobs", "evil.example")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "untrusted_host"
    assert server.get("/api/jobs", f"127.0.0.1:{server.port}").status_code == 200
    assert server.get("/api/jobs", f"localhost:{server.port}").status_code == 200


def test_each_web_worker_trusts_the_address_it_listens_on(start_container):
    # 127.0.0.2 is a loopback address, but not one of the names trusted by default.
    server = start_container("127.0.0.2", ATELIER_AUTH="off")

    assert server.get("/api/jobs", f"127.0.0.2:{server.port}").status_code == 200
    assert server.get("/api/jobs", "evil.example").status_code == 400


def test_the_container_on_every_address_answers_any_host_and_warns(start_container):
    server = start_container("0.0.0.0", ATELIER_ADMIN_PASSWORD="container admin password")

    assert server.get("/login", "192.0.2.10:5000").status_code == 200
    assert server.get("/login", "my-nas.local").status_code == 200
    server.stop()
    assert "answers to any host name" in server.log()
    assert "ATELIER_PUBLIC_URL" in server.log()


def test_the_container_with_a_public_url_answers_only_to_it(start_container):
    server = start_container(
        "0.0.0.0",
        ATELIER_ADMIN_PASSWORD="container admin password",
        ATELIER_PUBLIC_URL="https://atelier.example.com/",
    )

    assert server.get("/login", "atelier.example.com").status_code == 200
    assert server.get("/login", "evil.example").status_code == 400
    assert server.get("/healthz", f"127.0.0.1:{server.port}").status_code == 200
    server.stop()
    assert "answers to any host name" not in server.log()
