"""Credentials for Azure OpenAI: the resource key, or a Microsoft Entra ID bearer token.

Order: AZURE_OPENAI_API_KEY (`api-key` header), else AZURE_OPENAI_AD_TOKEN (`Authorization:
Bearer`, a static token that Atelier cannot renew), else tokens from azure-identity's
DefaultAzureCredential when that optional package is installed (`pip install -r
requirements-azure.txt`). Atelier caches those tokens itself and fetches a new one shortly
before the cached one expires, one fetch at a time for every worker thread. The credential also
knows what a 401 means for its kind, so the error a person reads says what to do. The secret
never appears in `repr`.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from app.providers.base import ProviderError

log = logging.getLogger(__name__)

# The scope Azure OpenAI tokens are issued for (azure-image-apis.md §1.2). Docs dated 2026 also
# name https://ai.azure.com/.default (§9: CONFLICT); the older scope is what `az account
# get-access-token --resource https://cognitiveservices.azure.com` issues, so it stays.
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
# A cached token is replaced when less than this is left of it (azure-core's own bearer policy
# uses the same five minutes), or less than half its lifetime for tokens shorter than that.
REFRESH_MARGIN_SECONDS = 300.0
REFRESH_FRACTION = 0.5
FRESH_TOKEN_COMMAND = "az account get-access-token --resource https://cognitiveservices.azure.com"
INSTALL_HINT = "pip install -r requirements-azure.txt"

API_KEY = "api-key"
STATIC_TOKEN = "static Entra ID token"
ENTRA_ID = "Entra ID (azure-identity)"


class TokenCredential(Protocol):
    """What azure-identity's credentials offer (azure.core.credentials.TokenCredential)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


class CachedToken(NamedTuple):
    token: str
    expires_on: float  # seconds since the epoch, as azure-core's AccessToken has it
    refresh_at: float


