"""The one-command demo of the main job (run by scripts/demo, inside its private namespaces).

It starts the same real peers as the e2e suite (tests/e2e/harness.py): a throw-away CA, the
local OIDC provider, moto standing in for AWS, and `interceptor daemon`; fetches an agent token
from the IdP; runs the stock AWS CLI as an agent under `interceptor run`; shows the live session
from the admin side and the audit lines; and cleans everything up. Exit status 0 only when every
step worked.

Usage (scripts/demo does this after setup and build):
    python tests/e2e/demo.py [--keep]      # --keep: leave the working directory for a look
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import harness
from harness import Agents, Daemon, HarnessError, Idp, Moto, TestCa, World

#: The agent's script: the stock AWS CLI, each command echoed before it runs. At the end it
#: prints WAIT_MARK and waits for a line on stdin, so the admin side sees a live session.
WAIT_MARK = "agent: done; waiting while the admin looks at the session"
AGENT_SCRIPT = f"""
set -e
step() {{
  printf '\\n  agent$ %s\\n' "$*"
  out=$("$@" 2>&1) && rc=0 || rc=$?
  printf '%s\\n' "$out" | sed 's/^/    /'
  return $rc
}}
expect_denied() {{
  if step "$@"; then echo '    expected a denial, but the call went through'; return 1; fi
}}
step aws sts get-caller-identity
step aws s3 mb s3://demo-bucket
step aws s3 ls
step aws ec2 run-instances --image-id {harness.AMI_ID} --count 1 --instance-type t3.micro \\
    --query 'Instances[0].[InstanceId,InstanceType,State.Name]' --output text
step aws ec2 describe-instances --output table \\
    --query 'Reservations[].Instances[].{{Id:InstanceId,Type:InstanceType,State:State.Name}}'
printf '\\n  (a misread comment: 10 instances; the policy allows 2 per call)\\n'
expect_denied aws ec2 run-instances --image-id {harness.AMI_ID} --count 10 \\
    --instance-type t3.micro
echo
echo '{WAIT_MARK}'
read -r _
"""
#: The demo's policy (DESIGN.md's shape): reads, bucket creation and small launches allowed for
#: the "agents" group, everything else denied.
DEMO_POLICY = """\
default = "deny"

[[rule]]
name = "read-only"
groups = ["agents"]
actions = ["sts:GetCallerIdentity", "ec2:Describe*", "s3:List*", "s3:Get*"]
effect = "allow"

[[rule]]
name = "own buckets"
groups = ["agents"]
actions = ["s3:CreateBucket"]
effect = "allow"

