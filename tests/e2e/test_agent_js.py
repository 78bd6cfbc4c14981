"""The AWS SDK for JavaScript v3, unmodified, in a Node.js agent (tests/peers/js_agent.mjs).

The SDK is given only the region: keys, CA bundle and names come from `interceptor run` and the
private /etc/hosts, as for the CLI and boto3. Its defaults differ from botocore's in ways the
gateway must carry: virtual-hosted S3 addressing and flexible checksums on PutObject (an
aws-chunked body with a CRC trailer, STREAMING-UNSIGNED-PAYLOAD-TRAILER).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import harness
from harness import Agents, Moto, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

BUCKET = "e2e-js-bucket"
TABLE = "e2e-js"
#: Larger than one aws-chunked chunk of the SDK (64 KiB) and not a multiple of it.
BODY_SIZE = 300_001
#: The calls the agent makes, as the audit log names them: IAM action names, so the SDK's
#: ListBuckets is s3:ListAllMyBuckets.
EXPECTED_ACTIONS = {
    "GetCallerIdentity", "CreateBucket", "PutObject", "GetObject", "ListAllMyBuckets",
    "RunInstances", "DescribeInstances", "CreateTable", "ListTables",
}


@pytest.fixture(scope="module")
def js_run(agents: Agents, alice_token_file: Path, world: World, moto: Moto):
    """One run of the JS agent: (result, summary, sent bytes, received file, new audit lines)."""
    work = world.tmp / "js-agent"
    work.mkdir(parents=True, exist_ok=True)
    sent = os.urandom(BODY_SIZE)
    body_file, out_file = work / "body.bin", work / "got.bin"
    body_file.write_bytes(sent)
    audit_before = len(harness.read_jsonl(world.audit_log))
    keys_before = len(moto.keys())

    result = agents.node(alice_token_file, harness.JS_AGENT, "--bucket", BUCKET,
                         "--body-file", str(body_file), "--out-file", str(out_file),
                         "--table", TABLE)

    assert result.returncode == 0, describe(result)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    # The session's end is logged after its last call (the writer keeps the order).
    harness.AuditLog(world.audit_log).wait_for(
        audit_before, lambda line: line.get("event") == "session_ended", "the JS session's end")
    audit = harness.read_jsonl(world.audit_log)[audit_before:]
    return summary, sent, out_file, audit, moto.keys()[keys_before:]


def test_js_sdk_caller_identity_is_the_assumed_role(js_run):
    summary = js_run[0]

    assert summary["account"] == "123456789012"
    assert ":assumed-role/agent/" in summary["arn"], summary


def test_js_sdk_put_object_from_a_buffer_round_trips_byte_exact(js_run):
    summary, sent, out_file, _, _ = js_run
    key = "js-agent/from-buffer.bin"

    # A Buffer body: the SDK sends the payload's SHA-256 and the CRC32 as a header.
    headers = summary["put_headers"][key]
    assert headers.get("x-amz-checksum-crc32"), headers
    assert int(headers["content-length"]) == len(sent), headers
    assert summary["put_checksums"][key] == headers["x-amz-checksum-crc32"]
    assert summary["got_bytes"][key] == len(sent)
    assert Path(f"{out_file}.from-buffer.bin").read_bytes() == sent
    assert BUCKET in summary["buckets"]


def test_js_sdk_put_object_from_a_stream_sends_aws_chunked_with_a_trailer(js_run):
    summary, sent, out_file, _, _ = js_run
    key = "js-agent/from-stream.bin"

    # A stream body: aws-chunked, unsigned payload, the CRC32 in a trailer after the last chunk.
    headers = summary["put_headers"][key]
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER", headers
    assert headers["content-encoding"] == "aws-chunked", headers
    assert headers["x-amz-trailer"] == "x-amz-checksum-crc32", headers
    assert int(headers["x-amz-decoded-content-length"]) == len(sent), headers
    assert summary["put_checksums"][key], "S3 must confirm the CRC32 the SDK sent in the trailer"
    assert summary["put_checksums"][key] == summary["put_checksums"]["js-agent/from-buffer.bin"]
    assert summary["got_bytes"][key] == len(sent)
    assert Path(f"{out_file}.from-stream.bin").read_bytes() == sent


def test_js_sdk_ec2_and_dynamodb_calls_succeed(js_run):
    summary = js_run[0]

    assert summary["launched"] in summary["instances"]
    assert TABLE in summary["tables"]


def test_js_sdk_calls_are_audited_under_one_session_of_the_identity(js_run):
    audit = js_run[3]

    actions = {harness.audit_action_name(line) for line in audit}
    assert EXPECTED_ACTIONS <= actions, f"missing {EXPECTED_ACTIONS - actions} in {audit}"
    ours = [line for line in audit if harness.audit_action_name(line) in EXPECTED_ACTIONS]
    assert len({line["session"] for line in ours}) == 1, ours
    assert all(line["identity"]["subject"] == harness.ALICE for line in ours), ours
    assert all(line["decision"] == harness.AUDIT_ALLOWED for line in ours), ours
    assert all(200 <= int(line["status"]) < 300 for line in ours), ours


def test_moto_saw_only_sts_keys_from_the_js_agent(js_run):
    keys = js_run[4]

    assert keys, "the JS agent's calls must reach moto"
    assert all(k["access_key_id"].startswith("ASIA") and k["authenticated"] for k in keys), keys


def test_js_sdk_multipart_upload_and_secrets_manager(js_run):
    summary = js_run[0]
    assert summary["multipart_bytes"] == 5 * 1024 * 1024 + len(b"the last part"), summary
    # Secrets Manager values are masked by default; the SDK reads the answer without error.
    assert summary["secret"] == harness.MASK_MARKER, summary
