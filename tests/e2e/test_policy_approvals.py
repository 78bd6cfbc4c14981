"""Just-in-time approval: an agent's TerminateInstances is held until an admin approves it from
another process, is denied by an admin with a reason the agent sees, or times out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, AuditLog, PolicyControl, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: Well below botocore's 60 s read timeout, so the CLI waits for the human, not for itself.
APPROVAL_TIMEOUT = "20s"
SHORT_TIMEOUT_SECONDS = 3


def install(policy: PolicyControl, timeout: str) -> None:
    # A launch rule of this test alone: its quota usage stays out of the other tests' way.
    policy.install(harness.design_policy(launches=f"launches {uuid.uuid4().hex[:8]}",
                                         approve_timeout=timeout))


def launch_one(agents: Agents, token_file: Path) -> str:
    result = agents.aws(token_file, "ec2", "run-instances", "--image-id", harness.AMI_ID,
                        "--count", "1", "--instance-type", "t3.micro")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)["Instances"][0]["InstanceId"]


def start_terminate(agents: Agents, token_file: Path, instance_id: str) -> subprocess.Popen:
    """The agent's `aws ec2 terminate-instances`, running in the background."""
    return agents.spawn(token_file, [str(harness.AWS_CLI), "--output", "json", "ec2",
                                     "terminate-instances", "--instance-ids", instance_id])


def finish(agent: subprocess.Popen, timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        stdout, stderr = agent.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        stdout, stderr = agent.communicate()
        raise AssertionError(f"the held agent did not finish in {timeout}s:\n{stderr}") from None
    return subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr)


def held_terminate(world: World, instance_id: str) -> dict:
    """Waits until the terminate call for `instance_id` is listed as held."""
    return harness.wait_for_held_call(
        world.config, lambda call: f"InstanceId.1={instance_id}" in call.get("params", []))


def state_of(agents: Agents, token_file: Path, instance_id: str) -> str:
    result = agents.aws(token_file, "ec2", "describe-instances", "--instance-ids", instance_id)
    assert result.returncode == 0, describe(result)
    reservations = json.loads(result.stdout)["Reservations"]
    return reservations[0]["Instances"][0]["State"]["Name"]


def is_terminate(approval_id: str):
    return lambda line: (harness.audit_action_name(line) == "TerminateInstances"
                         and line.get("approval") == approval_id)


def test_held_terminate_is_approved_from_another_process_and_completes(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, world: World,
        audit: AuditLog):
    install(policy, APPROVAL_TIMEOUT)
    instance_id = launch_one(agents, alice_token_file)
    mark = audit.mark()

    agent = start_terminate(agents, alice_token_file, instance_id)
    try:
        held = held_terminate(world, instance_id)
        table = harness.admin(harness.approvals_argv(world.config, json=False))
        assert agent.poll() is None, "the agent must wait while its call is held"
        approved = harness.admin(harness.approve_argv(world.config, held["id"]))
    finally:
        result = finish(agent)

    assert held["subject"] == harness.ALICE
    assert held["groups"] == ["agents"]
    assert held["action"] == "ec2:TerminateInstances"
    assert held["rule"] == "deletes need a human"
    row = next((line for line in table.stdout.splitlines() if held["id"] in line), "")
    for shown in (harness.ALICE, "ec2:TerminateInstances", f"InstanceId.1={instance_id}"):
        assert shown in row, describe(table)
    assert approved.returncode == 0, describe(approved)
    assert result.returncode == 0, describe(result)
    terminating = json.loads(result.stdout)["TerminatingInstances"]
    assert [t["InstanceId"] for t in terminating] == [instance_id]
    assert state_of(agents, alice_token_file, instance_id) in ("shutting-down", "terminated")
    lines = audit.wait_for(mark, is_terminate(held["id"]), "the approved terminate")
    assert len(lines) == 1, lines
    assert lines[0]["decision"] == harness.AUDIT_APPROVED
    assert lines[0]["approved_by"] == "root"
    assert lines[0]["status"] == 200
    assert all(c["id"] != held["id"] for c in harness.held_calls(world.config))


