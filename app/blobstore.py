"""Where stored objects live: the data folder, Azure Blob Storage or an S3-compatible service.

One small interface (`BlobStore`) with three backends, chosen by ATELIER_STORAGE_URL
(`open_store`): `file:` or unset (`LocalStore`, the data folder, today's layout and atomic
writes), `az://CONTAINER/PREFIX` (`AzureStore`, azure-storage-blob) and `s3://BUCKET/PREFIX`
(`S3Store`, boto3). Names are the data folder's relative paths (`images/ab/<sha>.png`,
`thumbs/...`, `sidecars/...`, `previews/...`); an object store keeps them under PREFIX.

What `put` guarantees on every backend: when it returns, the whole object is stored and was
checked. The local backend writes a temporary file, fsyncs and renames it. The object backends
send the bytes with their MD5 (Content-MD5, which both services verify before they accept the
upload, so a torn or altered body is refused) and the sha256 as metadata in one request, and
compare the MD5 the service answers with (Azure: the stored Content-MD5; S3: the ETag, which is
the MD5 of a single-part upload without SSE-KMS): the stored bytes are then the bytes sent, so
their size and sha256 are too, without reading the object back. A mismatch deletes the damaged
object and raises `StorageUnavailable`, so the row that would point at it never commits.
`put(..., if_absent=True)` keeps an object already stored under the name (content addressing:
it holds the same bytes) and answers False: one conditional request (Azure: If-None-Match: *)
instead of a look and a write.

Failures are sorted in two: `ObjectMissing` (a FileNotFoundError: there is no such object)
and `StorageUnavailable` (unreachable, timed out, refused with 403 or a 5xx, or a check that
failed): the caller waits and retries (app.jobs.store_downloaded). `check()` makes one cheap
call at start-up and raises ConfigError naming the setting that is wrong.

Serving (app.views.content_files): `open` gives an object's size, time and its bytes as a
chunk iterator (optionally one byte range) without holding it in memory; `sign` makes a
short-lived read-only URL of one object (Azure: a SAS; S3: a presigned GET), with the response's
Content-Type, Content-Disposition and Cache-Control fixed by the signature; `signed_url` aligns
its expiry to a grid so the same URL comes back for minutes (browser caches keep working).

Every backend counts what it moves and every failure it raises in app.storage_stats (backend
"file", "az" or "s3"): a completed put counts its bytes "written", a completed get and each
chunk of a streamed read count "read", each StorageUnavailable (and each failed check) counts
an error under its operation (put, get, stat, delete, list, check, sign).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from app import storage_stats
from app.config import ConfigError

TEMP_PREFIX = ".tmp-"
# Object services: a few quick attempts per call; the job-level retry (with backoff, inside the
# job's deadline) handles longer outages, so a call never hangs a worker for minutes.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
CALL_ATTEMPTS = 2
# Streamed reads: the size of each piece held in memory at a time.
STREAM_CHUNK_BYTES = 1024 * 1024
# Signed URLs (ATELIER_STORAGE_REDIRECT): each expires on a 5-minute grid point 10 to 15 minutes
# ahead, so every request within one 5-minute slot gets the same URL (the browser's cache
# keeps it), long enough for a slow page to load its images, short enough that a leaked URL
# is soon worthless.
SIGNED_URL_GRID_SECONDS = 300
SIGNED_URL_LIFETIME_SECONDS = 900
SIGNED_URLS_CACHED = 4096


class StorageUnavailable(Exception):
    """The storage service is unreachable, timed out, refused (403, 5xx) or stored something
    other than what was sent. Nothing was recorded; the caller may retry."""


class ObjectMissing(FileNotFoundError):
    """There is no object with that name."""


@dataclass(frozen=True)
class StoredObject:
    name: str  # relative to the store (the data folder or the bucket's prefix)
    size: int
    modified: float  # POSIX time of the last write
    # The sha256 `put` stored beside an object as metadata (object stores' `stat` only; None
    # for a file, a listing, or an object Atelier did not write).
    sha256: str | None = None


@dataclass
class ObjectStream:
    """An object being read: its whole size and time, and `chunks` of the bytes from `start`
    (`length` of them). Close it when done (the service's connection goes back to the pool)."""

    size: int
    modified: float
    start: int
    length: int
    chunks: Iterator[bytes]
    close: Callable[[], None] = field(default=lambda: None)


@dataclass(frozen=True)
class SignedResponse:
    """The headers a signed URL's answer carries, fixed by its signature."""

    content_type: str
    disposition: str | None = None
    cache_control: str | None = None


class BlobStore(Protocol):
    """The few operations Atelier needs from a place that keeps objects."""

    url: str  # for reports: the folder or the container/bucket and prefix
    local: bool  # True for the data folder (files there have paths)
    kind: str  # app.storage_stats' backend label: file, az or s3

    def put(
        self, name: str, data: bytes, content_type: str | None = None, *, if_absent: bool = False
    ) -> bool: ...
    def get(self, name: str) -> bytes: ...
    def get_with_time(self, name: str) -> tuple[bytes, float]: ...
    def stat(self, name: str) -> StoredObject | None: ...
    def open(self, name: str, start: int = 0, length: int | None = None) -> ObjectStream: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[StoredObject]: ...
    def check(self) -> None: ...
    def sign(self, name: str, response: SignedResponse, expiry: datetime) -> str: ...
    def signed_origin(self) -> str: ...


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data, usedforsecurity=False).digest()


