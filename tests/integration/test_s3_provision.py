"""``heartbeat s3 provision``: the bucket, and a user allowed that bucket alone, made with MinIO's root key.

The bucket is made on this suite's S3 store (moto, or the MinIO of HEARTBEAT_TEST_S3_*); MinIO's admin
API (users and policies) has no stand-in here, so the admin side is a recorder that answers as MinIO
does, a policy attached twice included.
"""

from __future__ import annotations

from typing import Any

import pytest
from minio.error import MinioAdminException

from heartbeat.storage.provision import ALREADY_ATTACHED, bucket_policy, policy_name, provision
from helpers import heartbeat


class RecordingAdmin:
    """MinioAdmin's user and policy calls, remembered; attaching an attached policy fails as MinIO's does."""

    def __init__(self, refuse: str | None = None) -> None:
        self.users: dict[str, str] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.attached: dict[str, set[str]] = {}
        self.refuse = refuse

    def user_add(self, access_key: str, secret_key: str) -> str:
        self.users[access_key] = secret_key
        return ""

    def policy_add(self, policy_name: str, policy_file: None = None, policy: dict[str, Any] | None = None) -> str:
        assert policy is not None
        self.policies[policy_name] = policy
        return ""

    def attach_policy(self, policies: list[str], user: str | None = None, group: str | None = None) -> str:
        if self.refuse:
            raise MinioAdminException("400", f'{{"Code":"{self.refuse}"}}')
        assert user is not None and set(policies) <= set(self.policies)
        if set(policies) <= self.attached.get(user, set()):
            raise MinioAdminException("400", f'{{"Code":"{ALREADY_ATTACHED}","Message":"already applied"}}')
        self.attached.setdefault(user, set()).update(policies)
        return ""


def test_provisioning_makes_the_bucket_and_a_user_limited_to_it_and_a_second_time_changes_nothing(
    s3_service, s3_bucket
):
    client, admin = s3_service.client(), RecordingAdmin()
    for secret in ("first-secret-0123456789", "rotated-secret-0123456789"):
        provision(client, admin, bucket=s3_bucket, user="heartbeat-api", secret=secret, region="us-east-1")
    assert client.bucket_exists(s3_bucket)
    assert admin.users == {"heartbeat-api": "rotated-secret-0123456789"}  # the secret in .env wins
    assert admin.attached == {"heartbeat-api": {policy_name(s3_bucket)}}
    statements = admin.policies[policy_name(s3_bucket)]["Statement"]
    resources = {resource for statement in statements for resource in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{s3_bucket}", f"arn:aws:s3:::{s3_bucket}/*"}  # that bucket, nothing else
    assert all(statement["Effect"] == "Allow" for statement in statements)
    actions = {action for statement in statements for action in statement["Action"]}
    assert not any(action.startswith("admin:") or action == "s3:*" for action in actions)
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions


def test_a_refusal_other_than_already_attached_stops_provisioning(s3_service, s3_bucket):
    admin = RecordingAdmin(refuse="XMinioAdminNoSuchUser")
    with pytest.raises(MinioAdminException, match="NoSuchUser"):
        provision(s3_service.client(), admin, bucket=s3_bucket, user="u", secret="s" * 20, region="us-east-1")


def test_the_policy_names_only_its_bucket():
    assert {r for s in bucket_policy("images")["Statement"] for r in s["Resource"]} == {
        "arn:aws:s3:::images",
        "arn:aws:s3:::images/*",
    }


def test_the_command_says_what_it_is_missing_and_that_the_store_does_not_answer():
    missing = heartbeat(
        "s3", "provision", "--root-access-key-from-env", "ROOT_USER", "--root-secret-key-from-env", "ROOT_PASSWORD"
    )
    assert missing.returncode == 2
    assert "HEARTBEAT_STORAGE" in missing.stderr and "ROOT_USER" in missing.stderr
    env = {
        "HEARTBEAT_STORAGE": "s3://images",
        "HEARTBEAT_S3_ENDPOINT": "http://127.0.0.1:9",  # nothing listens on the discard port
        "HEARTBEAT_S3_ACCESS_KEY": "heartbeat-api",
        "HEARTBEAT_S3_SECRET_KEY": "s" * 20,
        "ROOT_USER": "root",
        "ROOT_PASSWORD": "r" * 20,
    }
    args = ("s3", "provision", "--root-access-key-from-env", "ROOT_USER", "--root-secret-key-from-env", "ROOT_PASSWORD")
    unanswered = heartbeat(*args, env=env, timeout=120)
    assert unanswered.returncode == 1, unanswered.stderr
    assert "did not answer" in unanswered.stderr and "Traceback" not in unanswered.stderr
