"""The policy file reloads while the daemon runs, into live sessions; a broken edit is refused
naming its line, and the policy before it stays in force."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, PolicyControl, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: A long-lived boto3 agent: for every line on stdin it makes one allowed-by-read-only call
#: (sts) and one call only a permissive policy allows (dynamodb), and prints the outcome.
LIVE_AGENT = """
import json, sys
import boto3
from botocore.exceptions import ClientError
sts, dynamodb = boto3.client("sts"), boto3.client("dynamodb")

def outcome(call):
    try:
        call()
        return "ok"
    except ClientError as error:
        return error.response["Error"]["Code"]

print("ready", flush=True)
for _ in sys.stdin:
    print(json.dumps({"sts": outcome(sts.get_caller_identity),
                      "dynamodb": outcome(dynamodb.list_tables)}), flush=True)
"""


def policy_text() -> str:
    return harness.design_policy(launches=f"launches {uuid.uuid4().hex[:8]}")


def outcome(agent: subprocess.Popen) -> dict[str, str]:
    agent.stdin.write("go\n")
    agent.stdin.flush()
    return json.loads(harness.read_line(agent.stdout, 60.0, "the live agent"))


def caller_identity(agents: Agents, token_file: Path) -> subprocess.CompletedProcess:
    return agents.aws(token_file, "sts", "get-caller-identity")


def list_tables(agents: Agents, token_file: Path) -> subprocess.CompletedProcess:
    return agents.aws(token_file, "dynamodb", "list-tables")


def test_a_new_policy_applies_to_a_live_session_without_a_signal(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    agent = agents.spawn(alice_token_file, [str(harness.PYTHON), "-c", LIVE_AGENT])
    try:
        assert harness.read_line(agent.stdout, 60.0, "the live agent") == "ready"
        permissive = outcome(agent)
        policy.install(policy_text(), hangup=False)
        restricted = outcome(agent)
        policy.install(harness.PERMISSIVE_POLICY, hangup=False)
        permissive_again = outcome(agent)
    finally:
        agent.kill()
        agent.wait(10)

    assert permissive == {"sts": "ok", "dynamodb": "ok"}
    assert restricted["sts"] == "ok", "the session must survive the reload"
    assert restricted["dynamodb"] in ("AccessDenied", "AccessDeniedException")
    assert permissive_again == {"sts": "ok", "dynamodb": "ok"}


def test_broken_edit_is_refused_naming_the_line_and_the_previous_policy_stays(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    good = policy_text()
    policy.install(good)
    assert caller_identity(agents, alice_token_file).returncode == 0
    assert list_tables(agents, alice_token_file).returncode != 0

    broken = good.replace('effect = "approve"', 'effect = "alow"')
    broken_line = 1 + broken.splitlines().index('effect = "alow"')
    refusal = policy.install_broken(broken)
    allowed = caller_identity(agents, alice_token_file)
    denied = list_tables(agents, alice_token_file)

    assert any(f"line {broken_line}" in line and "alow" in line for line in refusal), refusal
    assert allowed.returncode == 0, describe(allowed)
    assert denied.returncode != 0, "the previous policy (default deny) must stay in force"
    assert "AccessDenied" in denied.stderr, describe(denied)
