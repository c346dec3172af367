"""Schemathesis against a running Atelier (`python -m app`, sign-in on, an API token): every
operation of /api/openapi.json, valid and invalid input, a fixed seed and a bounded number of
cases. No answer may be a 5xx or carry a stack trace, and every answer must match the
document: its status codes, content types and schemas."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.browser import _serve
from tests.helpers import ROOT, scratch_database_url

USER = "fuzzer"
EXAMPLES_PER_MODE = 100  # per operation, once with valid and once with invalid input
STACK_TRACE_MARKERS = ("Traceback (most recent call last)", 'File "/', "werkzeug/", '.py", line')


def no_stack_trace(ctx, response, case) -> None:
    """No answer shows the code's insides, whatever its status."""
    body = response.text or ""
    for marker in STACK_TRACE_MARKERS:
        assert marker not in body, f"the answer shows a stack trace ({marker!r})"


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    no_stack_trace,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, API token) of a real server with sign-in on and the built-in emulator."""
    data_dir = tmp_path_factory.mktemp("fuzz")
    with scratch_database_url() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_OPENAI_")}
        env.update(
            ATELIER_DATA_DIR=str(data_dir),
            ATELIER_EMULATOR_PORT="0",
            ATELIER_EMULATOR_LATENCY_SECONDS="0",
            ATELIER_AUTH="on",
            ATELIER_ADMIN_USERNAME=USER,
            ATELIER_ADMIN_PASSWORD="correct-horse-battery-staple-9",
        )
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        for base in _serve(data_dir, env):
            token = _flask(env, "atelier", "tokens", "create", USER, "fuzz").strip()
            assert token.startswith("atl_"), token
            yield base, token


def _flask(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout


def _fuzz(operation, mode: GenerationMode, base: str, headers: dict[str, str]) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS, timeout=10)

    run()


# About 40 s alone; every operation and mode in one test, so a loaded machine needs more room
# than the suite's 120 s default before giving up.
@pytest.mark.timeout(300)
def test_the_api_answers_every_generated_request_as_documented(server):
    base, token = server
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    described = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method in item
        if method != "parameters"
    }
    # Schemathesis leaves out the operation that serves the document it loaded.
    assert {operation.label for operation in operations} == described - {"GET /api/openapi.json"}
    failures = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, base, headers)
            # Collect every operation's failures (FailureGroup is a BaseExceptionGroup).
            except (Exception, BaseExceptionGroup) as error:
                failures.append(f"{operation.label} ({mode.value}): {error}")
    assert not failures, "\n\n".join(failures)