[[rule]]
name = "small launches"
groups = ["agents"]
actions = ["ec2:RunInstances"]
when = { MaxCount = "<= 2", InstanceType = ["t3.micro", "t3.small"] }
effect = "allow"
limit = { count = "MaxCount", max = 4, per = "1h" }
"""
#: The agent ends within this time, or the demo fails.
AGENT_TIMEOUT = 120.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: The daemon's life-cycle log lines worth showing a new user.
DAEMON_SHOWN = re.compile(r"config loaded|policy loaded|redirect attached|listening|CA")


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


class Steps:
    """Numbered, timed step headings."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.number = 0

    def __call__(self, title: str) -> None:
        self.number += 1
        elapsed = time.monotonic() - self.started
        print(f"\n==> {self.number}. {title}   [{elapsed:4.1f}s]", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def say(text: str = "", indent: int = 4) -> None:
    for line in (text.splitlines() or [""]):
        print(" " * indent + line, flush=True)


def run_cli(*args: str, config: Path) -> str:
    """An `interceptor` admin command (we are root, so admin); its output, or DemoError."""
    argv = [str(harness.BINARY), *args, "--config", str(config)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                            env=harness.clean_env({}))
    if result.returncode != 0:
        raise DemoError(f"`interceptor {' '.join(args)}` exited {result.returncode}: "
                        f"{result.stderr.strip()}")
    return result.stdout


def start_idp(directory: Path, ca: TestCa) -> Idp:
    """The IdP, with one retry: a start that hangs is killed and started again."""
    try:
        return Idp.start(directory, ca, timeout=10.0)
    except HarnessError as error:
        say(f"the IdP did not start ({str(error).splitlines()[0]}); trying once more")
        return Idp.start(directory, ca, timeout=10.0)


def start_peers(step: Steps, work: Path) -> World:
    step("Peers on loopback: a test CA, a local OIDC provider, moto as the AWS stand-in")
    ca = TestCa.create(work / "ca")
    idp = start_idp(work / "idp", ca)
    say(f"OIDC provider  {idp.issuer}   (panva oidc-provider, pid {idp.process.pid})")
    moto = Moto.start(work / "moto")
    say(f"AWS stand-in   {moto.url}   (moto, SigV4 checks on, pid {moto.process.pid})")
    say(f"private /etc/hosts: AWS names -> {harness.AWS_ADDRESS} (not the gateway's address;"
        " only the eBPF redirect brings agents there)")
    return World(tmp=work, ca=ca, idp=idp, moto=moto, gateway_port=harness.free_port(),
                 cgroup_root=harness.cgroup2_mount() / f"interceptor-demo-{os.getpid()}")


def show_config(step: Steps, world: World) -> None:
    step(f"Config written: {world.config}")
    world.write_config()
    world.policy.write_text(DEMO_POLICY)
    say(world.config.read_text())
    say(f"policy {world.policy}:")
    say(world.policy.read_text(), indent=6)


def start_daemon(step: Steps, daemon: Daemon) -> None:
    step("Starting the daemon: `interceptor daemon --config <config>`")
    daemon.start()
    assert daemon.process is not None  # start() returned, so the process exists and is ready
    say(f"pid {daemon.process.pid}, log {daemon.process.stderr}")
    for line in daemon.process.stderr.read_text(errors="replace").splitlines():
        line = ANSI.sub("", line)
        if " INFO " in line and DAEMON_SHOWN.search(line):
            say("| " + line.split(" INFO ", 1)[1].strip())


def fetch_token(step: Steps, world: World, agents: Agents) -> Path:
    step(f"An agent token from the local IdP (client credentials of {harness.ALICE!r})")
    token = world.idp.token(harness.ALICE)
    header, claims = harness.jwt_parts(token)
    path = agents.token_file("alice", token)
    expires = datetime.fromtimestamp(claims["exp"]).strftime("%H:%M:%S")
    say(f"token file {path} ({len(token)} bytes, {header.get('alg')}, kid {header.get('kid')})")
    say(f"sub={claims.get('sub')}  groups={claims.get('groups')}  aud={claims.get('aud')}")
    say(f"iss={claims.get('iss')}  expires {expires}")
    return path


def run_agent(step: Steps, world: World, agents: Agents, token_file: Path) -> None:
    step("The agent: the stock AWS CLI under `interceptor run` (placeholder keys only)")
    say(f"$ interceptor run --config {world.config} --token-file {token_file} -- sh -c '...'")
    argv = agents.argv(token_file, ["sh", "-c", AGENT_SCRIPT])
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=agents.env(),
                             start_new_session=True)
    assert agent.stdin is not None and agent.stdout is not None  # both are pipes
    lines = follow(agent.stdout)
    deadline = time.monotonic() + AGENT_TIMEOUT
    try:
        while (line := next_line(lines, deadline)) is not None:
            say(line, indent=2)
            if line == WAIT_MARK:
                show_sessions(step, world)
                step("The agent finishes")
                agent.stdin.write("\n")
                agent.stdin.close()
        code = agent.wait(max(1.0, deadline - time.monotonic()))
    except (DemoError, subprocess.TimeoutExpired) as error:
        agent.kill()
        raise DemoError(f"the agent did not finish: {error}") from None
    say(f"`interceptor run` exited {code} (the agent's own exit code)")
    if code != 0:
        raise DemoError(f"the agent failed with exit code {code}")


def follow(stream) -> queue.Queue:
    """The stream's lines (indentation kept) on a queue, then None at its end.

    A thread reads, so a line already in the stream's buffer is never missed (select on the
    descriptor cannot see it).
    """
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue, deadline: float) -> str | None:
    """The agent's next line, None at the end of its output; DemoError at the deadline."""
    try:
        return lines.get(timeout=max(0.0, deadline - time.monotonic()))
    except queue.Empty:
        raise DemoError(f"no output from the agent within {AGENT_TIMEOUT:.0f}s") from None


def show_sessions(step: Steps, world: World) -> None:
    step("Admin side, while the agent is still running: `interceptor sessions`")
    say(run_cli("sessions", config=world.config))