def test_held_terminate_denied_by_an_admin_shows_the_reason(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, world: World,
        audit: AuditLog):
    install(policy, APPROVAL_TIMEOUT)
    instance_id = launch_one(agents, alice_token_file)
    mark = audit.mark()

    agent = start_terminate(agents, alice_token_file, instance_id)
    try:
        held = held_terminate(world, instance_id)
        denied = harness.admin(harness.deny_argv(world.config, held["id"], "not today"))
    finally:
        result = finish(agent)

    assert denied.returncode == 0, describe(denied)
    assert result.returncode != 0, describe(result)
    assert "AccessDenied" in result.stderr, describe(result)
    assert "not today" in result.stderr, describe(result)
    assert state_of(agents, alice_token_file, instance_id) == "running"
    lines = audit.wait_for(mark, is_terminate(held["id"]), "the denied terminate")
    assert len(lines) == 1, f"the CLI must not retry a denial: {lines}"
    assert lines[0]["decision"] == harness.AUDIT_DENIED
    assert lines[0]["approved_by"] == "root"
    assert "not today" in lines[0]["reason"]


def test_held_terminate_nobody_answers_is_denied_at_the_timeout(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, world: World,
        audit: AuditLog):
    install(policy, f"{SHORT_TIMEOUT_SECONDS}s")
    instance_id = launch_one(agents, alice_token_file)
    mark = audit.mark()

    agent = start_terminate(agents, alice_token_file, instance_id)
    try:
        held = held_terminate(world, instance_id)
    finally:
        result = finish(agent, timeout=SHORT_TIMEOUT_SECONDS + 30)

    assert held["expires_in"] <= SHORT_TIMEOUT_SECONDS
    assert result.returncode != 0, describe(result)
    assert "AccessDenied" in result.stderr, describe(result)
    assert "no approval within" in result.stderr, describe(result)
    assert f"{SHORT_TIMEOUT_SECONDS}s" in result.stderr, describe(result)
    assert state_of(agents, alice_token_file, instance_id) == "running"
    assert all(c["id"] != held["id"] for c in harness.held_calls(world.config))
    too_late = harness.admin(harness.approve_argv(world.config, held["id"]))
    assert too_late.returncode != 0 and "no held call" in too_late.stderr, describe(too_late)
    lines = audit.wait_for(mark, is_terminate(held["id"]), "the timed-out terminate")
    assert len(lines) == 1, f"the CLI must not retry a denial: {lines}"
    assert lines[0]["decision"] == harness.AUDIT_DENIED


def abandon_held_terminate(agents: Agents, token_file: Path, world: World) -> dict:
    """Holds a terminate, then kills the agent (as a crash or a client-side read timeout would
    drop its connection); returns the held call."""
    instance_id = launch_one(agents, token_file)
    agent = start_terminate(agents, token_file, instance_id)
    try:
        held = held_terminate(world, instance_id)
    finally:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait(10)
    return held


def test_held_call_of_an_agent_that_went_away_is_withdrawn(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, world: World):
    install(policy, APPROVAL_TIMEOUT)

    held = abandon_held_terminate(agents, alice_token_file, world)

    harness.wait_until(
        lambda: all(c["id"] != held["id"] for c in harness.held_calls(world.config)), 10.0,
        "the abandoned call to leave `interceptor approvals`", interval=0.2)
    late = harness.admin(harness.approve_argv(world.config, held["id"]))
    assert late.returncode != 0, "an abandoned call must not be approvable"


def test_held_call_of_an_agent_that_went_away_is_audited(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, world: World,
        audit: AuditLog):
    install(policy, APPROVAL_TIMEOUT)
    mark = audit.mark()

    held = abandon_held_terminate(agents, alice_token_file, world)
    # A later call is the barrier: the audit writer keeps order.
    assert agents.aws(alice_token_file, "sts", "get-caller-identity").returncode == 0
    audit.wait_for(mark, lambda line: harness.audit_action_name(line) == "GetCallerIdentity",
                   "the call after the abandoned one")

    assert [line for line in audit.since(mark) if line.get("approval") == held["id"]], \
        "every held call, answered or abandoned, must leave an audit line"
