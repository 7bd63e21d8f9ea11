"""A loopback S3 for tests: moto's threaded server behind a real HTTP endpoint, driven by real boto3.

Use in a test module::

    from tests.fakes.s3 import moto_s3  # noqa: F401

    def test_something(moto_s3: str) -> None:   # moto_s3 is the endpoint URL, e.g. http://127.0.0.1:40123
        make_bucket(moto_s3, "my-bucket")

The server is started once per test session; every test should use its own bucket (``unique_bucket``).
Dummy credentials are exported for the whole session so no real AWS account can ever be reached.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


def start_server() -> tuple[Any, str]:
    """Start a moto server on a free loopback port; returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """The endpoint URL of a session-wide moto S3 server, with dummy AWS credentials in the environment."""
    from pipeline.storage.s3 import clear_client_cache

    with pytest.MonkeyPatch.context() as mp:
        for name, value in DUMMY_ENV.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("S3_ENDPOINT_URL", raising=False)
        clear_client_cache()  # clients built before carry other credentials
        server, endpoint = start_server()
        try:
            yield endpoint
        finally:
            server.stop()
            clear_client_cache()


def client(endpoint: str) -> Any:
    """A plain boto3 client for assertions made beside the code under test."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")


def make_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` on the moto server at ``endpoint``; returns the name."""
    client(endpoint).create_bucket(Bucket=name)
    return name


def unique_bucket(endpoint: str, stem: str = "test") -> str:
    """Create and return a fresh bucket, so tests sharing the session server never see each other's objects."""
    return make_bucket(endpoint, f"{stem}-{uuid.uuid4().hex[:12]}")


def seed_objects(bucket: str, keys: list[str], data: bytes = b"x") -> None:
    """Write many objects at once straight into the moto backend (the server runs in this process).

    Only for bulk fixtures (thousands of keys in well under a second, where 1,000 HTTP PUTs take ~8 s): the
    code under test still lists, reads and deletes them over HTTP.
    """
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(bucket, key, data)