def show_audit(step: Steps, world: World) -> None:
    step(f"Audit log: {world.audit_log} (one JSON line per request)")

    def request_lines() -> list[dict]:
        return [line for line in harness.read_jsonl(world.audit_log)
                if line.get("event", "request") == "request"]

    # The daemon's audit writer gathers lines for a few milliseconds before each write.
    try:
        harness.wait_until(lambda: bool(request_lines()), 10.0, "request lines in the audit log")
    except harness.HarnessError as error:
        raise DemoError(f"no request lines in {world.audit_log}") from error
    lines = request_lines()
    say(f"{'time':<12} {'session':<15} {'subject':<12} {'action':<24} {'decision':<9} "
        f"{'rule':<15} {'status':<6} request_id")
    for line in lines:
        clock = str(line.get("time", ""))[11:23]
        subject = (line.get("identity") or {}).get("subject", "")
        say(f"{clock:<12} {line.get('session', ''):<15} {subject:<12} "
            f"{line.get('action', ''):<24} {line.get('decision', ''):<9} "
            f"{line.get('rule') or '-':<15} {line.get('status', '')!s:<6} "
            f"{line.get('request_id') or '-'}")
    say("")
    denied = [line for line in lines if line.get("decision") == "deny"]
    say("the denied call's line in full:" if denied else "the first line in full:")
    say(json.dumps((denied or lines)[0], indent=2), indent=6)
    keys = world.moto.keys()
    placeholders = [k for k in keys if not str(k.get("access_key_id", "")).startswith("ASIA")]
    # Besides the agent's forwarded calls, moto saw the daemon's own chained AssumeRole (the
    # one that puts SourceIdentity and session tags on the session's credentials).
    say(f"moto saw {len(keys)} signed calls (the agent's forwarded calls and the daemon's "
        f"chained AssumeRole), all with STS-issued ASIA... keys: "
        f"{'yes' if keys and not placeholders else 'NO'}")
    if placeholders:
        raise DemoError(f"moto saw keys other than STS-issued ones: {placeholders}")


def clean_up(world: World | None, daemon: Daemon | None) -> list[str]:
    """Daemon by PID (SIGTERM), our cgroups, the explicit uninstall, peers by PID."""
    problems: list[str] = []
    if daemon is not None and daemon.process is not None:
        daemon.stop()
    if world is not None:
        problems += harness.remove_cgroup_tree(world.cgroup_root)
    if daemon is not None and daemon.starts:
        result = daemon.uninstall()
        if result.returncode != 0:
            problems.append(f"uninstall exited {result.returncode}: {result.stderr.strip()}")
    if world is not None:
        world.idp.process.stop()
        world.moto.process.stop()
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    if not harness.in_private_namespaces():
        sys.exit("demo.py runs only inside the private namespaces scripts/demo makes")
    if not harness.BINARY.exists():
        sys.exit(f"{harness.BINARY} is missing: run scripts/demo (it builds first)")

    step = Steps()
    work = Path(tempfile.mkdtemp(prefix="interceptor-demo-"))
    world: World | None = None
    daemon: Daemon | None = None
    failed: str | None = None
    try:
        step(f"Private network + mount namespace; working directory {work}")
        harness.bind_private_etc(work / "etc")
        world = start_peers(step, work)
        show_config(step, world)
        daemon = Daemon(world)
        start_daemon(step, daemon)
        agents = Agents(world=world, home=work / "agent-home", tokens=work / "tokens")
        token_file = fetch_token(step, world, agents)
        run_agent(step, world, agents, token_file)
        show_audit(step, world)
    except (DemoError, HarnessError, OSError, subprocess.SubprocessError) as error:
        failed = str(error)
        if daemon is not None:
            print(f"\n--- daemon log (tail)\n{ANSI.sub('', daemon.log_tail())}", flush=True)
    finally:
        step("Clean-up: daemon (SIGTERM by pid), `interceptor daemon --uninstall`, cgroups, peers")
        problems = clean_up(world, daemon)
        for problem in problems:
            say(f"problem: {problem}")
    if failed or problems:
        say(f"working directory kept for a look: {work}", indent=0)
        print(f"\ndemo FAILED after {step.elapsed():.1f}s: {failed or problems}", flush=True)
        return 1
    if args.keep:
        say(f"working directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ndemo OK in {step.elapsed():.1f}s: every step passed, nothing left running.",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
