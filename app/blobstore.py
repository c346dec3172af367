"""Where stored objects live: the data folder, Azure Blob Storage or an S3-compatible service.

One small interface (`BlobStore`) with three backends, chosen by ATELIER_STORAGE_URL
(`open_store`): `file:` or unset (`LocalStore`, the data folder, today's layout and atomic
writes), `az://CONTAINER/PREFIX` (`AzureStore`, azure-storage-blob) and `s3://BUCKET/PREFIX`
(`S3Store`, boto3). Names are the data folder's relative paths (`images/ab/<sha>.png`,
`thumbs/...`, `sidecars/...`, `previews/...`); an object store keeps them under PREFIX.

What `put` guarantees on every backend: when it returns, the whole object is stored and was
checked. The local backend writes a temporary file, fsyncs and renames it. The object backends
send the bytes with their MD5 (Content-MD5, which both services verify before they accept the
upload, so a torn or altered body is refused) and the sha256 as metadata, then read the
object's properties back and compare its size, its MD5 (Azure: the stored Content-MD5; S3:
the ETag, which is the MD5 of a single-part upload without SSE-KMS) and the sha256 metadata.
A mismatch deletes the damaged object and raises `StorageUnavailable`, so the row that would
point at it never commits.

Failures are sorted in two: `ObjectMissing` (a FileNotFoundError: there is no such object)
and `StorageUnavailable` (unreachable, timed out, refused with 403 or a 5xx, or a check that
failed): the caller waits and retries (app.jobs.store_downloaded). `check()` makes one cheap
call at start-up and raises ConfigError naming the setting that is wrong.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from app.config import ConfigError

TEMP_PREFIX = ".tmp-"
# Object services: a few quick attempts per call; the job-level retry (with backoff, inside the
# job's deadline) handles longer outages, so a call never hangs a worker for minutes.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
CALL_ATTEMPTS = 2


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


class BlobStore(Protocol):
    """The few operations Atelier needs from a place that keeps objects."""

    url: str  # for reports: the folder or the container/bucket and prefix
    local: bool  # True for the data folder (files there have paths)

    def put(self, name: str, data: bytes, content_type: str | None = None) -> None: ...
    def get(self, name: str) -> bytes: ...
    def get_with_time(self, name: str) -> tuple[bytes, float]: ...
    def stat(self, name: str) -> StoredObject | None: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str) -> Iterator[StoredObject]: ...
    def check(self) -> None: ...


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

    def put(self, name: str, data: bytes, content_type: str | None = None) -> None:
        write_atomically(self.path(name), data)

    def get(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
            raise ObjectMissing(name) from None

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

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        from azure.storage.blob import BlobServiceClient

        self.container_name, self.prefix = _split(url, "az")
        self.url = url
        options = {
            "connection_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "retry_total": CALL_ATTEMPTS - 1,
            "retry_backoff_factor": 0.2,
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
        self.container = service.get_container_client(self.container_name)

    def _call(self, action: Any, *args: Any, **kwargs: Any) -> Any:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            return action(*args, **kwargs)
        except ResourceNotFoundError:
            raise ObjectMissing(args[0] if args else "") from None
        except AzureError as error:
            status = getattr(error, "status_code", None)
            raise StorageUnavailable(
                f"Azure Blob Storage ({self.url}) failed"
                f"{f' with HTTP {status}' if status else ''}: {_first_line(error)}"
            ) from None

    def put(self, name: str, data: bytes, content_type: str | None = None) -> None:
        from azure.storage.blob import ContentSettings

        md5, sha = _md5(data), hashlib.sha256(data).hexdigest()
        key = self.prefix + name
        # validate_content sends the transactional Content-MD5, which the service checks
        # against the body it received; content_md5 keeps it as the blob's property.
        self._call(
            self.container.upload_blob,
            key,
            data,
            overwrite=True,
            validate_content=True,
            metadata={"sha256": sha},
            content_settings=ContentSettings(content_type=content_type, content_md5=md5),
        )
        properties = self._call(self.container.get_blob_client(key).get_blob_properties)
        stored_md5 = properties.content_settings.content_md5
        if (
            properties.size != len(data)
            or (stored_md5 is not None and bytes(stored_md5) != md5)
            or (properties.metadata or {}).get("sha256") != sha
        ):
            # A damaged blob must not stay under a content address: remove it.
            with contextlib.suppress(StorageUnavailable, ObjectMissing):
                self._call(self.container.delete_blob, key)
            raise StorageUnavailable(
                f"Azure Blob Storage stored {name} as {properties.size} bytes with other "
                f"checksums than the {len(data)} bytes sent."
            )

    def get(self, name: str) -> bytes:
        return self.get_with_time(name)[0]

    def get_with_time(self, name: str) -> tuple[bytes, float]:
        downloader = self._call(self.container.download_blob, self.prefix + name)
        data = self._call(downloader.readall)
        return data, _timestamp(downloader.properties.last_modified)

    def stat(self, name: str) -> StoredObject | None:
        try:
            properties = self._call(
                self.container.get_blob_client(self.prefix + name).get_blob_properties
            )
        except ObjectMissing:
            return None
        return StoredObject(name, properties.size, properties.last_modified.timestamp())

    def delete(self, name: str) -> None:
        with contextlib.suppress(ObjectMissing):
            self._call(self.container.delete_blob, self.prefix + name)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        listing = self._call(self.container.list_blobs, name_starts_with=self.prefix + prefix)
        found = [
            StoredObject(blob.name[len(self.prefix) :], blob.size, _timestamp(blob.last_modified))
            for blob in self._iterate(listing)
        ]
        yield from sorted(found, key=lambda item: item.name)

    def _iterate(self, listing: Any) -> list[Any]:
        return self._call(list, listing)

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
            raise ConfigError(
                f"ATELIER_STORAGE_URL: the container {self.container_name!r} does not exist in "
                "this storage account (create it, or fix the name)."
            ) from None
        except (ClientAuthenticationError, HttpResponseError) as error:
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
            raise ConfigError(
                f"ATELIER_STORAGE_URL: Azure Blob Storage cannot be reached for "
                f"{self.url} ({_first_line(error)})."
            ) from None


# --- S3-compatible ------------------------------------------------------------------------------


class S3Store:
    """Objects in one bucket (boto3), under a prefix."""

    local = False

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
            # Guess: S3-compatible servers on their own endpoint (MinIO, moto, Ceph) want
            # path-style URLs; AWS itself works with either.
            s3={"addressing_style": "path" if endpoint else "auto"},
        )
        session = boto3.session.Session(
            aws_access_key_id=settings.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=settings.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=settings.get("AWS_SESSION_TOKEN") or None,
            region_name=settings.get("AWS_REGION") or None,
        )
        self.client = session.client("s3", endpoint_url=endpoint, config=config)

    def _call(self, action: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action(**kwargs)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ObjectMissing(kwargs.get("Key", "")) from None
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise StorageUnavailable(
                f"S3 ({self.url}) failed with HTTP {status} {code}: {_first_line(error)}"
            ) from None
        except BotoCoreError as error:
            raise StorageUnavailable(f"S3 ({self.url}) failed: {_first_line(error)}") from None

    def put(self, name: str, data: bytes, content_type: str | None = None) -> None:
        md5, sha = _md5(data), hashlib.sha256(data).hexdigest()
        key = self.prefix + name
        extra = {"ContentType": content_type} if content_type else {}
        self._call(
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(md5).decode("ascii"),
            Metadata={"sha256": sha},
            **extra,
        )
        head = self._call(self.client.head_object, Bucket=self.bucket, Key=key)
        etag = str(head.get("ETag", "")).strip('"')
        # A multipart or SSE-KMS ETag is not an MD5 (it has a dash or differs in form): then
        # the size and the sha256 metadata are what is compared.
        md5_etag = len(etag) == 32 and "-" not in etag
        if (
            head.get("ContentLength") != len(data)
            or (md5_etag and etag != md5.hex())
            or head.get("Metadata", {}).get("sha256") != sha
        ):
            # A damaged object must not stay under a content address: remove it.
            with contextlib.suppress(StorageUnavailable, ObjectMissing):
                self._call(self.client.delete_object, Bucket=self.bucket, Key=key)
            raise StorageUnavailable(
                f"S3 stored {name} as {head.get('ContentLength')} bytes with other checksums "
                f"than the {len(data)} bytes sent."
            )

    def get(self, name: str) -> bytes:
        return self.get_with_time(name)[0]

    def get_with_time(self, name: str) -> tuple[bytes, float]:
        answer = self._call(self.client.get_object, Bucket=self.bucket, Key=self.prefix + name)
        return self._call(answer["Body"].read), _timestamp(answer.get("LastModified"))

    def stat(self, name: str) -> StoredObject | None:
        try:
            head = self._call(self.client.head_object, Bucket=self.bucket, Key=self.prefix + name)
        except ObjectMissing:
            return None
        return StoredObject(name, head["ContentLength"], head["LastModified"].timestamp())

    def delete(self, name: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.prefix + name)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        found: list[StoredObject] = []
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(
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

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise ConfigError(
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: no S3 credentials were found "
                f"for bucket {self.bucket!r}."
            ) from None
        except ClientError as error:
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
            raise ConfigError(
                f"ATELIER_STORAGE_URL / AWS_ENDPOINT_URL: S3 cannot be reached for {self.url} "
                f"({_first_line(error)})."
            ) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


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
