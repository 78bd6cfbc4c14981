"""The admin CLI against live agents: `sessions`, `sessions watch`, `sessions kill`, the control
socket's refusal of non-admins, and the audit log's AWS request ids (CloudTrail linkage)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import harness
from harness import Agents, AuditLog, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: A long-lived boto3 agent: prints its pid and session, then makes one STS call per stdin line
#: and prints "ok" after each.
WAITING_AGENT = """
import json, os, sys
import boto3
sts = boto3.client("sts")
print(json.dumps({"pid": os.getpid(), "session": os.environ["INTERCEPTOR_SESSION"]}), flush=True)
for _ in sys.stdin:
    sts.get_caller_identity()
    print("ok", flush=True)
"""

#: The unprivileged uid the refusal tests run as (nobody): no file of the machine is edited.
NOBODY = 65534
_ANSI = re.compile(r"\x1b\[")


class WaitingAgent:
    """A running agent session driven line by line over stdin."""

    def __init__(self, agents: Agents, token_file: Path) -> None:
        self.popen = agents.spawn(token_file, [str(harness.PYTHON), "-c", WAITING_AGENT])
        hello = json.loads(harness.read_line(self.popen.stdout, 60.0, "the waiting agent"))
        self.pid: int = hello["pid"]
        self.session: str = hello["session"]

    def call(self) -> None:
        self.popen.stdin.write("go\n")
        self.popen.stdin.flush()
        assert harness.read_line(self.popen.stdout, 60.0, "the agent's call") == "ok"

    def close(self) -> None:
        self.popen.kill()
        self.popen.wait(10)


@pytest.fixture
def waiting_agent(agents: Agents, alice_token_file: Path):
    agent = WaitingAgent(agents, alice_token_file)
    try:
        yield agent
    finally:
        agent.close()


def test_sessions_lists_a_running_agent(waiting_agent: WaitingAgent, world: World,
                                        alice_token: str):
    waiting_agent.call()
    waiting_agent.call()
    _, claims = harness.jwt_parts(alice_token)

    listed = harness.wait_for_session(world.config, lambda s: s["id"] == waiting_agent.session)
    table = harness.admin(harness.sessions_argv(world.config))

    assert listed["subject"] == claims["sub"]
    assert listed["groups"] == claims["groups"]
    assert listed["role_arn"] == world.moto.role_arn
    assert waiting_agent.pid in listed["pids"], "the agent is `run` itself (exec)"
    assert listed["requests"] == 2
    assert listed["denied"] == 0
    assert abs(listed["started"] - time.time()) < 120
    assert table.returncode == 0, describe(table)
    row = next((line for line in table.stdout.splitlines() if waiting_agent.session in line), "")
    assert claims["sub"] in row and str(waiting_agent.pid) in row, table.stdout


HOLD_LIST_TABLES_POLICY = """\
default = "allow"

[[rule]]
name = "records: tables need a human"
actions = ["dynamodb:ListTables"]
effect = "approve"
timeout = "2m"
"""


def test_sessions_counts_the_calls_a_session_has_held(
        agents: Agents, alice_token_file: Path, world: World, policy: harness.PolicyControl):
    policy.install(HOLD_LIST_TABLES_POLICY)
    agent = agents.spawn(alice_token_file, [str(harness.AWS_CLI), "dynamodb", "list-tables"])
    try:
        held = harness.wait_for_held_call(world.config,
                                          lambda c: c["action"] == "dynamodb:ListTables")
        listed = harness.wait_for_session(world.config, lambda s: s["id"] == held["session"])
        table = harness.admin(harness.sessions_argv(world.config))
        harness.admin(harness.deny_argv(world.config, held["id"], "e2e: counted"))
    finally:
        agent.kill()
        agent.wait(10)

    assert listed.get("held") == 1, listed
    assert "HELD" in table.stdout.splitlines()[0], table.stdout


def start_watch(world: World, *session: str) -> subprocess.Popen:
    return subprocess.Popen(harness.sessions_argv(world.config, "watch", *session),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=harness.clean_env({}))


def read_until(watch: subprocess.Popen, needle: str, timeout: float = 30.0) -> list[str]:
    """Lines of the watch until one holds `needle` (all of them, that one last)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while not lines or needle not in lines[-1]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise harness.HarnessError(f"no watch line with {needle!r} in {timeout}s: {lines}")
        lines.append(harness.read_line(watch.stdout, left, "sessions watch"))
    return lines


