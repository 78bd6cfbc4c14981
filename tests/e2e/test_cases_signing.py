"""shared/cases 1-4, signing what AWS checks, with the stock AWS CLI (and boto3, the JS SDK).

moto checks every signature here (tests/peers/moto_server.py), so a canonical URI, query or Host
that differs from what AWS computes fails the call with SignatureDoesNotMatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import harness
from harness import Agents, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

BUCKET = "e2e-cases-keys"
#: Case 1's key: a space, a plus, a tilde and a non-ASCII letter.
ODD_KEY = "a b+c~d é.txt"
#: Keys whose paths a gateway must not normalise: `//`, `.` and `..` are part of an S3 key.
UNNORMALISED_KEY = "dir//x/./y/../z.txt"


def ok(outcome: dict) -> dict:
    """The outcome of one batch command, asserted successful."""
    assert outcome["rc"] == 0, json.dumps(outcome, indent=1, ensure_ascii=False)
    return outcome


def listed_keys(outcome: dict) -> list[str]:
    return [item["Key"] for item in json.loads(ok(outcome)["stdout"] or "{}").get("Contents", [])]


@pytest.fixture(scope="module")
def bucket(agents: Agents, alice_token_file: Path) -> str:
    [made] = agents.batch(alice_token_file, [["aws", "s3api", "create-bucket", "--bucket", BUCKET]])
    ok(made)
    return BUCKET


# -- case 1: S3 keys are encoded once ---------------------------------------------------------


def test_case1_odd_s3_key_round_trips_with_cli_cp_and_s3api(
        agents: Agents, alice_token_file: Path, bucket: str, tmp_path: Path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"case 1 via aws s3 cp\n" + bytes(range(256)))
    api_source = tmp_path / "api-source.bin"
    api_source.write_bytes(b"case 1 via s3api\n")
    cp_back, api_back = tmp_path / "cp-back.bin", tmp_path / "api-back.bin"
    odd_back = tmp_path / "unnormalised-back.bin"
    api_key = f"s3api/{ODD_KEY}"

    outcomes = agents.batch(alice_token_file, [
        ["aws", "s3", "cp", str(source), f"s3://{bucket}/{ODD_KEY}"],
        ["aws", "s3", "cp", f"s3://{bucket}/{ODD_KEY}", str(cp_back)],
        ["aws", "s3api", "put-object", "--bucket", bucket, "--key", api_key,
         "--body", str(api_source)],
        ["aws", "s3api", "get-object", "--bucket", bucket, "--key", api_key, str(api_back)],
        ["aws", "s3api", "put-object", "--bucket", bucket, "--key", UNNORMALISED_KEY,
         "--body", str(api_source)],
        ["aws", "s3api", "get-object", "--bucket", bucket, "--key", UNNORMALISED_KEY,
         str(odd_back)],
        ["aws", "s3", "ls", f"s3://{bucket}/"],
        ["aws", "s3api", "list-objects-v2", "--bucket", bucket],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert cp_back.read_bytes() == source.read_bytes()
    assert api_back.read_bytes() == api_source.read_bytes()
    assert odd_back.read_bytes() == api_source.read_bytes()
    assert ODD_KEY in outcomes[6]["stdout"], outcomes[6]["stdout"]
    assert {ODD_KEY, api_key, UNNORMALISED_KEY} <= set(listed_keys(outcomes[7]))


JS_ODD_KEY = r"""
const { createRequire } = require('node:module');
const peers = createRequire(process.argv[2] + '/package.json');
const { S3Client, PutObjectCommand, GetObjectCommand, ListObjectsV2Command } =
  peers('@aws-sdk/client-s3');
