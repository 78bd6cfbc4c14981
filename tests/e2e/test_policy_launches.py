"""The incident the product exists for: an agent's AWS CLI asks for 50 instances and gets none,
while small launches go ahead up to a per-identity limit that survives a daemon restart.

Every test installs the DESIGN.md example policy (default deny) with the `policy` fixture, which
puts the permissive policy back afterwards. Quota usage is kept per rule name and subject in
records.dir/quotas.json for the whole suite, so a test that spends a limit names its own rule.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, AuditLog, Daemon, Moto, PolicyControl, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def unique(name: str) -> str:
    """A rule name of this test alone, so quota usage never leaks between tests."""
    return f"{name} {uuid.uuid4().hex[:8]}"


def launch(agents: Agents, token_file: Path, count: int,
           instance_type: str = "t3.micro") -> subprocess.CompletedProcess:
    return agents.aws(token_file, "ec2", "run-instances", "--image-id", harness.AMI_ID,
                      "--count", str(count), "--instance-type", instance_type)


def instance_ids(agents: Agents, token_file: Path) -> set[str]:
    """Every instance moto has, read through the gateway (allowed by the read-only rule)."""
    result = agents.aws(token_file, "ec2", "describe-instances")
    assert result.returncode == 0, describe(result)
    described = json.loads(result.stdout)
    return {i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]}


def launched_ids(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode == 0, describe(result)
    return [i["InstanceId"] for i in json.loads(result.stdout)["Instances"]]


def is_run_instances(subject: str):
    return lambda line: (harness.audit_action_name(line) == "RunInstances"
                         and (line.get("identity") or {}).get("subject") == subject)


def test_fifty_instances_are_denied_and_none_is_launched(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, audit: AuditLog,
        moto: Moto):
    policy.install(harness.design_policy())
    before = instance_ids(agents, alice_token_file)
    moto_before = len(moto.keys())
    mark = audit.mark()

    result = launch(agents, alice_token_file, 50)

    after = instance_ids(agents, alice_token_file)
    assert result.returncode != 0, describe(result)
    assert "AccessDenied" in result.stderr, describe(result)
    assert "RunInstances" in result.stderr and "default is deny" in result.stderr, describe(result)
    assert after == before, "moto must not have launched anything"
    assert not [k for k in moto.keys()[moto_before:] if k.get("action") == "RunInstances"], \
        "the denied call must not reach moto"
    # The describe-instances line after it is the barrier: the audit writer keeps order.
    audit.wait_for(mark, lambda line: harness.audit_action_name(line) == "DescribeInstances",
                   "the describe-instances after the denial")
    lines = [line for line in audit.since(mark) if is_run_instances(harness.ALICE)(line)]
    assert len(lines) == 1, f"the CLI must not retry a denial: {lines}"
    assert lines[0]["decision"] == harness.AUDIT_DENIED
    assert lines[0]["status"] == 403


def test_small_launches_until_the_limit_then_denied_naming_it(
        agents: Agents, alice_token_file: Path, admin_token_file: Path,
        policy: PolicyControl, audit: AuditLog):
    rule = unique("small launches")
    policy.install(harness.design_policy(launches=rule, launch_max=4))

    first = launch(agents, alice_token_file, 2)
    third = launch(agents, alice_token_file, 1)
    fourth = launch(agents, alice_token_file, 1)
    mark = audit.mark()
    fifth = launch(agents, alice_token_file, 1)
    other_identity = launch(agents, admin_token_file, 1)

    assert len(launched_ids(first)) == 2
    assert len(launched_ids(third)) == 1
    assert len(launched_ids(fourth)) == 1
    assert fifth.returncode != 0, describe(fifth)
    assert "AccessDenied" in fifth.stderr, describe(fifth)
    assert rule in fifth.stderr and "limit" in fifth.stderr, describe(fifth)
    assert "4 of 4" in fifth.stderr, describe(fifth)
    assert len(launched_ids(other_identity)) == 1, "the limit counts per identity"
    denied = audit.wait_for(mark, is_run_instances(harness.ALICE), "the fifth launch")
    assert [line["decision"] for line in denied] == [harness.AUDIT_DENIED]
    assert denied[0]["rule"] == rule


def test_spent_limit_survives_a_daemon_restart(
        agents: Agents, alice_token_file: Path, policy: PolicyControl, daemon: Daemon,
        world: harness.World):
    rule = unique("small launches")
    policy.install(harness.design_policy(launches=rule, launch_max=4))
    assert len(launched_ids(launch(agents, alice_token_file, 2))) == 2
    assert len(launched_ids(launch(agents, alice_token_file, 2))) == 2

    daemon.stop()
    daemon.start()
    after_restart = launch(agents, alice_token_file, 1)

    assert (world.records / harness.QUOTA_FILE_NAME).exists()
    assert after_restart.returncode != 0, describe(after_restart)
    assert "AccessDenied" in after_restart.stderr, describe(after_restart)
    assert rule in after_restart.stderr and "4 of 4" in after_restart.stderr, \
        describe(after_restart)


def test_dry_runs_do_not_use_up_the_limit(
        agents: Agents, alice_token_file: Path, policy: PolicyControl):
    rule = unique("small launches")
    policy.install(harness.design_policy(launches=rule, launch_max=4))
    for _ in range(2):
        dry = agents.aws(alice_token_file, "ec2", "run-instances", "--dry-run",
                         "--image-id", harness.AMI_ID, "--count", "2",
                         "--instance-type", "t3.micro")
        assert "DryRunOperation" in dry.stderr, describe(dry)

    real = launch(agents, alice_token_file, 1)

    assert len(launched_ids(real)) == 1, "two dry runs launched nothing: the limit is unused"
