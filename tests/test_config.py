"""Settings from the environment: defaults, normalisation, and loud failures for bad values."""

from __future__ import annotations

import stat

import pytest

from app.config import ConfigError, ensure_secret_key, normalise_endpoint
from tests.helpers import PROVIDER_KEY, azure_settings, settings_from

ENDPOINT = "https://res.openai.azure.com/"


# --- defaults --------------------------------------------------------------------------------


def test_empty_environment_uses_the_emulator(tmp_path):
    settings = settings_from(tmp_path)

    assert settings["AZURE_OPENAI_ENDPOINT"] is None
    assert settings["AZURE_OPENAI_API_KEY"] is None


def test_empty_environment_keeps_the_database_in_the_data_folder(tmp_path):
    settings = settings_from(tmp_path)

    data_dir = (tmp_path / "instance").resolve()
    assert settings["ATELIER_DATA_DIR"] == str(data_dir)
    assert settings["DATABASE_URL"] == f"sqlite:///{data_dir / 'atelier.db'}"


def test_empty_environment_uses_the_async_image_api_version(tmp_path):
    assert settings_from(tmp_path)["AZURE_OPENAI_API_VERSION"] == "2023-06-01-preview"


def test_empty_environment_gives_typed_defaults(tmp_path):
    settings = settings_from(tmp_path)

    assert settings["ATELIER_WORKER_THREADS"] == 2
    assert settings["ATELIER_JOB_DEADLINE_SECONDS"] == 600
    assert settings["ATELIER_HTTP_TIMEOUT_SECONDS"] == 60.0
    assert settings["ATELIER_MAX_IMAGE_BYTES"] == 50 * 1024 * 1024


def test_data_dir_setting_moves_the_database_too(tmp_path):
    settings = settings_from(tmp_path, ATELIER_DATA_DIR=str(tmp_path / "elsewhere"))

    assert settings["ATELIER_DATA_DIR"] == str((tmp_path / "elsewhere").resolve())
    assert settings["DATABASE_URL"].endswith("/elsewhere/atelier.db")


def test_blank_values_count_as_unset(tmp_path):
    settings = settings_from(
        tmp_path,
        AZURE_OPENAI_ENDPOINT="  ",
        AZURE_OPENAI_API_VERSION="",
        DATABASE_URL=" ",
        ATELIER_WORKER_THREADS="",
    )

    assert settings == settings_from(tmp_path)


def test_values_are_stripped_before_parsing(tmp_path):
    assert settings_from(tmp_path, ATELIER_WORKER_THREADS=" 4 ")["ATELIER_WORKER_THREADS"] == 4


# --- the endpoint ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "https://res.openai.azure.com",
        "https://res.openai.azure.com/",
        "https://res.openai.azure.com///",
        "  https://res.openai.azure.com/  ",
    ],
)
def test_endpoint_gets_exactly_one_trailing_slash(tmp_path, raw):
    settings = azure_settings(tmp_path, raw)

    assert settings["AZURE_OPENAI_ENDPOINT"] == ENDPOINT


def test_endpoint_keeps_a_path_prefix():
    assert normalise_endpoint("http://127.0.0.1:8080/proxy") == "http://127.0.0.1:8080/proxy/"


def test_endpoint_without_a_key_names_the_missing_key(tmp_path):
    with pytest.raises(ConfigError, match="AZURE_OPENAI_API_KEY"):
        settings_from(tmp_path, AZURE_OPENAI_ENDPOINT=ENDPOINT)


@pytest.mark.parametrize(
    "raw", ["res.openai.azure.com", "localhost:5001", "ftp://res.openai.azure.com/", "https://"]
)
def test_endpoint_that_is_not_an_http_url_is_refused(tmp_path, raw):
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        settings_from(tmp_path, AZURE_OPENAI_ENDPOINT=raw, AZURE_OPENAI_API_KEY=PROVIDER_KEY)


@pytest.mark.parametrize("raw", [ENDPOINT + "?api-version=2023-06-01-preview", ENDPOINT + "#keys"])
def test_endpoint_with_a_query_or_fragment_is_refused(tmp_path, raw):
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        settings_from(tmp_path, AZURE_OPENAI_ENDPOINT=raw, AZURE_OPENAI_API_KEY=PROVIDER_KEY)


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["two", "1.5", "-1"])
def test_worker_threads_must_be_a_whole_number_not_below_zero(tmp_path, raw):
    with pytest.raises(ConfigError, match="ATELIER_WORKER_THREADS"):
        settings_from(tmp_path, ATELIER_WORKER_THREADS=raw)


def test_zero_worker_threads_is_allowed_for_a_web_only_process(tmp_path):
    assert settings_from(tmp_path, ATELIER_WORKER_THREADS="0")["ATELIER_WORKER_THREADS"] == 0


def test_job_deadline_of_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ATELIER_JOB_DEADLINE_SECONDS"):
        settings_from(tmp_path, ATELIER_JOB_DEADLINE_SECONDS="0")


def test_lease_of_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ATELIER_LEASE_SECONDS"):
        settings_from(tmp_path, ATELIER_LEASE_SECONDS="0")


def test_http_timeout_of_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ATELIER_HTTP_TIMEOUT_SECONDS"):
        settings_from(tmp_path, ATELIER_HTTP_TIMEOUT_SECONDS="0")


@pytest.mark.parametrize("name", ["ATELIER_POLL_INTERVAL_SECONDS", "ATELIER_HTTP_TIMEOUT_SECONDS"])
def test_a_number_that_is_not_finite_is_refused(tmp_path, name):
    with pytest.raises(ConfigError, match=name):
        settings_from(tmp_path, **{name: "nan"})


# --- the secret key --------------------------------------------------------------------------


def test_secret_key_is_created_once_readable_only_by_the_owner(tmp_path):
    key = ensure_secret_key(str(tmp_path))

    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    assert path.read_text().strip() == key


def test_secret_key_is_the_same_on_the_next_start(tmp_path):
    assert ensure_secret_key(str(tmp_path)) == ensure_secret_key(str(tmp_path))


def test_secret_key_is_never_empty_even_after_an_interrupted_write(tmp_path):
    (tmp_path / "secret_key").touch(mode=0o600)

    assert ensure_secret_key(str(tmp_path))