(async () => {
  const s3 = new S3Client({ region: 'us-east-1' });
  const [bucket, key] = [process.argv[3], process.argv[4]];
  await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'from the JS SDK\n' }));
  const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: 'js/' }));
  console.log(JSON.stringify({ body: await got.Body.transformToString(),
                               keys: (listed.Contents || []).map((c) => c.Key) }));
})().catch((err) => { console.error(String(err), err.$metadata); process.exit(1); });
"""


def test_case1_odd_s3_key_round_trips_with_the_js_sdk(
        agents: Agents, alice_token_file: Path, bucket: str, tmp_path: Path):
    script = tmp_path / "odd_key.cjs"
    script.write_text(JS_ODD_KEY)
    key = f"js/{ODD_KEY}"

    result = agents.node(alice_token_file, script, str(harness.PEERS), bucket, key)

    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"body": "from the JS SDK\n", "keys": [key]}


# -- case 2: other services encode the path twice ---------------------------------------------

LAMBDA_ZIP_SCRIPT = """
import io, sys, zipfile
buffer = io.BytesIO()
with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("index.py", "def handler(event, context):\\n    return event\\n")
open(sys.argv[1], "wb").write(buffer.getvalue())
"""


def test_case2_lambda_paths_with_an_arn_and_qualifier_are_signed_double_encoded(
        agents: Agents, alice_token_file: Path, moto: harness.Moto, tmp_path: Path):
    """Lambda calls with a function ARN (and its `:live` qualifier) in the path: each `%3A` of
    the path is `%253A` in the canonical request. moto stores functions without docker (only
    Invoke needs it) and checks these signatures; it tells the forms apart (a single-encoded
    signature of the same call is refused). moto 5.2.5 refuses every Lambda GET and DELETE,
    even signed by botocore itself, so only calls with a body are used here."""
    archive = tmp_path / "function.zip"
    harness.check_call([str(harness.PYTHON), "-c", LAMBDA_ZIP_SCRIPT, str(archive)],
                       what="build the Lambda zip")
    arn = f"arn:aws:lambda:{harness.REGION}:123456789012:function:e2e-cases-fn"

    outcomes = agents.batch(alice_token_file, [
        ["aws", "lambda", "create-function", "--function-name", "e2e-cases-fn",
         "--runtime", "python3.12", "--handler", "index.handler", "--role", moto.role_arn,
         "--zip-file", f"fileb://{archive}"],
        ["aws", "lambda", "publish-version", "--function-name", arn],
        ["aws", "lambda", "create-alias", "--function-name", arn, "--name", "live",
         "--function-version", "1"],
        ["aws", "lambda", "update-function-configuration", "--function-name", arn,
         "--description", "case 2: ARN in the path"],
        ["aws", "lambda", "update-alias", "--function-name", arn, "--name", "live",
         "--description", "live alias"],
        ["aws", "lambda", "put-function-event-invoke-config", "--function-name", f"{arn}:live",
         "--maximum-retry-attempts", "1"],
        ["aws", "lambda", "add-permission", "--function-name", f"{arn}:live",
         "--statement-id", "case2", "--action", "lambda:InvokeFunction",
         "--principal", "s3.amazonaws.com"],
        ["aws", "lambda", "tag-resource", "--resource", f"{arn}:live", "--tags", "case=2"],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert json.loads(outcomes[2]["stdout"])["AliasArn"] == f"{arn}:live"
    assert json.loads(outcomes[3]["stdout"])["Description"] == "case 2: ARN in the path"
    assert json.loads(outcomes[5]["stdout"])["FunctionArn"].startswith(arn)


# -- case 3: query strings are canonicalised --------------------------------------------------


def test_case3_query_strings_with_reserved_characters_are_signed_as_aws_does(
        agents: Agents, alice_token_file: Path, bucket: str, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    keys = ["x* y/1", "x* y/2", "a/b", "a/c", "a/b~c"]
    puts = [["aws", "s3api", "put-object", "--bucket", bucket, "--key", key, "--body", str(empty)]
            for key in keys]

    outcomes = agents.batch(alice_token_file, [
        *puts,
        ["aws", "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "x* y"],
        ["aws", "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "a/",
         "--start-after", "a/b"],
        ["aws", "s3api", "list-objects", "--bucket", bucket, "--prefix", "a/",
         "--marker", "a/b"],
        ["aws", "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "a/b~",
         "--delimiter", "/", "--encoding-type", "url"],
        ["aws", "s3api", "get-bucket-acl", "--bucket", bucket],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert listed_keys(outcomes[5]) == ["x* y/1", "x* y/2"]
    assert listed_keys(outcomes[6]) == ["a/b~c", "a/c"]
    assert listed_keys(outcomes[7]) == ["a/b~c", "a/c"]
    assert "Owner" in json.loads(outcomes[9]["stdout"])


REPEATED_QUERY_SCRIPT = r"""
import json, os
import botocore.session
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import URLLib3Session

