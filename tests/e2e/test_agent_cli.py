"""The unmodified AWS CLI as an agent: it reaches moto only through the gateway, as the role."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness
from harness import Agents, Moto, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def aws_json(agents: Agents, token_file: Path, *args: str) -> dict:
    result = agents.aws(token_file, *args)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout) if result.stdout.strip() else {}


def test_caller_identity_is_the_assumed_role(agents: Agents, alice_token_file: Path, moto: Moto):
    identity = aws_json(agents, alice_token_file, "sts", "get-caller-identity")

    assert identity["Account"] == "123456789012"
    assert ":assumed-role/agent/" in identity["Arn"], identity


def test_ec2_run_instances_then_describe_shows_it(agents: Agents, alice_token_file: Path):
    launched = aws_json(agents, alice_token_file, "ec2", "run-instances",
                        "--image-id", harness.AMI_ID, "--count", "1",
                        "--instance-type", "t3.micro")
    described = aws_json(agents, alice_token_file, "ec2", "describe-instances")

    instance_id = launched["Instances"][0]["InstanceId"]
    seen = [i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]]
    assert instance_id in seen


def test_s3_make_bucket_then_list_shows_it(agents: Agents, alice_token_file: Path):
    made = agents.aws(alice_token_file, "s3", "mb", "s3://e2e-cli-bucket")
    listed = agents.aws(alice_token_file, "s3", "ls")

    assert made.returncode == 0, describe(made)
    assert "make_bucket: e2e-cli-bucket" in made.stdout
    assert listed.returncode == 0, describe(listed)
    assert "e2e-cli-bucket" in listed.stdout


def test_secretsmanager_json_protocol_round_trip(agents: Agents, alice_token_file: Path):
    aws_json(agents, alice_token_file, "secretsmanager", "create-secret",
             "--name", "e2e/cli", "--secret-string", "s3cr3t-from-cli")
    secret = aws_json(agents, alice_token_file, "secretsmanager", "get-secret-value",
                      "--secret-id", "e2e/cli")

    # Secrets Manager values are masked by default: the call succeeds, the secret stays out.
    assert secret["SecretString"] == harness.MASK_MARKER
    assert secret["Name"] == "e2e/cli"


def test_dynamodb_json_protocol_create_then_list(agents: Agents, alice_token_file: Path):
    aws_json(agents, alice_token_file, "dynamodb", "create-table", "--table-name", "e2e-cli",
             "--attribute-definitions", "AttributeName=k,AttributeType=S",
             "--key-schema", "AttributeName=k,KeyType=HASH",
             "--billing-mode", "PAY_PER_REQUEST")
    tables = aws_json(agents, alice_token_file, "dynamodb", "list-tables")

    assert "e2e-cli" in tables["TableNames"]


def test_moto_sees_only_sts_keys_never_the_placeholder(
        agents: Agents, alice_token_file: Path, moto: Moto):
    before = len(moto.keys())
    script = ("import os, subprocess, sys\n"
              "print('PLACEHOLDER=' + os.environ.get('AWS_ACCESS_KEY_ID', ''))\n"
              f"sys.exit(subprocess.call([{str(harness.AWS_CLI)!r}, 'sts', "
              "'get-caller-identity']))\n")
    result = agents.python(alice_token_file, script)
    assert result.returncode == 0, describe(result)
    placeholder = result.stdout.split("PLACEHOLDER=", 1)[1].split()[0]

    new = moto.keys()[before:]
    every = moto.keys()
    assert placeholder, "interceptor run must set a placeholder AWS_ACCESS_KEY_ID"
    assert new, "the call must reach moto"
    assert all(k["access_key_id"].startswith("ASIA") for k in new), new
    assert all(k["security_token"] and k["authenticated"] for k in new), new
    assert not [k for k in every if k["access_key_id"] == placeholder]
    assert all(k["signed"] for k in every), "nothing unsigned may be forwarded"


def test_moto_received_the_agents_own_idp_token(
        agents: Agents, alice_token_file: Path, alice_token: str, moto: Moto):
    result = agents.aws(alice_token_file, "sts", "get-caller-identity")
    assert result.returncode == 0, describe(result)

    presented = [t for t in moto.web_identity_tokens() if t["token"] == alice_token]
    assert presented, "the gateway must assume the role with the agent's own token"
    assert all(t["role_arn"] == moto.role_arn for t in presented)
    assert all(not t["signed"] for t in presented)


def test_audit_log_names_the_identity_and_the_action(
        agents: Agents, alice_token_file: Path, world: World):
    result = agents.aws(alice_token_file, "sts", "get-caller-identity")
    assert result.returncode == 0, describe(result)

    # The daemon's audit writer gathers lines for a few milliseconds before each write.
    calls = harness.AuditLog(world.audit_log).wait_for(
        0, lambda line: harness.audit_action_name(line) == "GetCallerIdentity"
        and (line.get("identity") or {}).get("subject") == harness.ALICE,
        "alice's GetCallerIdentity")
    assert calls, f"no GetCallerIdentity line for {harness.ALICE} in {world.audit_log}"
    last = calls[-1]
    assert all(key in last for key in harness.AUDIT_REQUEST_KEYS), last
    assert last["identity"]["groups"] == ["agents"]
    assert last["service"] == "sts"
    assert last["decision"] == harness.AUDIT_ALLOWED
    assert last["status"] == 200
    assert last["session"] and last["request_id"]
