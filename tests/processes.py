"""Real processes for the tests that kill them: the app (`python -m app`), worker processes
(`flask atelier worker`) and the emulator in its own process, so Azure's side of each operation
outlives the app; and the Dockerfile's start command run as a process. Fixtures here are imported
by conftest.py."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import ROOT, database_url_for, free_port, wait_until_up

KEY = "restart-test-key"


class Process:
    """A child process whose output goes to a log file, killed at teardown if still running."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.log = log.open("ab")
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self, sig: int = signal.SIGKILL) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        code = self.popen.wait(timeout=20)
        self.log.close()
        return code


@pytest.fixture
def emulator_latency() -> str:
    """Seconds the emulator process takes per image; a test module may override this."""
    return "2"


@pytest.fixture
def emulator_url(emulator_latency: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.emulator", "--port", "0", "--api-key", KEY,
         "--latency", emulator_latency, "--poll-interval", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    assert line.startswith("EMULATOR_URL="), line
    yield line.split("=", 1)[1]
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


@pytest.fixture
def app_env(tmp_path: Path, emulator_url: str) -> dict[str, str]:
    """The environment of every app and worker process of a test: one migrated database."""
    data_dir = tmp_path / "data"
    database_url = database_url_for(data_dir)
    env = {
        **os.environ,
        "AZURE_OPENAI_ENDPOINT": emulator_url,
        "AZURE_OPENAI_API_KEY": KEY,
        "AZURE_OPENAI_ASYNC_DALLE2": "on",
        "ATELIER_DATA_DIR": str(data_dir),
        "ATELIER_LEASE_SECONDS": "2",
        "ATELIER_AUTH": "off",
        "ATELIER_POLL_INTERVAL_SECONDS": "0.2",
    }
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return env


@pytest.fixture
def start_worker_process(tmp_path: Path, app_env: dict[str, str]) -> Iterator:
    """Start a `flask atelier worker` process on the test's database."""
    started: list[Process] = []

    def start(**overrides: str) -> Process:
        process = Process(
            [sys.executable, "-m", "flask", "--app", "app", "atelier", "worker"],
            {**app_env, **overrides},
            tmp_path / f"worker{len(started)}.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_app(tmp_path: Path, app_env: dict[str, str]) -> Iterator:
    """Start `python -m app` on a fixed data folder and port; may be called again to restart.
    `port=` starts another instance beside it (on the same database and data folder)."""
    default_port = free_port()
    started: list[Process] = []

    def start(port: int | None = None, **overrides: str) -> tuple[Process, str]:
        port = port or default_port
        process = Process(
            [sys.executable, "-m", "app", "--port", str(port)],
            {**app_env, **overrides},
            tmp_path / ("app.log" if port == default_port else f"app-{port}.log"),
        )
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base + "/api/jobs", process.popen, process.log_path)
        return process, base

    yield start
    for process in started:
        process.stop()


def job_state(base: str, job_id: int) -> dict:
    return requests.get(f"{base}/api/jobs/{job_id}", timeout=5).json()


def wait_until(base: str, job_id: int, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(base, job_id)
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck: {job}"
        time.sleep(0.05)


def submit_round_robin(bases: list[str], prompt: str, count: int) -> list[int]:
    """Submit `count` jobs through the JSON API, the i-th to instance `bases[i % len(bases)]`
    (prompt "<prompt> <i>", 256x256); their ids, in order."""
    with requests.Session() as session:
        return [
            session.post(
                f"{bases[i % len(bases)]}/api/jobs",
                json={"prompt": f"{prompt} {i}", "size": "256x256"},
                timeout=10,
            ).json()["id"]
            for i in range(count)
        ]


def wait_all_final(base: str, ids: list[int], timeout: float) -> dict[int, dict]:
    """The API's view of every job once all are final (succeeded, failed or canceled)."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while True:
            jobs = {job_id: session.get(f"{base}/api/jobs/{job_id}", timeout=10).json()
                    for job_id in ids}  # fmt: skip
            if all(job["status"] in ("succeeded", "failed", "canceled") for job in jobs.values()):
                return jobs
            stuck = sorted({job["status"] for job in jobs.values()})
            assert time.monotonic() < deadline, f"jobs stuck: {stuck}"
            time.sleep(0.5)


def flask_command(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run `flask --app app <args>` as its own process in `env` (an instance's environment);
    its output (stdout and stderr together) is in `.stdout`."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip


def logs_of(folder: Path) -> str:
    """Everything the processes of a test wrote to their logs (*.log in `folder`)."""
    return "".join(path.read_text(errors="replace") for path in folder.glob("*.log"))


def submits(emulator_url: str) -> int:
    return requests.get(emulator_url + "_emulator/requests", timeout=5).json()["counts"]["submit"]


def generation_requests(emulator_url: str) -> int:
    log = requests.get(emulator_url + "_emulator/requests", timeout=5).json()["requests"]
    return sum(1 for entry in log if entry["path"].endswith("/images/generations"))


# --- the container's start command, run here -----------------------------------------------------

DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.strip().partition(" ") for line in joined.splitlines())
        if word
    ]


def container_command() -> list[str]:
    commands = [args for word, args in dockerfile_instructions() if word == "CMD"]
    assert commands, "the Dockerfile has no CMD"
    command = json.loads(commands[-1])  # exec (JSON) form: no shell between Docker and gunicorn
    assert isinstance(command, list)
    return command


def container_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, args in dockerfile_instructions():
        if word == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def container_run_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """The environment of the container's command run here: this one without provider keys,
    the Dockerfile's ENV, the virtualenv on PATH, `data_dir`, and `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "OPENAI_"))}
    env.update(container_env())
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", ATELIER_DATA_DIR=str(data_dir))
    env.update(settings)
    database_url = database_url_for(data_dir)  # PostgreSQL runs: one database per folder
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env