def interrupt(watch: subprocess.Popen) -> tuple[int, float]:
    """SIGINT, as Ctrl-C: the exit code and how long it took."""
    started = time.monotonic()
    watch.send_signal(signal.SIGINT)
    try:
        code = watch.wait(5.0)
    except subprocess.TimeoutExpired:
        watch.kill()
        watch.wait(5.0)
        raise
    return code, time.monotonic() - started


def test_watch_streams_calls_of_a_running_agent_and_ends_on_ctrl_c(
        agents: Agents, alice_token_file: Path, world: World):
    watch = start_watch(world)
    try:
        banner = harness.read_line(watch.stdout, 10.0, "sessions watch")
        result = agents.aws(alice_token_file, "sts", "get-caller-identity")
        assert result.returncode == 0, describe(result)
        lines = read_until(watch, "GetCallerIdentity")
        code, took = interrupt(watch)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5.0)

    assert "watching" in banner
    seen = lines[-1]
    assert "sts:GetCallerIdentity" in seen and "allow" in seen and "200" in seen, seen
    assert not [line for line in [banner, *lines] if _ANSI.search(line)], "colours on a pipe"
    assert code == 0, watch.stderr.read()
    assert took < 1.0, f"Ctrl-C took {took:.2f}s"


def test_watch_of_one_session_shows_only_its_calls(
        waiting_agent: WaitingAgent, agents: Agents, alice_token_file: Path, world: World):
    watch = start_watch(world, waiting_agent.session)
    try:
        banner = harness.read_line(watch.stdout, 10.0, "sessions watch")  # subscribed from here
        assert waiting_agent.session in banner, banner
        other = agents.aws(alice_token_file, "dynamodb", "list-tables")
        assert other.returncode == 0, describe(other)
        waiting_agent.call()
        lines = read_until(watch, "GetCallerIdentity")
        code, took = interrupt(watch)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(5.0)

    assert waiting_agent.session in lines[-1] and "allow" in lines[-1], lines
    assert not [line for line in lines if "ListTables" in line], "another session's call shown"
    assert code == 0 and took < 1.0, (code, took)


def test_kill_stops_a_looping_agent_at_once_and_the_recording_says_who(
        agents: Agents, alice_token_file: Path, world: World, audit: AuditLog):
    loop = agents.spawn(alice_token_file, [
        "sh", "-c", f"while true; do {harness.AWS_CLI} sts get-caller-identity >/dev/null 2>&1; "
                    "done"])
    try:
        session = harness.wait_for_session(world.config, lambda s: loop.pid in s["pids"])["id"]
        harness.wait_until(
            lambda: any(line.get("session") == session and line.get("event") == "request"
                        for line in harness.read_jsonl(world.audit_log)),
            60.0, "the looping agent's first call")
        cgroup = Path(harness.wait_for_session(world.config,
                                               lambda s: s["id"] == session)["cgroup"])

        killed = harness.admin(harness.sessions_argv(world.config, "kill", session))
        started = time.monotonic()
        code = loop.wait(5.0)
        exited = time.monotonic() - started
        harness.wait_until(lambda: not cgroup_pids(cgroup), 5.0, "the session's cgroup to empty")
        emptied = time.monotonic() - started
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait(10)

    assert killed.returncode == 0, describe(killed)
    assert session in killed.stdout
    assert code == -signal.SIGKILL
    assert exited < 1.0, f"the agent lived {exited:.2f}s after the kill"
    assert emptied < 1.0, f"the session's processes lived {emptied:.2f}s after the kill"
    assert session not in [s["id"] for s in harness.live_sessions(world.config)]

    entries = harness.read_recording(world, session)
    kills = [entry for entry in entries if entry["kind"] == "session_killed"]
    assert len(kills) == 1 and kills[0]["by"] == "root", entries[-3:]
    after = entries[entries.index(kills[0]) + 1:]
    assert all(entry["kind"] == "exchange" and entry["time"] <= kills[0]["time"]
               for entry in after), f"entries after the kill: {after}"

    kill_lines = audit.wait_for(
        0, lambda line: line.get("event") == "session_killed" and line.get("session") == session,
        "the kill")
    assert kill_lines and "root" in kill_lines[0].get("reason", ""), kill_lines
    late = [line for line in harness.read_jsonl(world.audit_log)
            if line.get("session") == session and line.get("event") == "request"
            and line["time"] > kill_lines[0]["time"] and line.get("decision") == "allow"]
    assert not late, f"calls allowed after the kill: {late}"


