"""Settings: built-in defaults, then the environment (and a `.env` file), then test overrides.

Every setting Atelier reads is listed in `SETTINGS` with its default and a one-line description;
README.md and .env.example document the same list. `load_settings` validates them once at
start-up so a typo fails loudly instead of half-working.
"""

from __future__ import annotations

import contextlib
import importlib.util
import ipaddress
import math
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.crashpoints import POINTS
from app.providers.catalog import V1_SUFFIX, CatalogError, build_catalog


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str
    kind: type = str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "AZURE_OPENAI_ENDPOINT",
        None,
        "Your Azure OpenAI resource: https://my-resource.openai.azure.com/ (deployment route) "
        "or https://my-resource.openai.azure.com/openai/v1/ (v1 route; *.services.ai.azure.com "
        "hosts work too). Unset: the built-in emulator is used.",
    ),
    Setting("AZURE_OPENAI_API_KEY", None, "The resource's API key (sent as the api-key header)."),
    Setting(
        "AZURE_OPENAI_AD_TOKEN",
        None,
        "A Microsoft Entra ID bearer token, instead of the key. It is not renewed (it lasts about "
        "an hour). With neither, azure-identity's DefaultAzureCredential is used when installed "
        "(pip install -r requirements-azure.txt); Atelier renews its tokens.",
    ),
    Setting(
        "AZURE_OPENAI_DEPLOYMENT",
        None,
        "Image deployments as name=model pairs, comma-separated, e.g. studio=gpt-image-2,"
        "fast=gpt-image-1-mini. A model the catalogue does not know takes its family from its "
        "name (gpt-image-2.7-x) or explicitly: name=model:family (families: dall-e-3, "
        "gpt-image-1, gpt-image-2).",
    ),
    Setting(
        "AZURE_OPENAI_DEPLOYMENT_API_VERSION",
        "2025-04-01-preview",
        "api-version for the deployment route (gpt-image-1 needs 2025-04-01-preview or later). "
        "On the v1 route none is sent unless this is set to preview (adds ?api-version=preview).",
    ),
    Setting(
        "AZURE_OPENAI_API_VERSION",
        "2023-06-01-preview",
        "api-version for the asynchronous DALL-E 2 API.",
    ),
    Setting(
        "AZURE_OPENAI_ASYNC_DALLE2",
        "auto",
        "on: also offer the retired asynchronous DALL-E 2 API (classic endpoint only). auto and "
        "off: do not.",
    ),
    Setting("OPENAI_API_KEY", None, "An OpenAI API key, to generate with OpenAI's own API."),
    Setting(
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1/",
        "OpenAI's API base URL (change it for a compatible server).",
    ),
    Setting(
        "OPENAI_IMAGE_MODELS",
        "gpt-image-2",
        "OpenAI models to offer, comma-separated (e.g. gpt-image-2,gpt-image-2.5-flare; "
        "model:family for one the catalogue does not know). Retired models give a start-up "
        "warning.",
    ),
    Setting(
        "ATELIER_SAFETY_IDENTIFIER",
        "on",
        "on: requests carry a salted hash of the account id (safety_identifier, or user for "
        "DALL-E and Azure), so abuse reports point at one account without naming it. off: none.",
    ),
    Setting(
        "DATABASE_URL",
        None,
        "SQLAlchemy database URL. Default: SQLite file atelier.db in the data folder.",
    ),
    Setting(
        "ATELIER_DATA_DIR",
        None,
        "Folder for the database, images and secret key. Default: ./instance.",
    ),
    Setting(
        "ATELIER_STORAGE_URL",
        "file:",
        "Where images, thumbnails, edit inputs, sidecars and previews are kept: file: (the data "
        "folder), az://CONTAINER/PREFIX (Azure Blob Storage) or s3://BUCKET/PREFIX "
        "(S3-compatible). The database and small private files stay in the data folder.",
    ),
    Setting(
        "ATELIER_STORAGE_SPOOL_MB",
        "512",
        "Downloaded images waiting for an object store that is failing are kept in the data "
        "folder's .spool/ up to this many MB; the upload is retried within the job's deadline.",
        float,
    ),
    Setting(
        "ATELIER_STORAGE_REDIRECT",
        "off",
        "With az:// or s3:// storage: on answers each image request (after Atelier's own "
        "checks) with a redirect to a read-only signed URL of that one object, valid 10-15 "
        "minutes (Azure SAS / S3 presigned), so image bytes go straight from storage to the "
        "browser; off streams them through Atelier.",
    ),
    Setting(
        "AZURE_STORAGE_CONNECTION_STRING",
        None,
        "For az:// storage: the storage account's connection string (portal → Access keys).",
    ),
    Setting(
        "AZURE_STORAGE_ACCOUNT_URL",
        None,
        "For az:// storage without a connection string: https://ACCOUNT.blob.core.windows.net, "
        "signed in with DefaultAzureCredential (pip install -r requirements-azure.txt).",
    ),
    Setting("AWS_ENDPOINT_URL", None, "For s3:// storage: an S3-compatible server's URL."),
    Setting("AWS_ACCESS_KEY_ID", None, "For s3:// storage (else boto3's usual credential chain)."),
    Setting("AWS_SECRET_ACCESS_KEY", None, "For s3:// storage, with AWS_ACCESS_KEY_ID."),
    Setting("AWS_SESSION_TOKEN", None, "For s3:// storage with temporary credentials."),
    Setting("AWS_REGION", None, "For s3:// storage: the bucket's region."),
    Setting(
        "ATELIER_SECRET_KEY",
        None,
        "Signs sessions and CSRF tokens. Default: generated once, kept in the data folder.",
    ),
    Setting(
        "ATELIER_AUTH",
        "on",
        "Sign-in: on (accounts and passwords), or off (no sign-in; only allowed when serving "
        "on a loopback address such as 127.0.0.1).",
    ),
    Setting(
        "ATELIER_ADMIN_USERNAME",
        "admin",
        "Name of the administrator account created from ATELIER_ADMIN_PASSWORD.",
    ),
    Setting(
        "ATELIER_ADMIN_PASSWORD",
        None,
        "Creates the administrator account on first start, when no account exists yet "
        "(at least 12 characters). There is no default password.",
    ),
    Setting(
        "ATELIER_SESSION_HOURS",
        "168",
        "A sign-in lasts this many hours, then the browser must sign in again.",
        int,
    ),
    Setting(
        "ATELIER_HTTPS",
        "off",
        "on when users reach Atelier over HTTPS (e.g. behind a TLS proxy): Secure __Host- "
        "session cookie and Strict-Transport-Security.",
    ),
    Setting(
        "ATELIER_PROXY_HOPS",
        "0",
        "Number of trusted reverse proxies in front of Atelier, whose X-Forwarded-For/-Proto "
        "headers are believed (for the sign-in rate limit and HTTPS detection).",
        int,
    ),
    Setting(
        "ATELIER_PUBLIC_URL",
        None,
        "The address people use to reach Atelier, e.g. https://atelier.example.com/ (a path "
        "prefix is kept: https://example.com/atelier/). Share links and the API's image URLs "
        "are built on it, never on a request's Host header, and its host is trusted.",
    ),
    Setting(
        "ATELIER_TRUSTED_HOSTS",
        None,
        "More host names Atelier answers to, comma-separated (e.g. atelier.example.com,"
        ".example.org; a leading dot also admits subdomains; * admits any). Always trusted: "
        "localhost, 127.0.0.1, ::1, the address served on and the host of ATELIER_PUBLIC_URL. "
        "Requests naming any other host get 400.",
    ),
    Setting(
        "ATELIER_C2PA_TRUST_ANCHORS",
        None,
        "A PEM file of root certificates whose Content Credentials signers Atelier trusts "
        "(e.g. the roots of the C2PA trust list). Unset: signatures are still checked, but "
        "every signer shows as not trusted.",
    ),
    Setting(
        "ATELIER_DAILY_IMAGE_QUOTA",
        "200",
        "Images each account may request per day (UTC); 0 means no limit. Per-account "
        "override: flask atelier users set-limits.",
        int,
    ),
    Setting(
        "ATELIER_MONTHLY_BUDGET_USD",
        "0",
        "Spending limit per account per calendar month in US dollars, from the price table; "
        "0 means none. Per-account override: flask atelier users set-limits.",
        float,
    ),
    Setting(
        "ATELIER_MAX_CONCURRENT_JOBS",
        "16",
        "Jobs in flight at the provider at once, across every worker (0: no cap).",
        int,
    ),
    Setting(
        "ATELIER_WORKER_THREADS",
        "2",
        "Background worker threads started with the app (0: none, e.g. for a web-only process).",
        int,
    ),
    Setting(
        "ATELIER_JOB_DEADLINE_SECONDS",
        "600",
        "A job with no final result after this many seconds fails with code 'deadline'.",
        int,
    ),
    Setting(
        "ATELIER_LEASE_SECONDS",
        "60",
        "How long a worker holds a job before another worker may take it over.",
        int,
    ),
    Setting(
        "ATELIER_POLL_INTERVAL_SECONDS",
        "5",
        "Wait between status polls when Azure sends no retry-after header.",
        float,
    ),
    Setting(
        "ATELIER_HTTP_TIMEOUT_SECONDS",
        "60",
        "Read timeout for each call to Azure (the connect timeout is 5 s).",
        float,
    ),
    Setting(
        "ATELIER_GENERATION_TIMEOUT_SECONDS",
        "300",
        "Read timeout for a synchronous generation call (gpt-image-1 can take minutes).",
        float,
    ),
    Setting(
        "ATELIER_MAX_IMAGE_BYTES",
        str(50 * 1024 * 1024),
        "Largest image download accepted, in bytes.",
        int,
    ),
    Setting(
        "ATELIER_MAX_REQUEST_MB",
        "100",
        "Largest upload a new job may send, in MB (all its images and its mask together).",
        int,
    ),
    Setting(
        "ATELIER_TRASH_DAYS",
        "30",
        "Images in the trash are deleted for good after this many days.",
        int,
    ),
    Setting(
        "ATELIER_TEST_CRASH_AT",
        None,
        "Tests only: kill the process at a named point (see app/crashpoints.py).",
    ),
    Setting(
        "ATELIER_EMULATOR_PORT",
        "5001",
        "Loopback port of the built-in emulator (0: any free port).",
        int,
    ),
    Setting(
        "ATELIER_EMULATOR_LATENCY_SECONDS",
        "3",
        "How long the built-in emulator takes to 'generate' an image.",
        float,
    ),
)


