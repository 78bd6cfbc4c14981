"""`interceptor policy check`: validate a policy file and dry-run a request, no daemon needed.

The command runs without --config and without a config file at the default path, as on a
developer's machine where no daemon is installed.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import harness


def check(policy: Path, request: Path | None = None) -> subprocess.CompletedProcess:
    return harness.admin(harness.policy_check_argv(policy, request))


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout + result.stderr


def field(result: subprocess.CompletedProcess, name: str) -> str:
    """The value of a `name: value` line of the dry-run report."""
    match = re.search(rf"^{name}:\s*(.*)$", result.stdout, re.M)
    assert match, f"no {name!r} line in:\n{harness.describe(result)}"
    return match.group(1).strip()


@pytest.fixture
def design_policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(harness.design_policy())
    return path


def test_valid_policy_is_ok(design_policy: Path):
    result = check(design_policy)

    assert result.returncode == 0, harness.describe(result)
    assert "ok" in result.stdout


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line containing `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)



def broken(case: str, old: str, new: str, broken_line: str, reason: str, *marks):
    """A broken edit of the DESIGN example: `old` replaced by `new`; the refusal must name the
    line holding `broken_line` and say `reason`."""
    return pytest.param((old, new), broken_line, reason, id=case, marks=marks)


BROKEN = [
    broken("misspelt effect", 'effect = "approve"', 'effect = "alow"', 'effect = "alow"', "alow"),
    broken("unknown key", 'effect = "approve"', 'effects = "approve"', "effects =", "effects"),
    broken("comparison without a number", '"<= 2"', '"<= lots"', "<= lots", "number"),
    broken("action without service", 'actions = ["ec2:RunInstances"]',
           'actions = ["RunInstances"]', '["RunInstances"]', "service:Action"),
    broken("bad duration", 'timeout = "10m"', 'timeout = "10 fortnights"', "fortnights",
           "duration"),
    broken("unknown limit key", 'per = "1h" }', 'per = "1h", burst = 2 }', "burst", "burst"),
    broken("empty actions", 'actions = ["ec2:RunInstances"]', "actions = []", "actions = []",
           "empty"),
    broken("timeout on an allow rule", 'effect = "approve"', 'effect = "allow"',
           'timeout = "10m"', "timeout"),
]


@pytest.mark.parametrize(("edit", "broken_line", "reason"), BROKEN)
def test_broken_policy_is_refused_naming_the_line_and_the_reason(
        tmp_path: Path, edit: tuple[str, str], broken_line: str, reason: str):
    text = harness.design_policy()
    assert edit[0] in text
    text = text.replace(edit[0], edit[1], 1)
    path = tmp_path / "broken.toml"
    path.write_text(text)

    result = check(path)

    assert result.returncode != 0, harness.describe(result)
    assert reason in output(result), harness.describe(result)
    assert f"line {line_of(text, broken_line)}" in output(result), harness.describe(result)


def test_json_request_for_fifty_instances_is_denied(design_policy: Path, tmp_path: Path):
    request = tmp_path / "launch-50.json"
    request.write_text(json.dumps({
        "subject": "alice", "groups": ["agents"], "action": "ec2:RunInstances",
        "params": {"MaxCount": 50, "InstanceType": "t3.micro"}}))

    result = check(design_policy, request)

    assert result.returncode == 0, harness.describe(result)
    assert field(result, "decision") == "deny"
    assert "ec2:RunInstances" in field(result, "reason")


def ec2_http_request(form: str) -> str:
    """A raw EC2 query request as the AWS CLI sends it (signature left out: not checked)."""
    return ("POST / HTTP/1.1\r\n"
            f"Host: ec2.{harness.REGION}.amazonaws.com\r\n"
            "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n"
            f"Content-Length: {len(form)}\r\n"
            "\r\n" + form)


def test_raw_http_small_launch_is_allowed_by_the_small_launches_rule(
        design_policy: Path, tmp_path: Path):
    request = tmp_path / "launch-2.http"
    request.write_text(ec2_http_request(
        f"Action=RunInstances&Version=2016-11-15&MaxCount=2&MinCount=1"
        f"&InstanceType=t3.micro&ImageId={harness.AMI_ID}"))

    result = check(design_policy, request)

    assert result.returncode == 0, harness.describe(result)
    assert field(result, "action") == "ec2:RunInstances"
    assert field(result, "decision") == "allow"
    assert field(result, "rule") == "small launches"
    assert "2 of 4" in field(result, "limit")


def test_raw_http_large_instance_type_falls_to_the_default(design_policy: Path, tmp_path: Path):
    request = tmp_path / "launch-big.http"
    request.write_text(ec2_http_request(
        f"Action=RunInstances&Version=2016-11-15&MaxCount=1&MinCount=1"
        f"&InstanceType=m5.24xlarge&ImageId={harness.AMI_ID}"))

    result = check(design_policy, request)

    assert result.returncode == 0, harness.describe(result)
    assert field(result, "decision") == "deny"


def test_raw_http_terminate_needs_approval(design_policy: Path, tmp_path: Path):
    request = tmp_path / "terminate.http"
    request.write_text(ec2_http_request(
        "Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"))

    result = check(design_policy, request)

    assert result.returncode == 0, harness.describe(result)
    assert field(result, "decision") == "approve"
    assert field(result, "rule") == "deletes need a human"


def test_raw_http_dynamodb_json_protocol_is_classified(design_policy: Path, tmp_path: Path):
    body = json.dumps({"TableName": "t"})
    request = tmp_path / "dynamodb.http"
    request.write_text("POST / HTTP/1.1\r\n"
                       f"Host: dynamodb.{harness.REGION}.amazonaws.com\r\n"
                       "X-Amz-Target: DynamoDB_20120810.DeleteTable\r\n"
                       "Content-Type: application/x-amz-json-1.0\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n{body}")

    result = check(design_policy, request)

    assert result.returncode == 0, harness.describe(result)
    assert field(result, "action") == "dynamodb:DeleteTable"
    assert field(result, "decision") == "deny"
