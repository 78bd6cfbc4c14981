"""shared/cases 5, 7 and 8: bodies, as the stock AWS CLI, boto3 and the JS SDK send them.

An UpstreamTap sits between the daemon and moto for this module (the daemon is restarted with
`aws.upstream` pointing at it, and again without it at the end), so the tests see what AWS would
see: the re-signed head and the body framing. Case 6 is test_chunk_signed.py; case 9 is
test_cases_big.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import harness
from harness import (Agents, AuditLog, Daemon, Moto, TappedRequest, UpstreamTap, World,
                     describe)

pytestmark = pytest.mark.usefixtures("daemon_log")

BUCKET = "e2e-cases-bodies"
EXPECT_BUCKET = "e2e-cases-expect"
TWENTY_MB = 20 * 1024 * 1024
#: A denial must reach the agent well before a 20 MB body could have been sent and read.
DENIAL_DEADLINE_SECONDS = 3.0


@pytest.fixture(scope="module")
def tap(world: World, daemon: Daemon, moto: Moto):
    relay = UpstreamTap(("127.0.0.1", moto.port))
    harness.set_upstream(world, daemon, relay.url)
    try:
        yield relay
    finally:
        harness.set_upstream(world, daemon, moto.url)
        relay.close()


@pytest.fixture(scope="module")
def buckets(agents: Agents, alice_token_file: Path, tap: UpstreamTap) -> None:
    for made in agents.batch(alice_token_file, [
            ["aws", "s3api", "create-bucket", "--bucket", BUCKET],
            ["aws", "s3api", "create-bucket", "--bucket", EXPECT_BUCKET]]):
        assert made["rc"] == 0, made


def ok(outcome: dict) -> dict:
    assert outcome["rc"] == 0, json.dumps(outcome, indent=1)
    return outcome


def puts_of(requests: list[TappedRequest], key: str) -> list[TappedRequest]:
    """The upstream PUTs of `key` (path-style or virtual-hosted)."""
    return [r for r in requests if r.method == "PUT" and r.target.split("?")[0].endswith(key)]


def assert_framing(request: TappedRequest, decoded: int) -> None:
    """The upstream request frames an object of `decoded` bytes as S3 accepts it.

    A plain body goes with Content-Length (0 for an empty one), never chunked transfer: S3
    answers that with 411. An aws-chunked body names its object length in
    x-amz-decoded-content-length and may go with chunked transfer: botocore sends it so to S3
    (httpchecksum.py, since 1.36), and the gateway streams it on as the agent framed it."""
    if "aws-chunked" in (request.header("content-encoding") or ""):
        assert int(request.header("x-amz-decoded-content-length") or -1) == decoded, request
        if not request.chunked:
            assert int(request.header("content-length") or -1) == request.body_length, request
        return
    assert not request.chunked, request
    assert request.header("transfer-encoding") is None, request
    assert request.header("content-length") == str(decoded), request
    assert request.body_length == decoded, request


# -- case 5: empty bodies ---------------------------------------------------------------------

BOTO3_EMPTY = r"""
import json, boto3
from botocore.config import Config
s3 = boto3.client("s3")
s3.put_object(Bucket="e2e-cases-bodies", Key="empty/boto3-bytes", Body=b"")
s3.put_object(Bucket="e2e-cases-bodies", Key="empty/boto3-nobody")
plain = boto3.client("s3", config=Config(request_checksum_calculation="when_required"))
plain.put_object(Bucket="e2e-cases-bodies", Key="empty/boto3-plain", Body=b"")
got = {k: len(s3.get_object(Bucket="e2e-cases-bodies", Key=k)["Body"].read())
       for k in ("empty/boto3-bytes", "empty/boto3-nobody", "empty/boto3-plain")}
