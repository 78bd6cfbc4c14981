"""Breaking the policy: requests whose action or parameters the gateway reads differently from
the service that executes them. What policy checked must be what AWS (here moto) carries out;
an ambiguous request must be refused (fail closed), never decided on one reading and executed
on another.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, Moto, PolicyControl, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: An agent that sends ONE raw HTTP/1.1 request over TLS through the redirect and prints
#: {"status", "body"}. Spec (argv[1], JSON): host (SNI and connect), method, path, headers
#: ([[name, value], ...], sent as given, duplicates kept), body (text).
RAW_AGENT = r"""
import json, os, socket, ssl, sys
spec = json.loads(sys.argv[1])
raw = socket.create_connection((spec["host"], 443), timeout=30)
context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
tls = context.wrap_socket(raw, server_hostname=spec["host"])
body = spec.get("body", "").encode()
head = f'{spec["method"]} {spec["path"]} HTTP/1.1\r\n'
headers = spec.get("headers", [])
if not any(k.lower() == "host" for k, _ in headers):
    headers = [["Host", spec["host"]], *headers]
head += "".join(f"{k}: {v}\r\n" for k, v in headers)
head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
tls.sendall(head.encode() + body)
answer = b""
try:
    while piece := tls.recv(65536):
        answer += piece
except (ssl.SSLError, OSError):
    pass
status_line, _, rest = answer.partition(b"\r\n")
print(json.dumps({"status": status_line.decode(errors="replace"),
                  "body": rest.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:3000]}))
"""

EC2 = f"ec2.{harness.REGION}.amazonaws.com"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
RUN_ONE = (f"Action=RunInstances&Version=2016-11-15&ImageId={harness.AMI_ID}"
           "&MinCount=1&MaxCount=1&InstanceType=t3.micro")


def raw(agents: Agents, token_file: Path, spec: dict) -> dict:
    result = agents.run(token_file, [str(harness.PYTHON), "-c", RAW_AGENT, json.dumps(spec)])
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout.strip().splitlines()[-1])


def moto_actions(moto: Moto, mark: int) -> list[str]:
    return [str(k.get("action")) for k in moto.keys()[mark:]]


def read_only_policy() -> str:
    """Default deny; the agents group may only describe (no launches at all)."""
    return f"""\
default = "deny"

[[rule]]
name = "read-only {uuid.uuid4().hex[:8]}"
groups = ["agents"]
actions = ["ec2:Describe*", "sts:GetCallerIdentity"]
effect = "allow"
"""


def deny_launches_policy() -> str:
    """Default allow with one deny rule: launches are never allowed."""
    return f"""\
default = "allow"

[[rule]]
name = "no launches {uuid.uuid4().hex[:8]}"
actions = ["ec2:RunInstances"]
effect = "deny"
"""


def test_duplicate_action_in_form_body_cannot_launch_under_read_only_policy(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, moto: Moto):
    policy.install(read_only_policy())
    mark = len(moto.keys())
    answer = raw(agents, alice_token_file, {
        "host": EC2, "method": "POST", "path": "/",
        "headers": [["Content-Type", FORM]],
        "body": RUN_ONE + "&Action=DescribeInstances",
    })
    # Ambiguous: refused by the gateway, never forwarded (moto dispatches the FIRST Action; only
    # its own signature reconstruction, which drops duplicates, happens to stop it).
    assert "RunInstances" not in moto_actions(moto, mark), answer
    assert answer["status"].split()[1] in ("400", "403"), answer


def test_duplicate_action_in_query_cannot_launch_under_read_only_policy(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, moto: Moto):
    policy.install(read_only_policy())
    mark = len(moto.keys())
    answer = raw(agents, alice_token_file, {
        "host": EC2, "method": "GET", "path": "/?" + RUN_ONE + "&Action=DescribeInstances",
    })
    # Ambiguous: refused by the gateway, never forwarded (moto dispatches the FIRST Action; only
    # its own signature reconstruction, which drops duplicates, happens to stop it).
    assert "RunInstances" not in moto_actions(moto, mark), answer
    assert answer["status"].split()[1] in ("400", "403"), answer


def test_uppercase_form_content_type_does_not_dodge_a_deny_rule(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, moto: Moto):
    policy.install(deny_launches_policy())
    mark = len(moto.keys())
    answer = raw(agents, alice_token_file, {
        "host": EC2, "method": "POST", "path": "/",
        "headers": [["Content-Type", "Application/X-WWW-Form-Urlencoded"]],
        "body": RUN_ONE,
    })
    assert "RunInstances" not in moto_actions(moto, mark), answer


def test_form_body_without_content_type_does_not_dodge_a_deny_rule(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, moto: Moto):
    policy.install(deny_launches_policy())
    mark = len(moto.keys())
    answer = raw(agents, alice_token_file, {
        "host": EC2, "method": "POST", "path": "/", "body": RUN_ONE,
    })
    assert "RunInstances" not in moto_actions(moto, mark), answer


SSM = f"ssm.{harness.REGION}.amazonaws.com"


def test_query_action_next_to_x_amz_target_cannot_delete_under_read_only_policy(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, moto: Moto):
    name = f"/break/{uuid.uuid4().hex[:8]}"
    put = agents.aws(alice_token_file, "ssm", "put-parameter", "--name", name,
                     "--value", "v", "--type", "String")
    assert put.returncode == 0, describe(put)
    policy.install(f"""\
