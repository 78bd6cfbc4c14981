"""Chunk-signed streaming uploads (shared/cases 6) through the gateway.

None of the three pinned clients sends STREAMING-AWS4-HMAC-SHA256-PAYLOAD (botocore and the JS
SDK v3 have no chunk signer; both use STREAMING-UNSIGNED-PAYLOAD-TRAILER), so the agent here
frames the body itself as the Java and Rust SDKs and minio-go do: botocore signs the seed with
the agent's placeholder keys and the script chains the chunk signatures from it. moto decodes
the framing but checks no chunk signature; the signature chain is checked by the upstream in
interceptor/src/aws/chunked_tests.rs. This test checks the wiring: the object reads back
exactly, under both markers, so Content-Length, x-amz-decoded-content-length and the re-framed
body agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import Agents, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

AGENT_SCRIPT = r"""
import base64, hashlib, hmac, json, os, zlib
import boto3, botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.httpsession import URLLib3Session

REGION = os.environ["AWS_DEFAULT_REGION"]
BUCKET = "e2e-chunk-signed"
EMPTY = hashlib.sha256(b"").hexdigest()
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=BUCKET)
creds = botocore.session.get_session().get_credentials().get_frozen_credentials()


def hm(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class SeedAuth(S3SigV4Auth):
    def __init__(self, marker):
        super().__init__(creds, "s3", REGION)
        self.marker = marker

    def payload(self, request):
        return self.marker


def framed_len(sizes, trailer_lines):
    n = sum(len(f"{s:x};chunk-signature=") + 64 + 2 + s + 2 for s in sizes)
    n += len("0;chunk-signature=") + 64 + 2
    return n + sum(len(l) for l in trailer_lines) + 2


def upload(key, data, chunk, trailer):
    marker = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    trailer_lines = [f"x-amz-checksum-crc32:{crc}\r\n",
                     "x-amz-trailer-signature:" + "0" * 64 + "\r\n"] if trailer else []
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(framed_len([len(p) for p in pieces], trailer_lines)),
    }
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"
    url = f"https://s3.{REGION}.amazonaws.com/{BUCKET}/{key}"
    request = AWSRequest("PUT", url, headers=headers, data=b"")
    SeedAuth(marker).add_auth(request)

    previous = request.headers["Authorization"].split("Signature=")[1]
    date_time = request.headers["X-Amz-Date"]
    scope = f"{date_time[:8]}/{REGION}/s3/aws4_request"
    signing_key = b"AWS4" + creds.secret_key.encode()
    for part in scope.split("/"):
        signing_key = hm(signing_key, part)
    body = b""
    for piece in pieces + [b""]:
        sts = (f"AWS4-HMAC-SHA256-PAYLOAD\n{date_time}\n{scope}\n{previous}\n{EMPTY}\n"
               + hashlib.sha256(piece).hexdigest())
        previous = hmac.new(signing_key, sts.encode(), hashlib.sha256).hexdigest()
        body += f"{len(piece):x};chunk-signature={previous}\r\n".encode()
        body += piece + b"\r\n" if piece else b""
    if trailer:
        canonical = f"x-amz-checksum-crc32:{crc}\n".encode()
        sts = (f"AWS4-HMAC-SHA256-TRAILER\n{date_time}\n{scope}\n{previous}\n"
               + hashlib.sha256(canonical).hexdigest())
        signature = hmac.new(signing_key, sts.encode(), hashlib.sha256).hexdigest()
        body += f"x-amz-checksum-crc32:{crc}\r\nx-amz-trailer-signature:{signature}\r\n".encode()
    body += b"\r\n"
    assert len(body) == int(headers["Content-Length"]), (len(body), headers["Content-Length"])
    request.data = body
    verify = os.environ.get("AWS_CA_BUNDLE") or True
    response = URLLib3Session(verify=verify).send(request.prepare())
    got = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() if response.status_code == 200 else b""
    return {"status": response.status_code, "answer": response.text[:300], "same": got == data,
            "length": len(got)}


data = bytes(i * 7 % 251 for i in range(70_000))
print(json.dumps({
    "payload": upload("signed.bin", data, 65_536, False),
    "trailer": upload("signed-trailer.bin", data, 8_192, True),
    "empty": upload("empty.bin", b"", 65_536, False),
}))
"""


def test_chunk_signed_uploads_are_re_signed_and_read_back_exactly(
        agents: Agents, alice_token_file: Path):
    result = agents.python(alice_token_file, AGENT_SCRIPT)
    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])

    for name, length in (("payload", 70_000), ("trailer", 70_000), ("empty", 0)):
        assert out[name]["status"] == 200, out[name]
        assert (out[name]["same"], out[name]["length"]) == (True, length), out[name]