print(json.dumps(got))
"""

JS_EMPTY = r"""
const { createRequire } = require('node:module');
const peers = createRequire(process.argv[2] + '/package.json');
const { S3Client, PutObjectCommand, GetObjectCommand } = peers('@aws-sdk/client-s3');
(async () => {
  const s3 = new S3Client({ region: 'us-east-1' });
  await s3.send(new PutObjectCommand({ Bucket: 'e2e-cases-bodies', Key: 'empty/js', Body: '' }));
  const got = await s3.send(new GetObjectCommand({ Bucket: 'e2e-cases-bodies', Key: 'empty/js' }));
  console.log(JSON.stringify({ length: (await got.Body.transformToByteArray()).length }));
})().catch((err) => { console.error(String(err), err.$metadata); process.exit(1); });
"""


def test_case5_empty_uploads_reach_the_upstream_with_content_length_zero(
        agents: Agents, alice_token_file: Path, buckets: None, tap: UpstreamTap,
        tmp_path: Path):
    empty, back = tmp_path / "empty.txt", tmp_path / "back.txt"
    empty.write_bytes(b"")
    mark = tap.mark()

    outcomes = agents.batch(alice_token_file, [
        ["aws", "s3", "cp", str(empty), f"s3://{BUCKET}/empty/cli-cp"],
        ["aws", "s3api", "put-object", "--bucket", BUCKET, "--key", "empty/cli-api",
         "--body", str(empty)],
        ["aws", "s3", "cp", f"s3://{BUCKET}/empty/cli-cp", str(back)],
        ["aws", "s3api", "head-object", "--bucket", BUCKET, "--key", "empty/cli-api"],
        # Without the default CRC32 trailer the CLI sends a plain empty body (with Expect).
        ["env", "AWS_REQUEST_CHECKSUM_CALCULATION=when_required", str(harness.AWS_CLI), "s3",
         "cp", str(empty), f"s3://{BUCKET}/empty/cli-plain"],
    ])
    for outcome in outcomes:
        ok(outcome)
    boto = agents.python(alice_token_file, BOTO3_EMPTY)
    assert boto.returncode == 0, describe(boto)
    script = tmp_path / "empty.cjs"
    script.write_text(JS_EMPTY)
    node = agents.node(alice_token_file, script, str(harness.PEERS))
    assert node.returncode == 0, describe(node)

    assert back.read_bytes() == b""
    assert json.loads(outcomes[3]["stdout"])["ContentLength"] == 0
    assert json.loads(boto.stdout.strip().splitlines()[-1]) == {
        "empty/boto3-bytes": 0, "empty/boto3-nobody": 0, "empty/boto3-plain": 0}
    assert json.loads(node.stdout.strip().splitlines()[-1]) == {"length": 0}
    upstream = tap.since(mark)
    plain = []
    for key in ("empty/cli-cp", "empty/cli-api", "empty/cli-plain", "empty/boto3-bytes",
                "empty/boto3-nobody", "empty/boto3-plain", "empty/js"):
        [put] = puts_of(upstream, key)
        assert_framing(put, 0)
        if "aws-chunked" not in (put.header("content-encoding") or ""):
            plain.append(key)
    # botocore's default is aws-chunked with a CRC32 trailer even for 0 bytes; without it, and
    # from the JS SDK, the body is plain: those reached moto with Content-Length: 0.
    assert set(plain) == {"empty/cli-plain", "empty/boto3-plain", "empty/js"}, plain


# -- case 7: unsigned streaming upload with a trailer -----------------------------------------


def test_case7_stdin_upload_with_trailer_reads_back_exactly(
        agents: Agents, alice_token_file: Path, buckets: None, tap: UpstreamTap):
    mark = tap.mark()
    outcomes = agents.batch(alice_token_file, [
        ["bash", "-c", f"printf 'hello!\\n' | aws s3 cp - s3://{BUCKET}/t.md"],
        ["aws", "s3", "cp", f"s3://{BUCKET}/t.md", "-"],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert outcomes[1]["stdout"] == "hello!\n"
    [put] = puts_of(tap.since(mark), "/t.md")
    assert_framing(put, 7)
    assert put.body_prefix.startswith(b"7\r\nhello!\n\r\n0\r\n"), put
    # The streaming form is kept, and what marks it is signed.
    marker = put.header("x-amz-content-sha256") or ""
    assert marker.startswith("STREAMING-UNSIGNED-PAYLOAD-TRAILER"), put
    assert "aws-chunked" in (put.header("content-encoding") or ""), put
    signed = put.signed_headers()
    for name in ("content-encoding", "x-amz-trailer", "x-amz-decoded-content-length",
                 "x-amz-content-sha256", "host"):
        assert name in signed, (name, signed)


# -- case 8: Expect: 100-continue -------------------------------------------------------------

EXPECT_SCRIPT = r"""
import json, os, socket, ssl, sys, time
import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest

bucket, key, size, then_send = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "send"
host = f"{bucket}.s3.amazonaws.com"
creds = botocore.session.get_session().get_credentials().get_frozen_credentials()
request = AWSRequest("PUT", f"https://{host}/{key}", headers={
    "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": str(size),
    "Expect": "100-continue"})
S3SigV4Auth(creds, "s3", "us-east-1").add_auth(request)
context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
conn = context.wrap_socket(socket.create_connection((host, 443), timeout=20),
                           server_hostname=host)
head = f"PUT /{key} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
    f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host") + "\r\n"
started = time.monotonic()
conn.sendall(head.encode())


def read_head():
    data = b""
    while b"\r\n\r\n" not in data:
        piece = conn.recv(65536)
        if not piece:
            break
        data += piece
    return data


first = read_head()
out = {"first": first.split(b"\r\n")[0].decode(), "seconds": time.monotonic() - started,
       "first_text": first.decode("latin-1")[:2000]}
if then_send and out["first"].endswith("100 Continue"):
    block = bytes(1 << 20)
    sent = 0
    while sent < size:
        conn.sendall(block[:size - sent])
        sent += min(len(block), size - sent)
    final = read_head()
    out["final"] = final.split(b"\r\n")[0].decode()
print(json.dumps(out))
"""

DENY_UPLOADS = f"""\
default = "allow"

[[rule]]
name = "cases-expect-no-uploads"
actions = ["s3:PutObject"]
when = {{ Bucket = "{EXPECT_BUCKET}" }}
effect = "deny"
"""


def test_case8_twenty_mb_cli_upload_succeeds(agents: Agents, alice_token_file: Path,
                                             buckets: None, tmp_path: Path):
    source, back = tmp_path / "twenty.bin", tmp_path / "twenty-back.bin"
    source.write_bytes(bytes(range(256)) * (TWENTY_MB // 256))

    outcomes = agents.batch(alice_token_file, [
        ["aws", "s3", "cp", str(source), f"s3://{EXPECT_BUCKET}/twenty-cp.bin"],
        ["aws", "s3api", "put-object", "--bucket", EXPECT_BUCKET, "--key", "twenty-api.bin",
         "--body", str(source)],
        ["aws", "s3", "cp", f"s3://{EXPECT_BUCKET}/twenty-api.bin", str(back)],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert back.read_bytes() == source.read_bytes()


def test_case8_expect_continue_is_sent_only_when_policy_allows(
        agents: Agents, alice_token_file: Path, buckets: None):
    result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", EXPECT_SCRIPT,
                                           EXPECT_BUCKET, "expect-allowed.bin", "3000000", "send"])

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["first"] == "HTTP/1.1 100 Continue", out
    assert out["final"] == "HTTP/1.1 200 OK", out


def test_case8_denied_upload_is_refused_without_reading_the_body(
        agents: Agents, alice_token_file: Path, buckets: None, policy: harness.PolicyControl,
        audit: AuditLog, tap: UpstreamTap, tmp_path: Path):
    source = tmp_path / "twenty.bin"
    source.write_bytes(bytes(TWENTY_MB))
    policy.install(DENY_UPLOADS)
    mark, upstream_mark = audit.mark(), tap.mark()

    # A raw client that sends the head with Expect and then waits: the answer must come without
    # a single body byte sent, so the gateway cannot have waited for the body.
    raw = agents.run(alice_token_file, [str(harness.PYTHON), "-c", EXPECT_SCRIPT,
                                        EXPECT_BUCKET, "expect-denied.bin", str(TWENTY_MB),
                                        "wait"])
    started = time.monotonic()
    [cli] = agents.batch(alice_token_file, [
        ["aws", "s3api", "put-object", "--bucket", EXPECT_BUCKET, "--key", "denied-api.bin",
         "--body", str(source)]])
    cli_session_seconds = time.monotonic() - started

    assert raw.returncode == 0, describe(raw)
    out = json.loads(raw.stdout.strip().splitlines()[-1])
    assert out["first"] == "HTTP/1.1 403 Forbidden", out
    assert "AccessDenied" in out["first_text"], out
    assert out["seconds"] < DENIAL_DEADLINE_SECONDS, out
    assert cli["rc"] != 0 and "AccessDenied" in cli["stderr"], cli
    assert cli["seconds"] < DENIAL_DEADLINE_SECONDS, (cli["seconds"], cli_session_seconds)
    denied = audit.wait_for(mark, lambda line: line.get("decision") == harness.AUDIT_DENIED,
                            "the denied uploads")
    assert len(denied) == 2, denied
    assert all(harness.audit_action_name(line) == "PutObject" for line in denied), denied
    assert puts_of(tap.since(upstream_mark), "denied-api.bin") == []
    assert puts_of(tap.since(upstream_mark), "expect-denied.bin") == []


BOTO3_DENIED_NO_EXPECT = r"""
import json, time, boto3, botocore.exceptions
s3 = boto3.client("s3")
started = time.monotonic()
try:
    # A bytes body: botocore sends no Expect header, the body follows the head at once.
    s3.put_object(Bucket="e2e-cases-expect", Key="denied-bytes.bin", Body=bytes(20 << 20))
    print(json.dumps({"outcome": "stored"}))