def _split(url: str, scheme: str) -> tuple[str, str]:
    """(container or bucket, prefix ending in '/' or empty) of az://C/P or s3://B/P."""
    parts = urlsplit(url)
    if parts.scheme != scheme or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(
            f"ATELIER_STORAGE_URL={url!r} is not {scheme}://NAME or {scheme}://NAME/PREFIX."
        )
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


# --- the data folder ----------------------------------------------------------------------------


class LocalStore:
    """Files under the data folder, written atomically (temp file, fsync, rename, fsync dir)."""

    local = True
    kind = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def path(self, name: str) -> Path:
        """The path of a stored name; refuses names that escape the data folder."""
        root = self.root.resolve()
        path = (root / name).resolve()
        if root not in path.parents:
            raise ValueError(f"{name!r} is outside the data folder")
        return path

    def put(
        self, name: str, data: bytes, content_type: str | None = None, *, if_absent: bool = False
    ) -> bool:
        """Write `name`; with `if_absent`, a file of that size already there is kept (a
        content-addressed name holds the same bytes) and False is returned."""
        path = self.path(name)
        if if_absent and path.is_file() and path.stat().st_size == len(data):
            return False
        write_atomically(path, data)
        storage_stats.count_bytes("file", "written", len(data))
        return True

    def get(self, name: str) -> bytes:
        try:
            data = self.path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
            raise ObjectMissing(name) from None
        storage_stats.count_bytes("file", "read", len(data))
        return data

    def open(self, name: str, start: int = 0, length: int | None = None) -> ObjectStream:
        try:
            handle = self.path(name).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
            raise ObjectMissing(name) from None
        status = os.fstat(handle.fileno())
        start = min(start, status.st_size)
        length = status.st_size - start if length is None else min(length, status.st_size - start)
        handle.seek(start)

        def chunks() -> Iterator[bytes]:
            left = length
            while left > 0 and (piece := handle.read(min(STREAM_CHUNK_BYTES, left))):
                left -= len(piece)
                storage_stats.count_bytes("file", "read", len(piece))
                yield piece

        return ObjectStream(status.st_size, status.st_mtime, start, length, chunks(), handle.close)

    def sign(self, name: str, response: SignedResponse, expiry: datetime) -> str:
        raise ConfigError(
            "ATELIER_STORAGE_REDIRECT=on needs an object store: the data folder has no signed URLs."
        )

    def signed_origin(self) -> str:
        return self.sign("", SignedResponse(""), datetime.now(UTC))

    def get_with_time(self, name: str) -> tuple[bytes, float]:
        data = self.get(name)
        found = self.stat(name)
        return data, found.modified if found is not None else 0.0

    def stat(self, name: str) -> StoredObject | None:
        try:
            path = self.path(name)
        except ValueError:
            return None
        if not path.is_file():
            return None
        status = path.stat()
        return StoredObject(name, status.st_size, status.st_mtime)

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every regular file under the folder `prefix` (links passed over), sorted by name."""
        folder = self.root / prefix.rstrip("/")
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                status = path.stat()
                name = path.relative_to(self.root).as_posix()
                yield StoredObject(name, status.st_size, status.st_mtime)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, rename over the target, fsync the folder.

    The file is 0600 (mkstemp's mode, kept by the rename) and a new folder 0700: whatever the
    umask, nobody but the service user reads another user's images."""
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Azure Blob Storage -------------------------------------------------------------------------


