"""Masking with the real clients: a secret never reaches the agent, the recording, the audit log
or the daemon's log, and the changed answers still pass the SDKs' integrity checks."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, AuditLog, PolicyControl, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def session_of(audit: AuditLog, mark: int, action: str) -> str:
    """The session of the first audit line after `mark` for `action` (bare name)."""
    lines = audit.wait_for(mark, lambda line: harness.audit_action_name(line) == action, action)
    return lines[0]["session"]


def test_cli_get_secret_value_returns_the_marker_and_no_record_holds_the_secret(
        agents: Agents, alice_token_file: Path, audit: AuditLog, world: World, daemon):
    secret = f"hunter2-SECRET-{uuid.uuid4().hex[:8]}"
    name = f"e2e/records/{uuid.uuid4().hex[:8]}"
    mark = audit.mark()
    log_mark = len(harness.log_lines(daemon.process.stderr))

    created = agents.aws(alice_token_file, "secretsmanager", "create-secret", "--name", name,
                         "--secret-string", secret)
    fetched = agents.aws(alice_token_file, "secretsmanager", "get-secret-value",
                         "--secret-id", name)

    assert created.returncode == 0, describe(created)
    assert fetched.returncode == 0, describe(fetched)
    answer = json.loads(fetched.stdout)
    assert answer["SecretString"] == harness.MASK_MARKER
    assert answer["Name"] == name, "only the secret is masked, not its name"
    assert secret not in fetched.stdout + fetched.stderr

    sessions = {session_of(audit, mark, "CreateSecret"), session_of(audit, mark, "GetSecretValue")}
    for session in sessions:
        recording = harness.recording_path(world, session)
        text = recording.read_text()
        kinds = [entry["kind"] for entry in harness.read_recording(world, session)]
        assert "exchange" in kinds, f"{recording} has no exchange: {kinds}"
        assert secret not in text, f"{recording} holds the secret"
    assert secret not in world.audit_log.read_text()
    assert not [line for line in harness.log_lines(daemon.process.stderr)[log_mark:]
                if secret in line], "the daemon's log holds the secret"


#: A boto3 agent: `put` creates the table and the item, `get` reads it back with retries off, so
#: a wrong x-amz-crc32 (botocore retries those, then raises) fails the call at once.
DYNAMODB_AGENT = """
import json, sys
import boto3
from botocore.config import Config
table, password = sys.argv[2], sys.argv[3]
client = boto3.client("dynamodb", config=Config(retries={"total_max_attempts": 1}))
if sys.argv[1] == "put":
    client.create_table(TableName=table,
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        BillingMode="PAY_PER_REQUEST")
    client.put_item(TableName=table, Item={"k": {"S": "db"}, "password": {"S": password},
                                           "port": {"N": "5432"}})
    print(json.dumps({"put": True}))
else:
    answer = client.get_item(TableName=table, Key={"k": {"S": "db"}})
    print(json.dumps({"item": answer["Item"],
                      "attempts": answer["ResponseMetadata"]["RetryAttempts"],
                      "crc32": answer["ResponseMetadata"]["HTTPHeaders"].get("x-amz-crc32")}))
"""

MASK_GET_ITEM_POLICY = """\
default = "allow"

[[mask]]
actions = ["dynamodb:GetItem"]
fields = ["password"]
"""


def test_masked_dynamodb_item_passes_the_sdk_crc32_check(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, audit: AuditLog,
        world: World):
    table, password = f"e2e-records-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"

    def agent(step: str) -> dict:
        result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", DYNAMODB_AGENT, step,
                                               table, password])
        assert result.returncode == 0, describe(result)
        return json.loads(result.stdout.strip().splitlines()[-1])

    agent("put")
    unmasked = agent("get")
    policy.install(MASK_GET_ITEM_POLICY)
    mark = audit.mark()
    masked = agent("get")

    assert unmasked["item"]["password"] == {"S": password}, "no mask yet: the value passes"
    assert masked["attempts"] == 0, "botocore retried: the CRC32 did not match the body"
    assert masked["item"]["password"] == {"S": harness.MASK_MARKER}
    assert masked["item"]["k"] == {"S": "db"} and masked["item"]["port"] == {"N": "5432"}
    assert masked["crc32"], "moto sends x-amz-crc32: the gateway must send a fixed one"
    session = session_of(audit, mark, "GetItem")
    assert password not in harness.recording_path(world, session).read_text()


def test_cli_ssm_secure_string_is_masked_and_a_plain_string_is_not(
        agents: Agents, alice_token_file: Path, audit: AuditLog, world: World):
    secret = f"ssm-SECRET-{uuid.uuid4().hex[:8]}"
    prefix = f"/e2e/records/{uuid.uuid4().hex[:8]}"
    mark = audit.mark()

    put_secret = agents.aws(alice_token_file, "ssm", "put-parameter", "--name", f"{prefix}/pw",
                            "--type", "SecureString", "--value", secret)
    put_plain = agents.aws(alice_token_file, "ssm", "put-parameter", "--name",
                           f"{prefix}/host", "--type", "String", "--value", "db.internal")
    one = agents.aws(alice_token_file, "ssm", "get-parameter", "--name", f"{prefix}/pw",
                     "--with-decryption")
    by_path = agents.aws(alice_token_file, "ssm", "get-parameters-by-path", "--path", prefix,
                         "--with-decryption")

    for result in (put_secret, put_plain, one, by_path):
        assert result.returncode == 0, describe(result)
    assert json.loads(one.stdout)["Parameter"]["Value"] == harness.MASK_MARKER
    values = {p["Name"]: p["Value"] for p in json.loads(by_path.stdout)["Parameters"]}
    assert values == {f"{prefix}/pw": harness.MASK_MARKER, f"{prefix}/host": "db.internal"}
    # The last call's line is the barrier: the audit writer keeps order.
    session_of(audit, mark, "GetParametersByPath")
    sessions = {line["session"] for line in audit.since(mark) if line.get("session")}
    assert len(sessions) >= 4, sessions  # plus session events of earlier agents
    for session in sessions:
        assert secret not in harness.recording_path(world, session).read_text(), session
    assert secret not in world.audit_log.read_text()