except botocore.exceptions.ClientError as error:
    print(json.dumps({"outcome": error.response["Error"]["Code"],
                      "attempts": error.response["ResponseMetadata"].get("RetryAttempts"),
                      "seconds": time.monotonic() - started}))
except Exception as error:
    print(json.dumps({"outcome": type(error).__name__, "error": str(error)[:500],
                      "seconds": time.monotonic() - started}))
"""


def test_case8_denied_upload_without_expect_gets_access_denied_not_a_reset(
        agents: Agents, alice_token_file: Path, buckets: None, policy: harness.PolicyControl):
    policy.install(DENY_UPLOADS)

    result = agents.python(alice_token_file, BOTO3_DENIED_NO_EXPECT)

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "AccessDenied", out
    assert out["attempts"] == 0, out


JS_DENIED_UPLOAD = r"""
const { createRequire } = require('node:module');
const peers = createRequire(process.argv[2] + '/package.json');
const { S3Client, PutObjectCommand } = peers('@aws-sdk/client-s3');
(async () => {
  const s3 = new S3Client({ region: 'us-east-1' });
  const started = Date.now();
  const sent = {};
  s3.middlewareStack.add((next) => async (args) => {
    sent.expect = args.request.headers.expect || args.request.headers.Expect || null;
    return next(args);
  }, { step: 'finalizeRequest', priority: 'low', name: 'observeExpect' });
  try {
    await s3.send(new PutObjectCommand({ Bucket: 'e2e-cases-expect', Key: 'denied-js.bin',
                                         Body: Buffer.alloc(20 << 20) }));
    console.log(JSON.stringify({ outcome: 'stored', ...sent }));
  } catch (err) {
    console.log(JSON.stringify({ outcome: err.name, attempts: err.$metadata.attempts,
                                 seconds: (Date.now() - started) / 1000, ...sent }));
  }
})();
"""


def test_case8_denied_js_sdk_upload_gets_access_denied(
        agents: Agents, alice_token_file: Path, buckets: None, policy: harness.PolicyControl,
        tmp_path: Path):
    script = tmp_path / "denied.cjs"
    script.write_text(JS_DENIED_UPLOAD)
    policy.install(DENY_UPLOADS)

    result = agents.node(alice_token_file, script, str(harness.PEERS))

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    print("JS SDK denied upload:", out)
    assert out["outcome"] == "AccessDenied", out
    assert out["attempts"] == 1, out
    assert out["seconds"] < DENIAL_DEADLINE_SECONDS, out
