"""S3 (and S3-compatible) storage for ``STORAGE_URL=s3://bucket/prefix``.

- One boto3 client per process per (endpoint, region), built lazily under a lock and shared by all threads
  (boto3 clients are thread-safe; sessions are not, so each client is built from its own session).
- Objects are private: no ACL is ever set, pages see them through short-lived presigned URLs.
- Rows store ``s3://bucket/prefix/key``; ``get``/``delete``/``display_url`` accept such URIs or plain keys
  (relative to the storage prefix).
- Every boto3/botocore exception is wrapped in ``StorageError`` naming the operation, the object and the S3
  error code — never credentials, never a whole upstream body.
- Credentials come from boto3's standard chain (``AWS_*`` variables, shared config, instance roles);
  ``S3_ENDPOINT_URL`` (or the ``endpoint_url`` argument) selects a non-AWS endpoint such as MinIO or moto.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlparse

from pipeline.core.errors import ConfigError, StorageError
from pipeline.core.keys import content_type_for
from pipeline.storage.base import is_legacy_url

log = logging.getLogger(__name__)

T = TypeVar("T")

DELETE_BATCH = 1000  # the DeleteObjects limit
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 5  # in total, the first try included (botocore's "total_max_attempts")
MAX_POOL_CONNECTIONS = 32

_CLIENTS: dict[tuple[str | None, str | None], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _region_from_env() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def get_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """The process-wide S3 client for (endpoint, region): built once, reused by every storage and thread."""
    cache_key = (endpoint_url or None, region or None)
    client = _CLIENTS.get(cache_key)
    if client is not None:
        return client
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(cache_key)
        if client is None:
            client = _build_client(endpoint_url, region)
            _CLIENTS[cache_key] = client
    return client


def clear_client_cache() -> None:
    """Forget the cached clients (tests that change credentials or endpoints between cases)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


def _build_client(endpoint_url: str | None, region: str | None) -> Any:
    # deferred, here and below: boto3 and botocore take about half a second to import, which a process on local
    # storage never needs
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    s3_options: dict[str, Any] = {}
    if endpoint_url:
        # S3-compatible servers (MinIO, moto, Ceph) are addressed by path, not by bucket sub-domain.
        s3_options["addressing_style"] = "path"
    config = Config(
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        signature_version="s3v4",
        s3=s3_options or None,
    )
    try:
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)
    except ValueError as exc:  # e.g. a malformed endpoint URL
        raise ConfigError(f"S3_ENDPOINT_URL is not a valid endpoint URL: {exc}") from None
    except BotoCoreError as exc:
        raise StorageError(f"cannot create the S3 client: {type(exc).__name__}") from None


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code:
            return f"{code} (HTTP {status})" if status else str(code)
    return type(exc).__name__


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); the prefix is '' or ends with '/'."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"{url!r} is not an S3 URL: use s3://BUCKET or s3://BUCKET/PREFIX")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


