"""A MinIO bucket and a user limited to it, made with the store's root credentials (``heartbeat s3 provision``).

The API then works with that user's key, which can read and write the objects of its one bucket and
nothing else: no other bucket, no administration. Every step changes nothing when it was done already,
and the user's secret is set again each time, so a new secret in ``.env`` replaces the old one.
Talks MinIO's admin API (the ``minio`` package's MinioAdmin); other S3 stores have their own IAM.
"""

from __future__ import annotations

from typing import Any, Protocol

from minio import Minio, MinioAdmin
from minio.credentials.providers import StaticProvider
from minio.error import MinioAdminException

# What the API does with its bucket: check it exists, list it (heartbeat check), and read, write, delete
# and presign its objects, multipart uploads included.
BUCKET_ACTIONS = ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
ALREADY_ATTACHED = "XMinioAdminPolicyChangeAlreadyApplied"


class Admin(Protocol):
    """The part of MinioAdmin that provisioning uses."""

    def user_add(self, access_key: str, secret_key: str) -> str: ...
    def policy_add(self, policy_name: str, policy_file: None = None, policy: dict[str, Any] | None = None) -> str: ...
    def attach_policy(self, policies: list[str], user: str | None = None, group: str | None = None) -> str: ...


def bucket_policy(bucket: str) -> dict[str, Any]:
    """An IAM policy document allowing BUCKET_ACTIONS on ``bucket`` and OBJECT_ACTIONS on its objects, only."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": list(BUCKET_ACTIONS), "Resource": [f"arn:aws:s3:::{bucket}"]},
            {"Effect": "Allow", "Action": list(OBJECT_ACTIONS), "Resource": [f"arn:aws:s3:::{bucket}/*"]},
        ],
    }


def policy_name(bucket: str) -> str:
    return f"heartbeat-{bucket}"


def provision(client: Minio, admin: Admin, *, bucket: str, user: str, secret: str, region: str) -> None:
    """Make ``bucket`` (if missing) and ``user`` with ``secret``, allowed :func:`bucket_policy` alone.

    ``client`` and ``admin`` act with the root credentials. Raises MinioException or MinioAdminException
    when the store refuses a step (a secret MinIO finds too short, wrong root credentials).
    """
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket, location=region)
    admin.user_add(user, secret)
    admin.policy_add(policy_name(bucket), policy=bucket_policy(bucket))
    try:
        admin.attach_policy([policy_name(bucket)], user=user)
    except MinioAdminException as error:
        if ALREADY_ATTACHED not in str(error):
            raise


def minio_clients(endpoint: str, secure: bool, *, access_key: str, secret_key: str, region: str) -> tuple[Minio, Admin]:
    """An S3 client and an admin client for ``endpoint`` (``host:port``), both with the given (root) key."""
    client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
    admin = MinioAdmin(
        endpoint=endpoint, credentials=StaticProvider(access_key, secret_key), region=region, secure=secure
    )
    return client, admin
