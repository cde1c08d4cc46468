"""A real S3-compatible server for tests: moto in server mode (HTTP on 127.0.0.1).

    with moto_s3("bucket") as s3:
        with s3.environment():          # AWS_* variables for this process
            ... PLATFORM_STORAGE_URI=s3.uri ...

`S3Env.uri` is `s3://bucket/prefix` (the endpoint comes from the AWS variables; see
mlplatform.storage); `S3Env.uri_with_endpoint` carries the endpoint in its query string
instead, for code that cannot rely on this process's environment. `S3Env.keys(prefix)`
lists what the bucket holds, through boto3: the independent truth a test compares with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


@dataclass
class S3Env:
    bucket: str
    endpoint: str  # http://127.0.0.1:PORT
    prefix: str = "platform"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def uri_with_endpoint(self) -> str:
        return f"{self.uri}?endpoint_override={self.endpoint}&scheme=http&region={REGION}"

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix` (relative to the bucket), sorted."""
        found: list[str] = []
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:
            found += [o["Key"] for o in page.get("Contents", [])]
        return sorted(found)

    def get(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    @contextmanager
    def environment(self) -> Iterator[None]:
        """Set the AWS variables in this process for the block, then restore them."""
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextmanager
def moto_s3(bucket: str, prefix: str = "platform") -> Iterator[S3Env]:
    """Start moto's S3 server on a free port (tests.backends.S3Server, the same server the
    `--backends cluster` session runs), create `bucket`, yield how to reach it; stop it after.
    Needs `moto[server]` and `boto3` (the test extras)."""
    from tests.backends import S3Server

    server = S3Server.start()
    endpoint = server.endpoint
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": endpoint,
           "AWS_EC2_METADATA_DISABLED": "true"}
    s3 = S3Env(bucket=bucket, endpoint=endpoint, prefix=prefix, env=env)
    try:
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