class S3Storage:
    """Private objects below ``s3://bucket/prefix``; implements the ``Storage`` protocol."""

    remote = True

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, region: str | None = None):
        if not bucket:
            raise ConfigError("STORAGE_URL names no S3 bucket: use s3://BUCKET/PREFIX")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or None

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None) -> S3Storage:
        """Storage for ``s3://bucket/prefix``; the endpoint from the argument or ``S3_ENDPOINT_URL``."""
        bucket, prefix = parse_s3_url(url)
        endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
        return cls(bucket, prefix, endpoint_url=endpoint, region=_region_from_env())

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url!r})"

    @property
    def client(self) -> Any:
        return get_client(self.endpoint_url, self.region)

    # -- addressing ---------------------------------------------------------------------------------------

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key.lstrip('/')}"

    def _locate(self, uri: str) -> tuple[str, str]:
        """(bucket, full key) of a stored URI (``s3://bucket/key``) or of a key relative to the prefix."""
        if uri.startswith("s3://"):
            parsed = urlparse(uri)
            key = parsed.path.lstrip("/")
            if not parsed.netloc or not key:
                raise StorageError(f"not an S3 object URI: {uri!r}")
            return parsed.netloc, key
        if not uri or uri.endswith("/"):
            raise StorageError(f"not an object key: {uri!r}")
        return self.bucket, f"{self.prefix}{uri.lstrip('/')}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _build_client

        try:
            return fn()
        except (ClientError, BotoCoreError) as exc:
            code = _error_code(exc)
            log.warning("S3 %s failed: %s", what, code)
            raise StorageError(f"S3 {what} failed: {code}") from None

    # -- Storage protocol ---------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str | None = None) -> str:
        bucket, full_key = self._locate(key)
        ctype = content_type or content_type_for(key)
        self._call(
            f"put s3://{bucket}/{full_key}",
            lambda: self.client.put_object(Bucket=bucket, Key=full_key, Body=data, ContentType=ctype),
        )
        return f"s3://{bucket}/{full_key}"

    def get(self, uri: str) -> bytes:
        bucket, key = self._locate(uri)

        def read() -> bytes:
            response = self.client.get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

        return self._call(f"get s3://{bucket}/{key}", read)

    def head(self, uri: str) -> dict[str, Any]:
        """Metadata of one object (``ContentType``, ``ContentLength``, …)."""
        bucket, key = self._locate(uri)
        result: dict[str, Any] = self._call(
            f"head s3://{bucket}/{key}", lambda: self.client.head_object(Bucket=bucket, Key=key)
        )
        return result

    def delete(self, uri: str) -> None:
        bucket, key = self._locate(uri)
        self._call(f"delete s3://{bucket}/{key}", lambda: self.client.delete_object(Bucket=bucket, Key=key))

    def _iter_keys(self, full_prefix: str) -> Iterator[str]:
        """Every full key below ``full_prefix``, page by page (no 1,000-key cap)."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix, PaginationConfig={"PageSize": 1000}):
            for item in page.get("Contents") or ():
                yield item["Key"]

    def _list_full(self, full_prefix: str) -> list[str]:
        # The paginator fetches lazily: wrap the whole iteration, not only its creation.
        return self._call(f"list s3://{self.bucket}/{full_prefix}", lambda: list(self._iter_keys(full_prefix)))

    def list_keys(self, prefix: str) -> list[str]:
        """Keys below ``prefix`` (relative to the storage prefix), sorted."""
        full_prefix = f"{self.prefix}{prefix.lstrip('/')}"
        cut = len(self.prefix)
        return sorted(key[cut:] for key in self._list_full(full_prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object below ``prefix`` (e.g. one task's folder); returns how many were deleted.

        An empty prefix is refused: it would wipe the whole storage prefix (or bucket).
        """
        if not prefix.strip("/"):
            raise StorageError("refusing to delete an empty prefix (that would delete every stored object)")
        full_prefix = f"{self.prefix}{prefix.lstrip('/')}"
        keys = self._list_full(full_prefix)
        deleted = 0
        for start in range(0, len(keys), DELETE_BATCH):
            chunk = keys[start : start + DELETE_BATCH]
            errors = self._delete_chunk(full_prefix, chunk)
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 delete below s3://{self.bucket}/{full_prefix} failed for {len(errors)} object(s): "
                    f"{first.get('Code', 'error')} on {first.get('Key', '?')}"
                )
            deleted += len(chunk)
        return deleted

    def _delete_chunk(self, full_prefix: str, chunk: list[str]) -> list[dict[str, Any]]:
        """Delete up to 1,000 full keys in one request; returns the per-object errors S3 reported."""
        request = {"Objects": [{"Key": k} for k in chunk], "Quiet": True}
        response = self._call(
            f"delete below s3://{self.bucket}/{full_prefix}",
            lambda: self.client.delete_objects(Bucket=self.bucket, Delete=request),
        )
        return list(response.get("Errors") or [])

    def display_url(self, uri: str, expires_seconds: int = 300) -> str | None:
        """A presigned GET URL valid for ``expires_seconds`` (generated locally, no request is made)."""
        if is_legacy_url(uri):
            return uri
        bucket, key = self._locate(uri)
        url: str = self._call(
            f"presign s3://{bucket}/{key}",
            lambda: self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=int(expires_seconds)
            ),
        )
        return url

    # -- helpers ------------------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (tests and first-run setups)."""
        from botocore.exceptions import BotoCoreError, ClientError  # deferred: see _build_client

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc).split(" ")[0] not in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageError(f"S3 head bucket {self.bucket} failed: {_error_code(exc)}") from None
        except BotoCoreError as exc:  # connection refused, no credentials, …
            raise StorageError(f"S3 head bucket {self.bucket} failed: {type(exc).__name__}") from None
        params: dict[str, Any] = {"Bucket": self.bucket}
        region = self.region or self.client.meta.region_name
        if region and region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self._call(f"create bucket {self.bucket}", lambda: self.client.create_bucket(**params))
