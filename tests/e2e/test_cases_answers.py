"""shared/cases 10 for S3 objects: a policy [[mask]] on s3:GetObject changes the object the agent
reads, and the client's own integrity check (x-amz-checksum-crc32 with `--checksum-mode
ENABLED`, Content-Length) must still pass. DynamoDB's x-amz-crc32 is test_records_masking.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness
from harness import Agents

pytestmark = pytest.mark.usefixtures("daemon_log")

BUCKET = "e2e-cases-keys"
MASK_S3_OBJECTS = """\
default = "allow"

[[mask]]
actions = ["s3:GetObject"]
fields = ["password"]
"""
DOCUMENT = {"user": "svc", "password": "hunter2-case10", "port": 5432}


def test_case10_masked_s3_object_passes_the_cli_checksum_check(
        agents: Agents, alice_token_file: Path, policy: harness.PolicyControl, tmp_path: Path):
    source = tmp_path / "config.json"
    source.write_text(json.dumps(DOCUMENT))
    plain_back, masked_back = tmp_path / "plain.json", tmp_path / "masked.json"
    setup = agents.batch(alice_token_file, [
        ["aws", "s3api", "create-bucket", "--bucket", BUCKET],
        ["aws", "s3api", "put-object", "--bucket", BUCKET, "--key", "case10/config.json",
         "--body", str(source), "--checksum-algorithm", "CRC32"],
        ["aws", "s3api", "get-object", "--bucket", BUCKET, "--key", "case10/config.json",
         "--checksum-mode", "ENABLED", str(plain_back)],
    ])
    assert [o["rc"] for o in setup[1:]] == [0, 0], setup
    # Unmasked: byte for byte, with the checksum the object was stored with.
    assert plain_back.read_bytes() == source.read_bytes()
    assert json.loads(setup[2]["stdout"]).get("ChecksumCRC32"), setup[2]

    policy.install(MASK_S3_OBJECTS)
    [masked] = agents.batch(alice_token_file, [
        ["aws", "s3api", "get-object", "--bucket", BUCKET, "--key", "case10/config.json",
         "--checksum-mode", "ENABLED", str(masked_back)]])

    assert masked["rc"] == 0, masked
    got = json.loads(masked_back.read_text())
    assert got == {**DOCUMENT, "password": harness.MASK_MARKER}, got
    head = json.loads(masked["stdout"])
    assert head["ContentLength"] == masked_back.stat().st_size, head