class AzureStore:
    """Block blobs in one container (azure-storage-blob), under a prefix."""

    local = False
    kind = "az"

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        from azure.storage.blob import BlobServiceClient

        self.container_name, self.prefix = _split(url, "az")
        self.url = url
        options = {
            "connection_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "retry_total": CALL_ATTEMPTS - 1,
            # azure-storage-blob's ExponentialRetry ignores retry_backoff_factor: its own
            # defaults wait 15 s + up to 3 s of jitter before the retry.
            "initial_backoff": 0.2,
            "increment_base": 1,
            "random_jitter_range": 0.2,
            # A streamed read holds one piece of this size at a time (the SDK's default first
            # piece is 32 MiB: the whole of any image).
            "max_single_get_size": STREAM_CHUNK_BYTES * 4,
            "max_chunk_get_size": STREAM_CHUNK_BYTES * 4,
            # One pooled connection per thread that may call at once (worker and request
            # threads): the default pool keeps 10 and opens and drops one for every call beyond.
            "transport": _pooled_transport(_pool_size(settings)),
        }
        connection_string = settings.get("AZURE_STORAGE_CONNECTION_STRING")
        account_url = settings.get("AZURE_STORAGE_ACCOUNT_URL")
        if connection_string:
            self.credential_setting = "AZURE_STORAGE_CONNECTION_STRING"
            try:
                service = BlobServiceClient.from_connection_string(connection_string, **options)
            except ValueError as error:
                raise ConfigError(
                    f"AZURE_STORAGE_CONNECTION_STRING is not a valid connection string ({error})."
                ) from None
        elif account_url:
            self.credential_setting = "AZURE_STORAGE_ACCOUNT_URL (DefaultAzureCredential)"
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise ConfigError(
                    "AZURE_STORAGE_ACCOUNT_URL needs azure-identity for DefaultAzureCredential: "
                    "pip install -r requirements-azure.txt, or set "
                    "AZURE_STORAGE_CONNECTION_STRING instead."
                ) from None
            service = BlobServiceClient(account_url, credential=DefaultAzureCredential(), **options)
        else:
            raise ConfigError(
                "ATELIER_STORAGE_URL is az://... but neither AZURE_STORAGE_CONNECTION_STRING nor "
                "AZURE_STORAGE_ACCOUNT_URL is set."
            )
        self.service = service
        self.container = service.get_container_client(self.container_name)
        self._delegation_lock = threading.Lock()
        self._delegation_key: Any = None
        self._delegation_expiry = datetime.min.replace(tzinfo=UTC)

    def _call(self, operation: str, action: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        try:
            return action(*args, **kwargs)
        except ResourceNotFoundError:
            raise ObjectMissing(args[0] if args else "") from None
        except ResourceExistsError:
            raise _Exists from None
        except AzureError as error:
            storage_stats.count_error(self.kind, operation)
            status = getattr(error, "status_code", None)
            raise StorageUnavailable(
                f"Azure Blob Storage ({self.url}) failed"
                f"{f' with HTTP {status}' if status else ''}: {_first_line(error)}"
            ) from None

    def put(
        self, name: str, data: bytes, content_type: str | None = None, *, if_absent: bool = False
    ) -> bool:
        """One Put Blob. The service checks the body against the transactional Content-MD5
        (validate_content) before it stores anything and answers with the stored blob's MD5,
        compared here. `if_absent`: If-None-Match: *; an existing blob is kept, False."""
        from azure.storage.blob import ContentSettings

        md5, sha = _md5(data), hashlib.sha256(data).hexdigest()
        key = self.prefix + name
        try:
            answer = self._call(
                "put",
                self.container.get_blob_client(key).upload_blob,
                data,
                overwrite=not if_absent,
                validate_content=True,
                metadata={"sha256": sha},
                content_settings=ContentSettings(content_type=content_type, content_md5=md5),
            )
        except _Exists:
            return False
        stored_md5 = answer.get("content_md5")
        if stored_md5 is not None and bytes(stored_md5) != md5:
            # A damaged blob must not stay under a content address: remove it.
            with contextlib.suppress(StorageUnavailable, ObjectMissing):
                self._call("delete", self.container.delete_blob, key)
            storage_stats.count_error(self.kind, "put")
            raise StorageUnavailable(
                f"Azure Blob Storage stored {name} with another MD5 than the "
                f"{len(data)} bytes sent."
            )
        storage_stats.count_bytes(self.kind, "written", len(data))
        return True

    def get(self, name: str) -> bytes:
        return self.get_with_time(name)[0]

    def get_with_time(self, name: str) -> tuple[bytes, float]:
        downloader = self._call("get", self.container.download_blob, self.prefix + name)
        data = self._call("get", downloader.readall)
        storage_stats.count_bytes(self.kind, "read", len(data))
        return data, _timestamp(downloader.properties.last_modified)

    def open(self, name: str, start: int = 0, length: int | None = None) -> ObjectStream:
        """The object's bytes from `start` (`length` of them, else to its end), as chunks."""
        if length == 0:  # the service refuses an empty range: an empty read needs no call
            found = self.stat(name)
            if found is None:
                raise ObjectMissing(name)
            return ObjectStream(found.size, found.modified, start, 0, iter(()))
        downloader = self._call(
            "get",
            self.container.download_blob,
            self.prefix + name,
            offset=start if start or length is not None else None,
            length=length,
        )
        properties = downloader.properties
        # Guess: for a ranged download the SDK reports the range's size as properties.size and
        # the whole blob's in content_range ("bytes START-END/TOTAL").
        size = _total_from_content_range(properties.content_range) or downloader.size
        return ObjectStream(
            size,
            _timestamp(properties.last_modified),
            start,
            downloader.size,
            _counted(self, downloader.chunks()),
        )

    def stat(self, name: str) -> StoredObject | None:
        try:
            properties = self._call(
                "stat", self.container.get_blob_client(self.prefix + name).get_blob_properties
            )
        except ObjectMissing:
            return None
        return StoredObject(
            name,
            properties.size,
            properties.last_modified.timestamp(),
            (properties.metadata or {}).get("sha256"),
        )

    def delete(self, name: str) -> None:
        with contextlib.suppress(ObjectMissing):
            self._call("delete", self.container.delete_blob, self.prefix + name)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        listing = self._call(
            "list", self.container.list_blobs, name_starts_with=self.prefix + prefix
        )
        found = [
            StoredObject(blob.name[len(self.prefix) :], blob.size, _timestamp(blob.last_modified))
            for blob in self._iterate(listing)
        ]
        yield from sorted(found, key=lambda item: item.name)

    def _iterate(self, listing: Any) -> list[Any]:
        return self._call("list", list, listing)

    def sign(self, name: str, response: SignedResponse, expiry: datetime) -> str:
        """A read-only SAS URL of this one blob until `expiry`. With a connection string it is
        signed with the account key; with DefaultAzureCredential, with a user delegation key
        (fetched once, renewed a day later)."""
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        credential = self.service.credential
        account_key = getattr(credential, "account_key", None)
        signing: dict[str, Any] = (
            {"account_key": account_key}
            if account_key
            else {"user_delegation_key": self._user_delegation_key(expiry)}
        )
        blob = self.container.get_blob_client(self.prefix + name)
        # No start time: a SAS without one is valid at once whatever the service's clock says,
        # and the URL then depends only on the (grid-aligned) expiry.
        token = generate_blob_sas(
            self.service.account_name,
            self.container_name,
            self.prefix + name,
            permission=BlobSasPermissions(read=True),
            expiry=expiry,
            content_type=response.content_type,
            content_disposition=response.disposition,
            cache_control=response.cache_control,
            **signing,
        )
        return f"{blob.url}?{token}"

    def _user_delegation_key(self, expiry: datetime) -> Any:
        """The cached user delegation key (valid a day), fetched again when it would expire
        before `expiry`. Guess: the identity needs the "Storage Blob Delegator" role (or
        Storage Blob Data Reader/Contributor, which include the action)."""
        with self._delegation_lock:
            if self._delegation_key is None or self._delegation_expiry <= expiry:
                now = datetime.now(UTC)
                # Guess: a key may be asked to start a little in the past, against clock skew.
                key_expiry = now + timedelta(days=1)
                self._delegation_key = self._call(
                    "sign",
                    self.service.get_user_delegation_key,
                    now - timedelta(minutes=15),
                    key_expiry,
                )
                self._delegation_expiry = key_expiry
            return self._delegation_key

    def signed_origin(self) -> str:
        if self.credential_setting == "AZURE_STORAGE_CONNECTION_STRING" and not getattr(
            self.service.credential, "account_key", None
        ):
            raise ConfigError(
                "ATELIER_STORAGE_REDIRECT=on signs URLs with the storage account key: "
                "AZURE_STORAGE_CONNECTION_STRING must hold an AccountKey (or use "
                "AZURE_STORAGE_ACCOUNT_URL with DefaultAzureCredential for user delegation SAS)."
            )
        return _origin(self.container.url)

    def check(self) -> None:
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
        )

        try:
            self.container.get_container_properties()
        except ResourceNotFoundError:
            storage_stats.count_error(self.kind, "check")
            raise ConfigError(
                f"ATELIER_STORAGE_URL: the container {self.container_name!r} does not exist in "
                "this storage account (create it, or fix the name)."
            ) from None
        except (ClientAuthenticationError, HttpResponseError) as error:
            storage_stats.count_error(self.kind, "check")
            if isinstance(error, ClientAuthenticationError) or error.status_code in (401, 403):
                raise ConfigError(
                    f"{self.credential_setting}: Azure Blob Storage refused the credentials "
                    f"for container {self.container_name!r} ({_first_line(error)})."
                ) from None
            raise ConfigError(
                f"ATELIER_STORAGE_URL: Azure Blob Storage answered {error.status_code} for "
                f"container {self.container_name!r} ({_first_line(error)})."
            ) from None
        except AzureError as error:
            storage_stats.count_error(self.kind, "check")
            raise ConfigError(
                f"ATELIER_STORAGE_URL: Azure Blob Storage cannot be reached for "
                f"{self.url} ({_first_line(error)})."
            ) from None