def cgroup_pids(cgroup: Path) -> list[str]:
    """The processes left in a session's cgroup (none once it is removed)."""
    try:
        return (cgroup / "cgroup.procs").read_text().split()
    except FileNotFoundError:
        return []


@pytest.fixture
def nobody_world(world: World):
    """A config for uid 65534 naming a hard link to the control socket, a copy of alice's token
    (0644) and of the gateway CA bundle, in a directory that user can read: the suite's own
    world directory is root's only (0700)."""
    directory = Path(tempfile.mkdtemp(prefix="interceptor-e2e-nobody-"))
    try:
        directory.chmod(0o755)
        socket = directory / "control.sock"
        os.link(world.control_socket, socket)
        config = directory / "config.toml"
        config.write_text(world.config.read_text().replace(
            f'socket = "{world.control_socket}"', f'socket = "{socket}"'))
        assert str(socket) in config.read_text()
        home = directory / "home"
        home.mkdir()
        home.chmod(0o777)
        shutil.copy(world.records / "ca" / "ca.pem", directory / "ca.pem")
        for path in directory.iterdir():
            if path.is_file() and not path.is_socket():
                path.chmod(0o644)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def as_nobody(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env=harness.clean_env({"HOME": str(home), "AWS_DEFAULT_REGION": harness.REGION,
                               "PYTHONUNBUFFERED": "1",
                               "AWS_CONFIG_FILE": str(home / "absent"),
                               "AWS_SHARED_CREDENTIALS_FILE": str(home / "absent")}))


def test_control_socket_refuses_a_non_admin_who_may_still_open_a_session(
        nobody_world: Path, alice_token: str):
    config, home = nobody_world / "config.toml", nobody_world / "home"
    refused = {
        "sessions": as_nobody(harness.sessions_argv(config), home),
        "sessions --json": as_nobody(harness.sessions_argv(config, json=True), home),
        "sessions kill": as_nobody(harness.sessions_argv(config, "kill", "s-000000000000"), home),
        "sessions watch": as_nobody(harness.sessions_argv(config, "watch"), home),
        "approvals": as_nobody(harness.approvals_argv(config), home),
    }
    token = nobody_world / "token.jwt"
    token.write_text(alice_token)
    token.chmod(0o644)
    # The venv's Python lives under /root (0700): this agent is node with the JS SDK v3, and the
    # gateway CA is read from a copy (records.dir is root's in the suite).
    sts = harness.PEERS / "node_modules" / "@aws-sdk" / "client-sts"
    script = (f"const s = require({str(sts)!r});"
              "new s.STSClient({region: 'us-east-1'}).send(new s.GetCallerIdentityCommand({}))"
              ".then(r => console.log(r.Arn), e => { console.error(e); process.exit(1); });")
    agent = ["sh", "-c", f'id -u; echo "$INTERCEPTOR_SESSION"; '
                         f'NODE_EXTRA_CA_CERTS={nobody_world / "ca.pem"} node -e "$0"', script]
    opened = as_nobody(harness.run_argv(config, token, agent), home)

    for what, result in refused.items():
        assert result.returncode != 0, f"{what} answered a non-admin: {describe(result)}"
        assert "permission denied" in result.stderr.lower(), f"{what}: {describe(result)}"
        assert f"uid {NOBODY}" in result.stderr, f"{what}: {describe(result)}"
        assert result.stdout.strip() in ("", "watching all sessions (Ctrl-C to stop)"), what
    assert opened.returncode == 0, describe(opened)
    uid, session, arn = opened.stdout.split()
    assert uid == str(NOBODY) and session.startswith("s-")
    assert arn.endswith(f"@{session}"), arn