def _parse(setting: Setting, raw: str) -> Any:
    if setting.kind is str:
        return raw
    try:
        value = setting.kind(raw)
    except ValueError:
        raise ConfigError(
            f"{setting.name}={raw!r} is not a valid {setting.kind.__name__}."
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"{setting.name} must be a finite number (got {raw!r}).")
    if value < 0:
        raise ConfigError(f"{setting.name} must not be negative (got {raw!r}).")
    return value


def normalise_endpoint(
    raw: str,
    name: str = "AZURE_OPENAI_ENDPOINT",
    example: str = "https://my-resource.openai.azure.com/",
) -> str:
    """Return the URL with exactly one trailing slash, or raise ConfigError naming `name`."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={raw!r} is not a URL; expected something like {example}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name} must not contain a query or fragment.")
    return raw.strip().rstrip("/") + "/"


def public_url(raw: str) -> str:
    """ATELIER_PUBLIC_URL with exactly one trailing slash: http(s), a host, perhaps a path
    prefix; no user name, query or fragment."""
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"ATELIER_PUBLIC_URL={raw!r} is not an http or https URL; expected something like "
            "https://atelier.example.com/"
        )
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise ConfigError("ATELIER_PUBLIC_URL must not contain a query or fragment.")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("ATELIER_PUBLIC_URL must not contain a user name or password.")
    try:
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ConfigError(f"ATELIER_PUBLIC_URL={raw!r} has a malformed port.") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/"


_HOST_NAME = re.compile(r"\.?[a-z0-9-]+(\.[a-z0-9-]+)*")


def trusted_hosts(raw: str) -> tuple[str, ...]:
    """ATELIER_TRUSTED_HOSTS as lower-case names: `name`, `.domain` (with its subdomains), an
    IP address, or `*`."""
    hosts = []
    for entry in (part.strip().lower() for part in raw.split(",")):
        if not entry:
            continue
        bare = entry.removeprefix("[").removesuffix("]")
        if entry == "*" or _HOST_NAME.fullmatch(entry) or _is_ipv6(bare):
            hosts.append(bare)
            continue
        raise ConfigError(
            f"ATELIER_TRUSTED_HOSTS: {entry!r} is not a host name (no scheme, port or path; "
            "write internationalised names in their xn-- form)."
        )
    return tuple(hosts)


def _is_ipv6(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 6
    except ValueError:
        return False


def azure_endpoint(raw: str) -> str:
    """The resource's endpoint: the classic `https://RESOURCE.openai.azure.com/` form, or the v1
    API's `https://RESOURCE.openai.azure.com/openai/v1/` (also on `*.services.ai.azure.com`).
    A classic endpoint given with its `/openai/` path, as some portal pages show it, is
    trimmed to the resource, since the routes add `openai/` themselves."""
    endpoint = normalise_endpoint(raw)
    if endpoint.endswith("/openai/") and not endpoint.endswith(V1_SUFFIX):
        endpoint = endpoint.removesuffix("openai/")
    return endpoint


# Secrets may come from a file instead (e.g. a Docker or Kubernetes secret mounted 0600):
# NAME_FILE=/run/secrets/name is read when NAME itself is not set.
SECRET_SETTINGS = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AWS_SECRET_ACCESS_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "OPENAI_API_KEY",
    "ATELIER_SECRET_KEY",
    "ATELIER_ADMIN_PASSWORD",
)


def _secret_from_file(environ: Mapping[str, str], name: str) -> str | None:
    path = environ.get(f"{name}_FILE")
    if not path or environ.get(name):
        return environ.get(name)
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ConfigError(f"{name}_FILE={path!r} cannot be read: {error.strerror}.") from None


def load_settings(environ: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Read every setting from `environ`, apply defaults and derived values, validate."""
    settings: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = (
            _secret_from_file(environ, setting.name)
            if setting.name in SECRET_SETTINGS
            else environ.get(setting.name)
        )
        if raw is None or raw.strip() == "":
            settings[setting.name] = (
                None if setting.default is None else _parse(setting, setting.default)
            )
        else:
            settings[setting.name] = _parse(setting, raw.strip())

    data_dir = Path(settings["ATELIER_DATA_DIR"] or instance_path).resolve()
    settings["ATELIER_DATA_DIR"] = str(data_dir)
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = f"sqlite:///{data_dir / 'atelier.db'}"

    endpoint = settings["AZURE_OPENAI_ENDPOINT"]
    if endpoint:
        settings["AZURE_OPENAI_ENDPOINT"] = azure_endpoint(endpoint)
        credentials = settings["AZURE_OPENAI_API_KEY"] or settings["AZURE_OPENAI_AD_TOKEN"]
        if not credentials and not _azure_identity_installed():
            raise ConfigError(
                "AZURE_OPENAI_ENDPOINT is set but no credential is: set AZURE_OPENAI_API_KEY "
                "(Azure portal → your resource → Keys and Endpoint) or AZURE_OPENAI_AD_TOKEN, or "
                "pip install -r requirements-azure.txt to sign in with Microsoft Entra ID "
                "(az login, a managed identity...). Set no endpoint to use the emulator."
            )
    elif settings["AZURE_OPENAI_DEPLOYMENT"]:
        raise ConfigError("AZURE_OPENAI_DEPLOYMENT is set but AZURE_OPENAI_ENDPOINT is not.")
    settings["OPENAI_BASE_URL"] = normalise_endpoint(
        settings["OPENAI_BASE_URL"], "OPENAI_BASE_URL", "https://api.openai.com/v1/"
    )
    try:
        catalog = build_catalog(settings)
    except CatalogError as error:
        raise ConfigError(str(error)) from None
    settings["ATELIER_TARGETS"] = catalog.targets
    settings["ATELIER_MODEL_NOTICES"] = catalog.notices
    if settings["ATELIER_JOB_DEADLINE_SECONDS"] < 1:
        raise ConfigError("ATELIER_JOB_DEADLINE_SECONDS must be at least 1.")
    for name in ("ATELIER_HTTP_TIMEOUT_SECONDS", "ATELIER_GENERATION_TIMEOUT_SECONDS"):
        if settings[name] <= 0:
            raise ConfigError(f"{name} must be more than 0.")
    crash_at = settings["ATELIER_TEST_CRASH_AT"]
    if crash_at and crash_at not in POINTS:
        raise ConfigError(f"ATELIER_TEST_CRASH_AT must be one of {', '.join(POINTS)}.")
    if settings["ATELIER_LEASE_SECONDS"] < 1:
        raise ConfigError("ATELIER_LEASE_SECONDS must be at least 1.")
    for name in (
        "ATELIER_AUTH",
        "ATELIER_HTTPS",
        "ATELIER_SAFETY_IDENTIFIER",
        "ATELIER_STORAGE_REDIRECT",
    ):
        value = settings[name].lower()
        if value not in ("on", "off"):
            raise ConfigError(f"{name} must be on or off (got {settings[name]!r}).")
        settings[name] = value
    if settings["ATELIER_STORAGE_REDIRECT"] == "on" and is_data_folder(
        settings["ATELIER_STORAGE_URL"]
    ):
        raise ConfigError(
            "ATELIER_STORAGE_REDIRECT=on needs an object store (ATELIER_STORAGE_URL=az://... or "
            "s3://...): files in the data folder have no signed URLs. Set it to off."
        )
    if settings["ATELIER_MAX_REQUEST_MB"] < 1:
        raise ConfigError("ATELIER_MAX_REQUEST_MB must be at least 1.")
    if settings["ATELIER_SESSION_HOURS"] < 1:
        raise ConfigError("ATELIER_SESSION_HOURS must be at least 1.")
    if settings["ATELIER_PUBLIC_URL"]:
        settings["ATELIER_PUBLIC_URL"] = public_url(settings["ATELIER_PUBLIC_URL"])
    settings["ATELIER_TRUSTED_HOSTS"] = trusted_hosts(settings["ATELIER_TRUSTED_HOSTS"] or "")
    anchors = settings["ATELIER_C2PA_TRUST_ANCHORS"]
    settings["ATELIER_C2PA_TRUST_ANCHORS_PEM"] = trust_anchors_pem(anchors) if anchors else None
    return settings


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.S
)