# --- S3-compatible ------------------------------------------------------------------------------


class S3Store:
    """Objects in one bucket (boto3), under a prefix."""

    local = False
    kind = "s3"

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = _split(url, "s3")
        self.url = url
        endpoint = settings.get("AWS_ENDPOINT_URL") or None
        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": CALL_ATTEMPTS, "mode": "standard"},
            # Content-MD5 is sent explicitly (put); the newer default CRC checksums are not
            # understood by every S3-compatible server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Presigned URLs too with SigV4 (older botocore signed them with SigV2 in
            # us-east-1, which newer regions refuse).
            signature_version="s3v4",
            # Guess: S3-compatible servers on their own endpoint (MinIO, moto, Ceph) want
            # path-style URLs; AWS itself works with either.
            s3={"addressing_style": "path" if endpoint else "auto"},
            # One pooled connection per thread that may call at once (default 10).
            max_pool_connections=_pool_size(settings),
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=settings.get("AWS_SESSION_TOKEN") or None,
            region_name=settings.get("AWS_REGION") or None,
        )
        self.client = session.client("s3", endpoint_url=endpoint, config=config)

    def _call(self, operation: str, action: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action(**kwargs)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(kwargs.get("Key", "")) from None
            storage_stats.count_error(self.kind, operation)
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise StorageUnavailable(
                f"S3 ({self.url}) failed with HTTP {status} {code}: {_first_line(error)}"
            ) from None
        except BotoCoreError as error:
            storage_stats.count_error(self.kind, operation)
            raise StorageUnavailable(f"S3 ({self.url}) failed: {_first_line(error)}") from None

    def put(
        self, name: str, data: bytes, content_type: str | None = None, *, if_absent: bool = False
    ) -> bool:
        """One PutObject with Content-MD5 (which the service checks before it stores); the
        answer's ETag is compared with the MD5. `if_absent`: a HEAD first (Guess: not every
        S3-compatible server honours If-None-Match on PUT); an existing object is kept, False."""
        if if_absent and self.stat(name) is not None:
            return False
        md5, sha = _md5(data), hashlib.sha256(data).hexdigest()
        key = self.prefix + name
        extra = {"ContentType": content_type} if content_type else {}
        answer = self._call(
            "put",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(md5).decode("ascii"),
            Metadata={"sha256": sha},
            **extra,
        )
        etag = str(answer.get("ETag", "")).strip('"')
        # An SSE-KMS ETag is not an MD5 (it differs in form): then the service's own
        # Content-MD5 check is what vouches for the body.
        md5_etag = len(etag) == 32 and "-" not in etag
        if md5_etag and etag != md5.hex():
            # A damaged object must not stay under a content address: remove it.
            with contextlib.suppress(StorageUnavailable, ObjectMissing):
                self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=key)
            storage_stats.count_error(self.kind, "put")
            raise StorageUnavailable(
                f"S3 stored {name} with another MD5 than the {len(data)} bytes sent."
            )
        storage_stats.count_bytes(self.kind, "written", len(data))
        return True

    def get(self, name: str) -> bytes:
        return self.get_with_time(name)[0]

    def get_with_time(self, name: str) -> tuple[bytes, float]:
        answer = self._call(
            "get", self.client.get_object, Bucket=self.bucket, Key=self.prefix + name
        )
        data = self._call("get", answer["Body"].read)
        storage_stats.count_bytes(self.kind, "read", len(data))
        return data, _timestamp(answer.get("LastModified"))

    def open(self, name: str, start: int = 0, length: int | None = None) -> ObjectStream:
        """The object's bytes from `start` (`length` of them, else to its end), as chunks."""
        if length == 0:  # an empty range is not a valid Range header: no call needed
            found = self.stat(name)
            if found is None:
                raise ObjectMissing(name)
            return ObjectStream(found.size, found.modified, start, 0, iter(()))
        extra = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            extra["Range"] = f"bytes={start}-{end}"
        answer = self._call(
            "get", self.client.get_object, Bucket=self.bucket, Key=self.prefix + name, **extra
        )
        body = answer["Body"]
        size = _total_from_content_range(answer.get("ContentRange")) or answer["ContentLength"]
        return ObjectStream(
            size,
            _timestamp(answer.get("LastModified")),
            start,
            answer["ContentLength"],
            _counted(self, body.iter_chunks(STREAM_CHUNK_BYTES)),
            body.close,
        )

    def stat(self, name: str) -> StoredObject | None:
        try:
            head = self._call(
                "stat", self.client.head_object, Bucket=self.bucket, Key=self.prefix + name
            )
        except ObjectMissing:
            return None
        return StoredObject(
            name,
            head["ContentLength"],
            head["LastModified"].timestamp(),
            (head.get("Metadata") or {}).get("sha256"),
        )

    def delete(self, name: str) -> None:
        self._call("delete", self.client.delete_object, Bucket=self.bucket, Key=self.prefix + name)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        found: list[StoredObject] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(
                "list",
                self.client.list_objects_v2,
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                **extra,
            )
            for item in page.get("Contents", []):
                found.append(
                    StoredObject(
                        item["Key"][len(self.prefix) :],
                        item["Size"],
                        item["LastModified"].timestamp(),
                    )
                )
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
        yield from sorted(found, key=lambda item: item.name)

    def sign(self, name: str, response: SignedResponse, expiry: datetime) -> str:
        """A presigned GET of this one object, valid until `expiry` (at least one second:
        SigV4 counts from the moment of signing)."""
        params = {
            "Bucket": self.bucket,
            "Key": self.prefix + name,
            "ResponseContentType": response.content_type,
        }
        if response.disposition:
            params["ResponseContentDisposition"] = response.disposition
        if response.cache_control:
            params["ResponseCacheControl"] = response.cache_control
        seconds = max(1, int((expiry - datetime.now(UTC)).total_seconds()))
        return self._call(
            "sign",
            self.client.generate_presigned_url,
            ClientMethod="get_object",
            Params=params,
            ExpiresIn=seconds,
        )

    def signed_origin(self) -> str:
        # Presigning is local (no call): the origin of a URL for any key is that of them all.
        return _origin(self.sign("origin", SignedResponse("image/png"), datetime.now(UTC)))

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            storage_stats.count_error(self.kind, "check")
            raise ConfigError(
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: no S3 credentials were found "
                f"for bucket {self.bucket!r}."
            ) from None
        except ClientError as error:
            storage_stats.count_error(self.kind, "check")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (401, 403):
                raise ConfigError(
                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: S3 refused the credentials for "
                    f"bucket {self.bucket!r} (HTTP {status})."
                ) from None
            if status == 404:
                raise ConfigError(
                    f"ATELIER_STORAGE_URL: the bucket {self.bucket!r} does not exist "
                    "(create it, or fix the name)."
                ) from None
            raise ConfigError(
                f"ATELIER_STORAGE_URL: S3 answered HTTP {status} for bucket {self.bucket!r}."
            ) from None
        except BotoCoreError as error:
            storage_stats.count_error(self.kind, "check")
            raise ConfigError(
                f"ATELIER_STORAGE_URL / AWS_ENDPOINT_URL: S3 cannot be reached for {self.url} "
                f"({_first_line(error)})."
            ) from None


