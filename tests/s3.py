"""A real S3 endpoint on 127.0.0.1 for tests and benchmarks: moto's standalone server.

``S3Server`` starts ``moto.server.ThreadedMotoServer`` on a free port of 127.0.0.1,
creates an IAM user allowed ``s3:*`` with an access key, a bucket, and then turns
moto's request authentication on (``/moto-api/reset-auth``): from then on every
request must be signed with that key, so missing or wrong credentials are refused
the way a real S3 refuses them. ``env`` holds the standard AWS variables a client
needs (endpoint, key, secret, region).
"""

from __future__ import annotations

import json
import logging
import os

BUCKET = "evalcluster"
REGION = "us-east-1"
_BOOTSTRAP = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}


class S3Server:
    """moto's S3 (and IAM) on 127.0.0.1 with authentication enforced; ``env`` to reach it."""

    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.server = None
        self.endpoint = ""
        self.access_key = self.secret_key = ""

    def start(self) -> S3Server:
        import httpx
        from moto.server import ThreadedMotoServer

        # The server's own request log, not evalctl's output: one line per request at INFO, and
        # moto answers an unsigned request (no credentials) with a KeyError traceback at ERROR.
        # In-process CLI tests read this process's stderr, so the server keeps quiet there.
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        iam = self._client("iam", **_BOOTSTRAP)
        iam.create_user(UserName="evalcluster")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="evalcluster", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="evalcluster")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self._client("s3", **_BOOTSTRAP).create_bucket(Bucket=self.bucket)
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables for this endpoint and key (metadata lookups off: no EC2 here)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self):
        """A boto3 S3 client with the test user's key."""
        return self._client("s3", aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def _client(self, service: str, **creds):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **creds)

    def upload(self, path: str | os.PathLike, key: str) -> str:
        """Put a local file at ``key``; returns its s3:// URI."""
        self.client().upload_file(str(path), self.bucket, key)
        return f"s3://{self.bucket}/{key}"

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=data)