def trust_anchors_pem(path: str) -> str:
    """The certificates of the ATELIER_C2PA_TRUST_ANCHORS file, as PEM text for the C2PA SDK.

    Read once at start-up (not per image) and checked here, so a wrong path or a file that is
    not PEM certificates stops Atelier with the reason instead of silently trusting no one."""
    from cryptography import x509  # only needed when the setting is used

    name = "ATELIER_C2PA_TRUST_ANCHORS"
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as error:
        raise ConfigError(f"{name}={path!r} cannot be read: {error.strerror}.") from None
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise ConfigError(
            f"{name}={path!r} holds no PEM certificate: expected one or more "
            "'-----BEGIN CERTIFICATE-----' blocks of trusted root certificates."
        )
    for number, block in enumerate(blocks, 1):
        try:
            x509.load_pem_x509_certificate(block)
        except ValueError as error:
            raise ConfigError(
                f"{name}={path!r}: certificate {number} of {len(blocks)} is not a valid "
                f"X.509 certificate ({error})."
            ) from None
    return "\n".join(block.decode("ascii", "replace") for block in blocks) + "\n"


def is_data_folder(storage_url: str | None) -> bool:
    """Whether ATELIER_STORAGE_URL names the data folder (file:, or unset)."""
    return not storage_url or storage_url in ("file:", "file://")


def _azure_identity_installed() -> bool:
    try:
        return importlib.util.find_spec("azure.identity") is not None
    except ModuleNotFoundError:  # no "azure" namespace package at all
        return False


def ensure_secret_key(data_dir: str) -> str:
    """Return the persistent secret key in the data folder, creating it (mode 0600) once.

    The key is written to a temporary file and published with a hard link, so a crash never
    leaves an empty key and two processes starting together agree on one key.
    """
    path = Path(data_dir) / "secret_key"
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
    temp = Path(data_dir) / f".secret_key-{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():  # empty, left by an interrupted older version: replace it
            os.replace(temp, path)
        else:
            # If another process published its key first, that one is used.
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        return path.read_text().strip()
    finally:
        temp.unlink(missing_ok=True)