class _Exists(Exception):
    """A put with if_absent found the object there already."""


def _pool_size(settings: Mapping[str, Any]) -> int:
    """Connections to keep per storage host: one per worker thread, and room for requests."""
    threads = settings.get("ATELIER_WORKER_THREADS") or os.environ.get("ATELIER_WORKER_THREADS")
    try:
        return max(10, int(threads or 0) + 10)
    except ValueError:
        return 10


def _pooled_transport(size: int) -> Any:
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=4, pool_maxsize=size))
    return RequestsTransport(session=session, session_owner=True)


def _counted(store: AzureStore | S3Store, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """A streamed read's pieces, each counted as read; a failing service mid-stream raises
    StorageUnavailable (counted as a failed get) like any other call."""
    while True:
        piece = store._call("get", lambda: next(chunks, None))
        if piece is None:
            return
        storage_stats.count_bytes(store.kind, "read", len(piece))
        yield piece


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _total_from_content_range(value: str | None) -> int | None:
    """TOTAL of a Content-Range "bytes START-END/TOTAL" (None when absent or unknown)."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


# --- signed URLs --------------------------------------------------------------------------------


class SignedUrls:
    """Signed URLs of one store, the same URL for every request of one grid slot.

    Each expires at the grid point SIGNED_URL_LIFETIME_SECONDS after the start of the current
    SIGNED_URL_GRID_SECONDS slot (10 to 15 minutes ahead). Azure's SAS is a pure function of
    its fields, so it would repeat anyway; a SigV4 presigned URL carries its signing second, so
    the URLs of the current slot are kept here (bounded) to hand the same one out again."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._slot = -1
        self._urls: dict[tuple[str, SignedResponse], str] = {}

    def get(self, name: str, response: SignedResponse, now: float | None = None) -> tuple[str, int]:
        """(URL, seconds it stays valid) for `name`; StorageUnavailable when signing fails."""
        now = time.time() if now is None else now
        slot = int(now // SIGNED_URL_GRID_SECONDS)
        expires_at = slot * SIGNED_URL_GRID_SECONDS + SIGNED_URL_LIFETIME_SECONDS
        key = (name, response)
        with self._lock:
            if slot != self._slot:
                self._slot, self._urls = slot, {}
            url = self._urls.get(key)
        if url is None:
            url = self.store.sign(name, response, datetime.fromtimestamp(expires_at, UTC))
            with self._lock:
                if self._slot == slot and len(self._urls) < SIGNED_URLS_CACHED:
                    self._urls[key] = url
        return url, int(expires_at - now)


def open_store(url: str | None, root: Path, settings: Mapping[str, Any]) -> BlobStore:
    """The backend ATELIER_STORAGE_URL names (not yet checked: `check()`)."""
    if not url or url in ("file:", "file://"):
        return LocalStore(root)
    scheme = urlsplit(url).scheme
    if scheme == "az":
        return AzureStore(url, settings)
    if scheme == "s3":
        return S3Store(url, settings)
    raise ConfigError(
        f"ATELIER_STORAGE_URL={url!r}: use file: (the data folder), az://CONTAINER/PREFIX "
        "(Azure Blob Storage) or s3://BUCKET/PREFIX (S3-compatible)."
    )
