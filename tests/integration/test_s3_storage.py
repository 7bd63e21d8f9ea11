"""S3Storage against a moto server over real HTTP with real boto3 (no patching)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from pipeline.core.errors import PipelineError, StorageError
from pipeline.storage import open_storage
from pipeline.storage.s3 import S3Storage, get_client, parse_s3_url
from tests.fakes.s3 import client, moto_s3, seed_objects, unique_bucket  # noqa: F401

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-bytes" * 50
PNG = b"\x89PNG\r\n\x1a\n" + b"png-bytes" * 50


@pytest.fixture
def storage(moto_s3: str) -> S3Storage:  # noqa: F811
    bucket = unique_bucket(moto_s3)
    return S3Storage(bucket, "media", endpoint_url=moto_s3, region="us-east-1")


def put_many(storage: S3Storage, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: storage.put(k, b"x", "image/jpeg"), keys))


def test_parse_url() -> None:
    assert parse_s3_url("s3://bucket") == ("bucket", "")
    assert parse_s3_url("s3://bucket/") == ("bucket", "")
    assert parse_s3_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    with pytest.raises(PipelineError):
        parse_s3_url("http://bucket/a")


def test_put_get_round_trip_with_content_type(storage: S3Storage, moto_s3: str) -> None:  # noqa: F811
    uri = storage.put("task1/b001-s01/base.jpg", JPEG)
    assert uri == f"s3://{storage.bucket}/media/task1/b001-s01/base.jpg"
    png_uri = storage.put("task1/b001-s01/base.png", PNG)
    explicit = storage.put("task1/b001-s01/blob.bin", b"raw", "application/x-custom")

    assert storage.get(uri) == JPEG
    assert storage.get("task1/b001-s01/base.jpg") == JPEG  # a plain key, relative to the prefix
    assert storage.get(png_uri) == PNG

    s3 = client(moto_s3)
    head = s3.head_object(Bucket=storage.bucket, Key="media/task1/b001-s01/base.jpg")
    assert head["ContentType"] == "image/jpeg"
    assert head["ContentLength"] == len(JPEG)
    head = s3.head_object(Bucket=storage.bucket, Key="media/task1/b001-s01/base.png")
    assert head["ContentType"] == "image/png"
    assert storage.head(explicit)["ContentType"] == "application/x-custom"

    storage.delete(uri)
    with pytest.raises(StorageError):
        storage.get(uri)
    storage.delete(uri)  # deleting a missing object is not an error (as S3 itself)


def test_objects_are_private(storage: S3Storage, moto_s3: str) -> None:  # noqa: F811
    uri = storage.put("task2/img.jpg", JPEG)
    anonymous = requests.get(f"{moto_s3}/{storage.bucket}/media/task2/img.jpg", timeout=10)
    assert anonymous.status_code == 403
    assert JPEG not in anonymous.content

    acl = client(moto_s3).get_object_acl(Bucket=storage.bucket, Key="media/task2/img.jpg")
    grantees = [g["Grantee"].get("URI", "") for g in acl["Grants"]]
    assert not any("AllUsers" in g or "AuthenticatedUsers" in g for g in grantees)
    assert storage.get(uri) == JPEG


def test_presigned_url_serves_the_bytes(storage: S3Storage) -> None:
    uri = storage.put("task3/img01.jpg", JPEG)
    url = storage.display_url(uri, expires_seconds=60)
    assert url is not None
    assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == JPEG
    assert response.headers["Content-Type"] == "image/jpeg"
    # a plain key works as well, and legacy public URLs pass through untouched
    assert requests.get(storage.display_url("task3/img01.jpg") or "", timeout=10).content == JPEG
    assert storage.display_url("https://example.com/a.jpg") == "https://example.com/a.jpg"


def test_list_and_delete_prefix_beyond_1000_objects(storage: S3Storage, moto_s3: str) -> None:  # noqa: F811
    doomed = [f"abc/b{i // 10:03d}-s{i % 10:02d}/img.jpg" for i in range(1050)]
    sibling = [f"abcd/b001-s{i:02d}/img.jpg" for i in range(7)]  # shares the string prefix, not the folder
    other = [f"xyz/b001-s{i:02d}/img.jpg" for i in range(5)]
    # 150 uploads through S3Storage from 16 threads (one shared client); the bulk seeded directly for speed.
    put_many(storage, doomed[:100] + sibling + other + doomed[-50:])
    seed_objects(storage.bucket, [f"media/{k}" for k in doomed[100:-50]])
    outside = S3Storage(storage.bucket, "elsewhere", endpoint_url=moto_s3, region="us-east-1")
    outside.put("abc/b000-s00/img.jpg", b"keep me")  # same relative key, another storage prefix

    listed = storage.list_keys("abc/")
    assert len(listed) == 1050
    assert listed == sorted(doomed)  # relative to the storage prefix, all pages
    assert len(storage.list_keys("")) == 1050 + 7 + 5

    assert storage.delete_prefix("abc/") == 1050
    assert storage.list_keys("abc/") == []
    assert storage.list_keys("abcd/") == sorted(sibling)
    assert storage.list_keys("xyz/") == sorted(other)
    assert outside.get("abc/b000-s00/img.jpg") == b"keep me"
    assert storage.delete_prefix("abc/") == 0

    with pytest.raises(StorageError, match="empty prefix"):
        storage.delete_prefix("")


def test_errors_are_wrapped(moto_s3: str) -> None:  # noqa: F811
    missing_bucket = S3Storage("no-such-bucket-here", "p", endpoint_url=moto_s3, region="us-east-1")
    for action in (
        lambda: missing_bucket.put("k.jpg", b"x"),
        lambda: missing_bucket.get("k.jpg"),
        lambda: missing_bucket.list_keys("a/"),
        lambda: missing_bucket.delete_prefix("a/"),
    ):
        with pytest.raises(StorageError) as info:
            action()
        message = str(info.value)
        assert "NoSuchBucket" in message
        assert "no-such-bucket-here" in message
        assert "testing" not in message  # never credentials

    bucket = unique_bucket(moto_s3)
    store = S3Storage(bucket, "", endpoint_url=moto_s3, region="us-east-1")
    with pytest.raises(StorageError, match="NoSuchKey") as info:
        store.get(f"s3://{bucket}/nope.jpg")
    assert info.value.__cause__ is None  # no botocore exception chained into pages
    with pytest.raises(StorageError):
        store.get("")


def test_one_client_per_endpoint_and_region(storage: S3Storage, moto_s3: str) -> None:  # noqa: F811
    other = S3Storage(storage.bucket, "other", endpoint_url=moto_s3, region="us-east-1")
    assert storage.client is other.client
    assert get_client(moto_s3, "us-east-1") is storage.client

    seen: list[object] = []
    lock = threading.Lock()

    def grab() -> None:
        c = get_client(moto_s3, "us-east-1")
        with lock:
            seen.append(c)

    threads = [threading.Thread(target=grab) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(c is storage.client for c in seen)
    assert get_client(moto_s3, "eu-west-1") is not storage.client  # another region, another client

    config = storage.client.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert config.max_pool_connections == 32
    assert config.connect_timeout and config.read_timeout


def test_open_storage_end_to_end(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bucket = unique_bucket(moto_s3)
    store = open_storage(f"s3://{bucket}/pre", endpoint_url=moto_s3)
    assert isinstance(store, S3Storage)
    uri = store.put("t1/base.webp", b"RIFF....WEBP")
    assert uri == f"s3://{bucket}/pre/t1/base.webp"
    assert store.get(uri) == b"RIFF....WEBP"
    assert store.list_keys("t1/") == ["t1/base.webp"]
    assert store.delete_prefix("t1/") == 1

    monkeypatch.setenv("S3_ENDPOINT_URL", moto_s3)  # the endpoint may come from the environment instead
    from_env = S3Storage.from_url(f"s3://{bucket}/pre")
    assert from_env.endpoint_url == moto_s3
    assert from_env.list_keys("") == []


def test_ensure_bucket_creates_once(moto_s3: str) -> None:  # noqa: F811
    store = S3Storage("made-by-ensure-bucket", "x", endpoint_url=moto_s3, region="us-east-1")
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    assert store.get(store.put("a.jpg", JPEG)) == JPEG
