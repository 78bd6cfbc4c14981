"""A session's recording survives the daemon being killed with SIGKILL mid-session, and
`interceptor replay` (which needs no daemon) shows every finished call, in order, and which of
them a stricter candidate policy would decide differently.

The test restarts the daemon before it ends, so the files after it find one running.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: The agent's calls, in order, as (CLI arguments, IAM action).
CALLS = [
    (["sts", "get-caller-identity"], "sts:GetCallerIdentity"),
    (["ec2", "describe-instances"], "ec2:DescribeInstances"),
    (["dynamodb", "list-tables"], "dynamodb:ListTables"),
    (["secretsmanager", "list-secrets"], "secretsmanager:ListSecrets"),
]

#: Stricter than the suite's permissive policy: only GetCallerIdentity stays allowed.
CANDIDATE_POLICY = """\
default = "deny"

[[rule]]
name = "whoami only"
actions = ["sts:GetCallerIdentity"]
effect = "allow"
"""


def agent_script() -> str:
    calls = "; ".join(f"{harness.AWS_CLI} --output json {' '.join(args)} >/dev/null || exit 3"
                      for args, _ in CALLS)
    return f'echo "$INTERCEPTOR_SESSION"; {calls}; echo done; exec sleep 120'


def test_replay_after_sigkill_shows_every_finished_call_in_order(
        daemon: Daemon, agents: Agents, alice_token_file: Path, world: World):
    agent = agents.spawn(alice_token_file, ["sh", "-c", agent_script()])
    session = ""
    try:
        session = harness.read_line(agent.stdout, 30.0, "the agent's session id")
        done = harness.read_line(agent.stdout, 120.0, "the agent's calls")
        assert done == "done", agent.stderr.read() if agent.poll() is not None else done
        assert daemon.process is not None
        daemon.process.stop(signal.SIGKILL, timeout=10.0)

        text = harness.admin(harness.replay_argv(world.config, session))
        as_json = harness.admin(harness.replay_argv(world.config, session, json=True))
        candidate = world.tmp / "replay-candidate.toml"
        candidate.write_text(CANDIDATE_POLICY)
        what_if = harness.admin(harness.replay_argv(world.config, session, policy=candidate))
    finally:
        agent.kill()
        agent.wait(10)
        if session:
            kill_leftovers(world.cgroup_root / session)
        daemon.start()

    assert text.returncode == 0, describe(text)
    assert as_json.returncode == 0, describe(as_json)
    entries = json.loads(as_json.stdout)
    exchanges = [entry for entry in entries if entry["kind"] == "exchange"]
    assert entries[0]["kind"] == "session_opened" and entries[0]["session"] == session
    assert [x["action"] for x in exchanges] == [action for _, action in CALLS]
    assert [x["seq"] for x in exchanges] == list(range(1, len(CALLS) + 1))
    assert all(x["decision"] == "allow" and x["response"]["status"] == 200
               and x["response"]["complete"] for x in exchanges), exchanges
    # The file on disk is whole: every line parses.
    assert len(harness.read_recording(world, session)) == len(entries)

    numbered = [line for line in text.stdout.splitlines() if line.startswith("#")]
    assert [line.split()[2] for line in numbered] == [action for _, action in CALLS], text.stdout
    assert "incomplete line" not in text.stdout

    assert what_if.returncode == 0, describe(what_if)
    changed = [line for line in what_if.stdout.splitlines() if line.startswith("#")]
    assert [line.split()[1].rstrip(":") for line in changed] == [a for _, a in CALLS[1:]]
    assert all("allow -> deny" in line for line in changed), what_if.stdout
    assert f"3 of {len(CALLS)} recorded calls" in what_if.stdout, what_if.stdout


def kill_leftovers(cgroup: Path) -> None:
    """The agent's processes (ours) in its session cgroup, which the killed daemon left."""
    kill = cgroup / "cgroup.kill"
    if kill.exists():
        kill.write_text("1")


#: A boto3 agent that makes one STS call per line on stdin and prints "ok" after each.
STEPPING_AGENT = """
import os, sys
import boto3
sts = boto3.client("sts")
print(os.environ["INTERCEPTOR_SESSION"], flush=True)
for _ in sys.stdin:
    sts.get_caller_identity()
    print("ok", flush=True)
"""


def step(agent) -> None:
    agent.stdin.write("go\n")
    agent.stdin.flush()
    assert harness.read_line(agent.stdout, 60.0, "the agent's call") == "ok"


def test_recording_goes_on_after_a_torn_last_line_when_the_session_is_adopted(
        daemon: Daemon, agents: Agents, alice_token_file: Path, world: World):
    agent = agents.spawn(alice_token_file, [str(harness.PYTHON), "-c", STEPPING_AGENT])
    try:
        session = harness.read_line(agent.stdout, 30.0, "the agent's session id")
        step(agent)
        daemon.stop()
        # What a write cut short leaves: Linux stops a write(2) to a file between pages when
        # SIGKILL arrives, so a long exchange line can be torn by `kill -9` too.
        with harness.recording_path(world, session).open("ab") as recording:
            recording.write(b'{"kind":"exchange","seq":2,"time":"2026-')
        daemon.start()
        harness.wait_for_session(world.config, lambda s: s["id"] == session)
        step(agent)
        step(agent)
        as_json = harness.admin(harness.replay_argv(world.config, session, json=True))
    finally:
        agent.kill()
        agent.wait(10)

    assert as_json.returncode == 0, describe(as_json)
    exchanges = [e for e in json.loads(as_json.stdout) if e["kind"] == "exchange"]
    assert [x["seq"] for x in exchanges] == [1, 2, 3], exchanges