class AzureCredential:
    """One of: an API key, a static Entra ID token, or a TokenCredential Atelier renews."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        ad_token: str | None = None,
        token_credential: TokenCredential | None = None,
        scope: str = COGNITIVE_SERVICES_SCOPE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sum(bool(given) for given in (api_key, ad_token, token_credential is not None)) != 1:
            raise ValueError("give exactly one of an API key, a token or a token credential")
        self._api_key = api_key
        self._ad_token = ad_token
        self._token_credential = token_credential
        self._scope = scope
        self._clock = clock
        self._cached: CachedToken | None = None
        self._refreshing = threading.Lock()

    def __repr__(self) -> str:
        return f"AzureCredential({self.kind})"

    @property
    def kind(self) -> str:
        """API_KEY, STATIC_TOKEN or ENTRA_ID."""
        if self._api_key:
            return API_KEY
        return STATIC_TOKEN if self._ad_token else ENTRA_ID

    def headers(self) -> dict[str, str]:
        """The authentication header for one request; ProviderError when no token can be had."""
        if self._api_key:
            return {"api-key": self._api_key}
        token = self._ad_token or self._current_token()
        return {"Authorization": f"Bearer {token}"}

    def unauthorized_message(self, status: int) -> str | None:
        """What a 401/403 answer means for this kind of credential, as the message to show;
        None for other statuses and for API keys (the generic "check the key" applies)."""
        if status not in (401, 403) or self.kind == API_KEY:
            return None
        if self.kind == STATIC_TOKEN and status == 401:
            return _expired_token_message(self._ad_token or "", self._clock())
        if status == 401:
            return (
                "Azure rejected the Entra ID token from azure-identity (HTTP 401). Check that the "
                "identity it signs in with (az login, a managed identity, AZURE_CLIENT_ID...) "
                "belongs to the resource's tenant, and AZURE_OPENAI_ENDPOINT."
            )
        # Guess (not in azure-image-apis.md): Azure answers 403 to a valid token whose identity
        # lacks a data-plane role on the resource.
        return (
            f"Azure refused this Entra ID identity (HTTP {status}). It needs the 'Cognitive "
            "Services OpenAI User' role on the resource; or set AZURE_OPENAI_API_KEY instead."
        )

    # --- tokens from a TokenCredential ----------------------------------------------------------

    def _current_token(self) -> str:
        cached = self._cached
        now = self._clock()
        if cached is not None and now < cached.refresh_at:
            return cached.token
        still_valid = cached is not None and now < cached.expires_on
        # One refresh at a time. While it runs, threads holding a still-valid token use it
        # instead of waiting; without one they wait for the refresh and share its token.
        if not self._refreshing.acquire(blocking=not still_valid):
            assert cached is not None
            return cached.token
        try:
            cached = self._cached
            if cached is not None and self._clock() < cached.refresh_at:
                return cached.token  # another thread refreshed while this one waited
            try:
                self._cached = self._fetch()
            except ProviderError:
                if cached is not None and self._clock() < cached.expires_on:
                    log.warning("could not refresh the Entra ID token; the cached one still works")
                    return cached.token
                raise
            return self._cached.token
        finally:
            self._refreshing.release()

    def _fetch(self) -> CachedToken:
        assert self._token_credential is not None
        for _ in range(2):  # an expired token from the credential's own cache: ask once more
            try:
                access = self._token_credential.get_token(self._scope)
            except Exception as error:
                raise _token_error(error) from None
            now = self._clock()
            expires_on = float(access.expires_on)
            if expires_on > now:
                lifetime = expires_on - now
                margin = min(REFRESH_MARGIN_SECONDS, lifetime * REFRESH_FRACTION)
                # azure-core's AccessTokenInfo may say itself when to refresh (`refresh_on`).
                refresh_on = getattr(access, "refresh_on", None)
                refresh_at = expires_on - margin if refresh_on is None else float(refresh_on)
                log.info("got an Entra ID token valid for %.0f s", lifetime)
                return CachedToken(access.token, expires_on, min(refresh_at, expires_on - margin))
        raise ProviderError(
            "entra_id_error",
            "Microsoft Entra ID handed out a token that had already expired; check this "
            "machine's clock, or set AZURE_OPENAI_API_KEY instead.",
            retryable=True,
        )


def _token_error(error: Exception) -> ProviderError:
    """A readable, secret-free ProviderError for a failed get_token()."""
    name = type(error).__name__
    detail = (str(error).strip().splitlines() or [""])[0][:300]
    # A single credential raises CredentialUnavailableError when it cannot even try (not signed
    # in, no managed identity): trying again soon will not help, so that is final. Checked with
    # azure-identity 1.27.0: DefaultAzureCredential raises ClientAuthenticationError both when
    # nothing in its chain is configured and when a sign-in failed, first line "DefaultAzure
    # Credential failed to retrieve a token from the included credentials."; as that may also
    # be a passing network or throttling failure, it is retried a bounded number of times.
    # Matched by name: azure-identity is optional.
    retryable = name != "CredentialUnavailableError"
    return ProviderError(
        "entra_id_error",
        f"Could not get a Microsoft Entra ID token for Azure OpenAI ({name}"
        + (f": {detail}" if detail else "")
        + "). Sign in again (az login) or check the managed identity, or set "
        "AZURE_OPENAI_API_KEY instead.",
        retryable=retryable,
    )


def _expired_token_message(token: str, now: float) -> str:
    """The static token was refused: it expired (Entra ID tokens last about an hour), or it
    was never valid for this resource, which its `exp` claim tells apart when readable."""
    expires = _jwt_expiry(token)
    advice = (
        f"set a fresh AZURE_OPENAI_AD_TOKEN ({FRESH_TOKEN_COMMAND}), or set "
        f"AZURE_OPENAI_API_KEY instead, or unset both and {INSTALL_HINT} so Atelier gets and "
        "refreshes tokens itself."
    )
    if expires is not None and expires > now:
        until = datetime.fromtimestamp(expires, UTC)
        return (
            f"Azure rejected AZURE_OPENAI_AD_TOKEN (HTTP 401) although it is valid until "
            f"{until:%Y-%m-%d %H:%M} UTC: it was probably issued for another tenant or "
            f"resource. To fix it, {advice}"
        )
    when = ""
    if expires is not None:
        when = f" (at {datetime.fromtimestamp(expires, UTC):%Y-%m-%d %H:%M} UTC)"
    return f"The Entra ID token has expired{when}; Azure answered 401. To go on, {advice}"


def _jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without verifying anything; None if it is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (ValueError, KeyError, TypeError):
        return None


def azure_credential(settings: Mapping[str, Any]) -> AzureCredential:
    if settings.get("AZURE_OPENAI_API_KEY"):
        return AzureCredential(api_key=settings["AZURE_OPENAI_API_KEY"])
    token = settings.get("AZURE_OPENAI_AD_TOKEN")
    if token:
        return AzureCredential(ad_token=token)
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise ValueError(
            "No Azure credential: set AZURE_OPENAI_API_KEY or AZURE_OPENAI_AD_TOKEN, or "
            f"{INSTALL_HINT} to sign in with Microsoft Entra ID."
        ) from None
    return AzureCredential(token_credential=DefaultAzureCredential())