#: A boto3 agent printing, per call, the request id the SDK parsed and the x-amzn-requestid
#: header it received.
REQUEST_ID_AGENT = """
import json, os
import boto3
calls = [("sts:GetCallerIdentity", boto3.client("sts").get_caller_identity),
         ("dynamodb:ListTables", boto3.client("dynamodb").list_tables),
         ("secretsmanager:ListSecrets", boto3.client("secretsmanager").list_secrets),
         ("ec2:DescribeInstances", boto3.client("ec2").describe_instances)]
ids = {}
for action, call in calls:
    meta = call()["ResponseMetadata"]
    ids[action] = {"sdk": meta["RequestId"], "header": meta["HTTPHeaders"].get("x-amzn-requestid")}
arn = boto3.client("sts").get_caller_identity()["Arn"]
print(json.dumps({"session": os.environ["INTERCEPTOR_SESSION"], "ids": ids, "arn": arn}))
"""
#: moto's EC2 serializer puts a constant "request-id" in the body (botocore's RequestId for EC2)
#: while its x-amzn-requestid header is unique; real EC2 sends the same id in both.
MOTO_BODY_ID_GAP = {"ec2:DescribeInstances"}


def test_audit_lines_carry_the_request_id_aws_returned(
        agents: Agents, alice_token_file: Path, alice_token: str, audit: AuditLog,
        world: World):
    mark = audit.mark()
    result = agents.python(alice_token_file, REQUEST_ID_AGENT)
    assert result.returncode == 0, describe(result)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    session = out["session"]
    lines = audit.wait_for(mark, lambda line: line.get("session") == session
                           and harness.audit_action_name(line) == "DescribeInstances",
                           "the agent's last call")
    by_id = {line.get("request_id"): line for line in audit.since(mark)
             if line.get("event") == "request"}
    recorded = {entry.get("request_id") for entry in harness.read_recording(world, session)
                if entry["kind"] == "exchange"}

    assert lines
    for action, seen in out["ids"].items():
        request_id = seen["header"]
        assert request_id, f"moto gave {action} no x-amzn-requestid"
        if action not in MOTO_BODY_ID_GAP:
            assert seen["sdk"] == request_id, (action, seen)
        line = by_id.get(request_id)
        assert line is not None, f"no audit line with {action}'s request id {request_id}"
        assert line["session"] == session and line["action"].lower() == action.lower(), line
        assert request_id in recorded, f"{action}: request id not in the recording"
    # The assumed-role ARN (what CloudTrail shows) names the person and the session.
    _, claims = harness.jwt_parts(alice_token)
    assert out["arn"].endswith(f"/{claims['sub']}@{session}"), out["arn"]


#: A boto3 agent that keeps its connection to the gateway: one call, then, on a line from stdin,
#: a second call on the same pooled connection; prints "ok" or the error code and status.
KEEPALIVE_AGENT = """
import json, os, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
sts = boto3.client("sts", config=Config(retries={"total_max_attempts": 1}))
sts.get_caller_identity()
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
try:
    sts.get_caller_identity()
    print(json.dumps({"outcome": "ok"}), flush=True)
except ClientError as error:
    print(json.dumps({"outcome": error.response["Error"]["Code"],
                      "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
                      "message": error.response["Error"]["Message"]}), flush=True)
"""


def test_after_a_kill_a_call_on_a_connection_the_session_opened_is_refused(
        agents: Agents, alice_token_file: Path, world: World, audit: AuditLog):
    # The only way a process of the session outlives cgroup.kill: root moves it out first (to
    # the root cgroup). Its keep-alive connection still belongs to the session, so the gateway
    # must refuse the call it makes after the kill. `sh` keeps the session alive until then.
    agent = agents.spawn(alice_token_file, [
        "sh", "-c", f'{harness.PYTHON} -c "$0"; exec sleep 600', KEEPALIVE_AGENT])
    pid = 0
    try:
        pid = json.loads(harness.read_line(agent.stdout, 60.0, "the keep-alive agent"))["pid"]
        session = harness.wait_for_session(world.config, lambda s: pid in s["pids"])["id"]
        (harness.cgroup2_mount() / "cgroup.procs").write_text(str(pid))
        killed = harness.admin(harness.sessions_argv(world.config, "kill", session))
        assert killed.returncode == 0, describe(killed)
        agent.wait(5.0)
        mark = audit.mark()
        agent.stdin.write("go\n")
        agent.stdin.flush()
        after = json.loads(harness.read_line(agent.stdout, 60.0, "the call after the kill"))
    finally:
        agent.kill()
        agent.wait(10)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)

    assert after["outcome"] == "AccessDenied" and after["status"] == 403, after
    refusals = audit.wait_for(mark, lambda line: line.get("pid") == pid, "the refused call")
    assert all(line.get("decision") != "allow" and line.get("forwarded") is False
               for line in refusals), refusals


def alive(pid: int) -> bool:
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
