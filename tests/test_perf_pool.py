"""Provider sessions keep a pooled connection per worker thread (issue #8): with more threads
than requests' default pool of 10, urllib3 discarded connections ("Connection pool is full")."""

from __future__ import annotations

import pytest
from requests.adapters import DEFAULT_POOLSIZE

from app.image_models import OPENAI, resolve_model
from app.providers.auth import AzureCredential
from app.providers.azure_async import AzureAsyncProvider
from app.providers.download import pooled_session
from app.providers.openai_images import OpenAIImagesProvider
from tests.helpers import make_app

CREDENTIAL = AzureCredential(api_key="key")


def pool_sizes(session) -> set[int]:
    return {session.get_adapter(url)._pool_maxsize for url in ("http://x/", "https://x/")}


def test_the_pool_follows_the_worker_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("ATELIER_WORKER_THREADS", "24")

    provider = AzureAsyncProvider("https://example.openai.azure.com", CREDENTIAL, "2024-02-01")

    assert pool_sizes(provider._session) == {24}
    # The downloader shares the provider's session, and with it the pool.
    assert provider._fetcher._session is provider._session


def test_the_pool_follows_the_configured_worker_threads_in_an_app(tmp_path, monkeypatch):
    monkeypatch.delenv("ATELIER_WORKER_THREADS", raising=False)
    app = make_app(tmp_path, ATELIER_WORKER_THREADS=32)

    with app.app_context():
        provider = OpenAIImagesProvider(
            "https://api.openai.com/v1", "key", resolve_model("dall-e-3", OPENAI)
        )

    assert pool_sizes(provider._session) == {32}


@pytest.mark.parametrize("threads", [0, 1, 8])
def test_the_pool_never_shrinks_below_requests_default(threads):
    assert pool_sizes(pooled_session(threads)) == {DEFAULT_POOLSIZE}
