"""boto3, unmodified, in a Python agent: the same calls as the CLI, through the gateway."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

AGENT_SCRIPT = f"""
import json
import boto3

sts = boto3.client("sts")
ec2 = boto3.client("ec2")
s3 = boto3.client("s3")
secrets = boto3.client("secretsmanager")
dynamodb = boto3.client("dynamodb")

out = {{"arn": sts.get_caller_identity()["Arn"]}}
launched = ec2.run_instances(ImageId={harness.AMI_ID!r}, MinCount=1, MaxCount=1,
                             InstanceType="t3.micro")
out["launched"] = launched["Instances"][0]["InstanceId"]
out["instances"] = [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                    for i in r["Instances"]]
s3.create_bucket(Bucket="e2e-boto3-bucket")
out["buckets"] = [b["Name"] for b in s3.list_buckets()["Buckets"]]
secrets.create_secret(Name="e2e/boto3", SecretString="s3cr3t-from-boto3")
out["secret"] = secrets.get_secret_value(SecretId="e2e/boto3")["SecretString"]
dynamodb.create_table(TableName="e2e-boto3",
                      AttributeDefinitions=[{{"AttributeName": "k", "AttributeType": "S"}}],
                      KeySchema=[{{"AttributeName": "k", "KeyType": "HASH"}}],
                      BillingMode="PAY_PER_REQUEST")
out["tables"] = dynamodb.list_tables()["TableNames"]
print(json.dumps(out))
"""


def test_boto3_agent_reaches_every_service_as_the_role(agents: Agents, alice_token_file: Path):
    result = agents.python(alice_token_file, AGENT_SCRIPT)
    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])

    assert ":assumed-role/agent/" in out["arn"]
    assert out["launched"] in out["instances"]
    assert "e2e-boto3-bucket" in out["buckets"]
    # Secrets Manager values are masked by default: the call succeeds, the secret stays out.
    assert out["secret"] == harness.MASK_MARKER
    assert "e2e-boto3" in out["tables"]


def test_boto3_put_then_get_object_streams_the_body(agents: Agents, alice_token_file: Path):
    # botocore signs PutObject bodies in its default checksum mode (aws-chunked with a trailer).
    script = (
        "import boto3\n"
        "s3 = boto3.client('s3')\n"
        "s3.create_bucket(Bucket='e2e-boto3-objects')\n"
        "s3.put_object(Bucket='e2e-boto3-objects', Key='hello.txt', Body=b'hello ' * 50000)\n"
        "body = s3.get_object(Bucket='e2e-boto3-objects', Key='hello.txt')['Body'].read()\n"
        "print(len(body), body[:12].decode())\n"
    )
    result = agents.python(alice_token_file, script)

    assert result.returncode == 0, describe(result)
    assert result.stdout.split() == ["300000", "hello", "hello"]


def test_agent_exit_code_passes_through(agents: Agents, alice_token_file: Path):
    result = agents.python(alice_token_file, "import sys; sys.exit(7)")

    assert result.returncode == 7, describe(result)


def test_agent_environment_holds_no_real_secret_and_trusts_the_gateway_ca(
        agents: Agents, alice_token_file: Path):
    script = ("import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
              "if k.startswith(('AWS_', 'SSL_', 'REQUESTS_', 'NODE_'))}))")
    result = agents.python(alice_token_file, script)
    assert result.returncode == 0, describe(result)
    env = json.loads(result.stdout.strip().splitlines()[-1])

    assert env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")
    for bundle in ("AWS_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert env.get(bundle) and Path(env[bundle]).is_file(), (bundle, env)
    assert env.get("AWS_EC2_METADATA_DISABLED") == "true"


MULTIPART_FROM_STDIN = """
import hashlib, json, sys
import boto3
from boto3.s3.transfer import TransferConfig

s3 = boto3.client("s3")
s3.create_bucket(Bucket="e2e-boto3-objects")
# 12 MiB read from stdin, sent as a multipart upload of 5 MiB parts.
config = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.upload_fileobj(sys.stdin.buffer, "e2e-boto3-objects", "from-stdin.bin", Config=config)
body = s3.get_object(Bucket="e2e-boto3-objects", Key="from-stdin.bin")["Body"].read()
print(json.dumps({"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}))
"""


def test_boto3_multipart_upload_streamed_from_stdin_reads_back_exactly(
        agents: Agents, alice_token_file: Path):
    data = bytes(range(256)) * (12 * 1024 * 4)  # 12 MiB
    result = subprocess.run(agents.argv(alice_token_file, [str(harness.PYTHON), "-c",
                                                           MULTIPART_FROM_STDIN]),
                            input=data, capture_output=True, timeout=180, env=agents.env())

    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    out = json.loads(result.stdout.decode().strip().splitlines()[-1])
    assert out == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