default = "deny"

[[rule]]
name = "ssm read-only {uuid.uuid4().hex[:8]}"
actions = ["ssm:Get*", "ssm:Describe*"]
effect = "allow"
""")
    mark = len(moto.keys())
    answer = raw(agents, alice_token_file, {
        "host": SSM, "method": "POST", "path": "/?Action=DeleteParameter",
        "headers": [["Content-Type", "application/x-amz-json-1.1"],
                    ["X-Amz-Target", "AmazonSSM.GetParameter"]],
        "body": json.dumps({"Name": name}),
    })
    policy.restore()
    still = agents.aws(alice_token_file, "ssm", "get-parameter", "--name", name)
    assert "DeleteParameter" not in moto_actions(moto, mark), answer
    assert still.returncode == 0, f"the parameter was deleted: {answer}\n{describe(still)}"


def launch_two(agents: Agents, token_file: Path) -> list[str]:
    result = agents.aws(token_file, "ec2", "run-instances", "--image-id", harness.AMI_ID,
                        "--count", "2", "--instance-type", "t3.micro")
    assert result.returncode == 0, describe(result)
    return [i["InstanceId"] for i in json.loads(result.stdout)["Instances"]]


def instance_state(agents: Agents, token_file: Path, instance: str) -> str:
    result = agents.aws(token_file, "ec2", "describe-instances", "--instance-ids", instance)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_deny_rule_on_an_instance_id_holds_when_other_ids_are_added(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    protected, other = launch_two(agents, alice_token_file)
    policy.install(f"""\
default = "allow"

[[rule]]
name = "protect {uuid.uuid4().hex[:8]}"
actions = ["ec2:TerminateInstances"]
when = {{ InstanceId = "{protected}" }}
effect = "deny"
""")
    alone = agents.aws(alice_token_file, "ec2", "terminate-instances",
                       "--instance-ids", protected)
    assert alone.returncode != 0 and "AccessDenied" in alone.stderr, describe(alone)
    mixed = agents.aws(alice_token_file, "ec2", "terminate-instances",
                       "--instance-ids", protected, other)
    policy.restore()
    state = instance_state(agents, alice_token_file, protected)
    assert state == "running", f"protected instance is {state}: {describe(mixed)}"


DYNAMODB = f"dynamodb.{harness.REGION}.amazonaws.com"


def test_deeply_nested_json_does_not_dodge_a_deny_rule(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    table = f"prod-{uuid.uuid4().hex[:8]}"
    made = agents.aws(alice_token_file, "dynamodb", "create-table", "--table-name", table,
                      "--attribute-definitions", "AttributeName=id,AttributeType=S",
                      "--key-schema", "AttributeName=id,KeyType=HASH",
                      "--billing-mode", "PAY_PER_REQUEST")
    assert made.returncode == 0, describe(made)
    policy.install(f"""\
default = "allow"

[[rule]]
name = "never prod tables {uuid.uuid4().hex[:8]}"
actions = ["dynamodb:DeleteTable"]
when = {{ TableName = "prod-*" }}
effect = "deny"
""")
    plain = raw(agents, alice_token_file, {
        "host": DYNAMODB, "method": "POST", "path": "/",
        "headers": [["Content-Type", "application/x-amz-json-1.0"],
                    ["X-Amz-Target", "DynamoDB_20120810.DeleteTable"]],
        "body": json.dumps({"TableName": table}),
    })
    assert " 403 " in plain["status"] + " ", plain
    nested = "[" * 200 + "]" * 200
    answer = raw(agents, alice_token_file, {
        "host": DYNAMODB, "method": "POST", "path": "/",
        "headers": [["Content-Type", "application/x-amz-json-1.0"],
                    ["X-Amz-Target", "DynamoDB_20120810.DeleteTable"]],
        "body": '{"TableName": "%s", "Pad": %s}' % (table, nested),
    })
    policy.restore()
    listed = agents.aws(alice_token_file, "dynamodb", "list-tables")
    assert table in listed.stdout, f"the prod table was deleted: {answer}"


S3 = "s3.amazonaws.com"


def test_unknown_query_key_does_not_dodge_an_s3_delete_deny_rule(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    bucket, key = f"break-{uuid.uuid4().hex[:8]}", "keep-me.txt"
    # Path style throughout: the bucket has no name in the private hosts file.
    for path, body in ((f"/{bucket}", ""), (f"/{bucket}/{key}", "keep")):
        made = raw(agents, alice_token_file, {"host": S3, "method": "PUT", "path": path,
                                              "body": body})
        assert " 200 " in made["status"] + " ", made
    policy.install(f"""\
default = "allow"

[[rule]]
name = "no deletes {uuid.uuid4().hex[:8]}"
actions = ["s3:Delete*"]
effect = "deny"
""")
    plain = raw(agents, alice_token_file, {"host": S3, "method": "DELETE",
                                           "path": f"/{bucket}/{key}"})
    assert " 403 " in plain["status"] + " ", plain
    answer = raw(agents, alice_token_file, {"host": S3, "method": "DELETE",
                                            "path": f"/{bucket}/{key}?junk=1"})
    policy.restore()
    still = raw(agents, alice_token_file, {"host": S3, "method": "GET",
                                           "path": f"/{bucket}/{key}"})
    assert " 200 " in still["status"] + " ", f"the object was deleted: {answer} / {still}"