creds = botocore.session.get_session().get_credentials().get_frozen_credentials()
region = os.environ["AWS_DEFAULT_REGION"]
verify = os.environ.get("AWS_CA_BUNDLE") or True
answers = {}
# Repeated names (sorted by value too), a valueless name (`fetch-owner` becomes `fetch-owner=`),
# `%2A` and `%20`. A raw `*` in the query is left out: AWS signs it as `%2A`, moto 5.2.5 signs
# the query as sent (so it refuses AWS's form).
for name, query in (("repeated", "list-type=2&b=1&a=2&a=1&prefix=x%2A%20y"),
                    ("valueless", "list-type=2&fetch-owner&prefix=x%2A%20y")):
    url = f"https://s3.{region}.amazonaws.com/e2e-cases-keys?{query}"
    request = AWSRequest("GET", url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    S3SigV4Auth(creds, "s3", region).add_auth(request)
    prepared = request.prepare()
    prepared.url = url  # exactly this query on the wire, in this order
    response = URLLib3Session(verify=verify).send(prepared)
    answers[name] = {"status": response.status_code, "body": response.text[:600]}
print(json.dumps(answers))
"""


def test_case3_repeated_and_valueless_query_names_are_signed_as_aws_does(
        agents: Agents, alice_token_file: Path, bucket: str):
    """No CLI command repeats a query name, so a botocore-signed raw request does (`a=2&a=1`
    must sort by value). S3 ignores the unknown names; moto checks the signature over them."""
    result = agents.python(alice_token_file, REPEATED_QUERY_SCRIPT)

    assert result.returncode == 0, describe(result)
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for name, answer in answers.items():
        assert answer["status"] == 200, (name, answer)
        assert "SignatureDoesNotMatch" not in answer["body"], (name, answer)


# -- case 4: Host and port --------------------------------------------------------------------


def test_case4_endpoints_with_the_default_port_work(agents: Agents, alice_token_file: Path,
                                                     bucket: str):
    outcomes = agents.batch(alice_token_file, [
        ["aws", "--endpoint-url", "https://s3.amazonaws.com:443", "s3", "ls"],
        ["aws", "--endpoint-url", "https://sts.amazonaws.com:443", "sts", "get-caller-identity"],
        ["aws", "--endpoint-url", f"https://s3.{harness.REGION}.amazonaws.com:443", "s3api",
         "list-objects-v2", "--bucket", bucket, "--max-items", "1"],
    ])
    for outcome in outcomes:
        ok(outcome)

    assert bucket in outcomes[0]["stdout"]
    assert "assumed-role/agent/agent-alice@" in json.loads(outcomes[1]["stdout"])["Arn"]


HOST_PORT_SCRIPT = r"""
import http.client, json, os, ssl
import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

creds = botocore.session.get_session().get_credentials().get_frozen_credentials()
context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
body = "Action=GetCallerIdentity&Version=2011-06-15"
answers = {}
for host in ("sts.amazonaws.com:443", "sts.amazonaws.com"):
    request = AWSRequest("POST", f"https://{host}/", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8", "Host": host})
    SigV4Auth(creds, "sts", "us-east-1").add_auth(request)
    conn = http.client.HTTPSConnection("sts.amazonaws.com", 443, context=context, timeout=30)
    conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
    for name, value in request.headers.items():
        conn.putheader(name, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body.encode())
    response = conn.getresponse()
    answers[host] = {"status": response.status, "body": response.read().decode()[:600]}
    conn.close()
print(json.dumps(answers))
"""


def test_case4_host_with_explicit_port_is_signed_as_sent(agents: Agents, alice_token_file: Path):
    """A client that puts `:443` in its Host header (the CLI drops it): the Host signed must be
    the Host sent, byte for byte, or moto's signature check fails."""
    result = agents.python(alice_token_file, HOST_PORT_SCRIPT)

    assert result.returncode == 0, describe(result)
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for host, answer in answers.items():
        assert answer["status"] == 200, (host, answer)
        assert "assumed-role/agent/agent-alice@" in answer["body"], (host, answer)
