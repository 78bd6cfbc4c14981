"""Denials reach boto3 as the service's own error shape: a ClientError with an access-denied code
and HTTP 403, for a query service (EC2) and a JSON service (DynamoDB), with no retry."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, AuditLog, PolicyControl, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

NO_TABLES_RULE = "no tables for agents"

#: What boto3 makes of each denial: the parsed error, the status and botocore's retry count.
AGENT_SCRIPT = f"""
import json
import boto3
from botocore.exceptions import ClientError

calls = {{
    "ec2": lambda: boto3.client("ec2").run_instances(
        ImageId={harness.AMI_ID!r}, MinCount=50, MaxCount=50, InstanceType="t3.micro"),
    "dynamodb": lambda: boto3.client("dynamodb").list_tables(),
}}
out = {{}}
for name, call in calls.items():
    try:
        call()
        out[name] = {{"raised": None}}
    except ClientError as error:
        meta = error.response["ResponseMetadata"]
        out[name] = {{"raised": "ClientError", "code": error.response["Error"]["Code"],
                     "message": error.response["Error"].get("Message", ""),
                     "status": meta["HTTPStatusCode"], "retries": meta.get("RetryAttempts"),
                     "text": str(error)}}
print(json.dumps(out))
"""


def test_boto3_gets_access_denied_client_errors_without_retrying(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, audit: AuditLog):
    policy.install(harness.design_policy(
        launches=f"launches {uuid.uuid4().hex[:8]}",
        extra=f'\n[[rule]]\nname = "{NO_TABLES_RULE}"\ngroups = ["agents"]\n'
              'actions = ["dynamodb:*"]\neffect = "deny"\n'))
    mark = audit.mark()

    result = agents.python(alice_token_file, AGENT_SCRIPT)

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    ec2, dynamodb = out["ec2"], out["dynamodb"]
    assert ec2["raised"] == "ClientError", ec2
    assert ec2["code"] == "AccessDenied", ec2
    assert ec2["status"] == 403 and ec2["retries"] == 0, ec2
    assert "ec2:RunInstances" in ec2["message"], ec2
    assert dynamodb["raised"] == "ClientError", dynamodb
    assert dynamodb["code"] in ("AccessDeniedException", "AccessDenied"), dynamodb
    assert dynamodb["status"] == 403 and dynamodb["retries"] == 0, dynamodb
    assert NO_TABLES_RULE in dynamodb["message"], dynamodb

    lines = audit.wait_for(mark, lambda line: harness.audit_action_name(line) == "ListTables",
                           "the denied ListTables")
    launches = [line for line in audit.since(mark)
                if harness.audit_action_name(line) == "RunInstances"]
    assert len(launches) == 1 and len(lines) == 1, "one audit line per call: no retry"
    assert lines[0]["decision"] == harness.AUDIT_DENIED
    assert lines[0]["rule"] == NO_TABLES_RULE
