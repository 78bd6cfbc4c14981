"""Breaking the redirect: can an agent reach an AWS address (127.0.0.2:443 here, where a plain
listener records whatever arrives) without passing the gateway?
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

NOBODY = 65534

#: TCP Fast Open: the connect happens inside sendto(MSG_FASTOPEN), with data in the SYN.
FAST_OPEN = f"""
import socket
s = socket.socket()
s.settimeout(5)
try:
    s.sendto(b"fast open bytes, not TLS\\n", socket.MSG_FASTOPEN, ({harness.AWS_ADDRESS!r}, 443))
    print("sent", s.getpeername())
except OSError as error:
    print("error", error)
"""

#: Moves this process into the cgroup whose cgroup.procs is argv[1], then connects.
MOVE_THEN_CONNECT = f"""
import os, socket, sys
try:
    with open(sys.argv[1], "w") as procs:
        procs.write(str(os.getpid()))
    print("moved")
except OSError as error:
    print("move refused", error.errno)
try:
    with socket.create_connection(({harness.AWS_ADDRESS!r}, 443), timeout=5) as conn:
        conn.sendall(b"escaped bytes, not TLS\\n")
    print("sent")
except OSError as error:
    print("error", error)
"""


def reached(listener: harness.Listener, marker: bytes) -> bool:
    harness.wait_until(lambda: True, 0.5, "a moment for the listener")
    return any(marker in data for data in listener.received)


def test_tcp_fast_open_is_redirected_too(agents: Agents, alice_token_file: Path):
    with harness.Listener() as listener:
        result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", FAST_OPEN])
        assert result.returncode == 0, describe(result)
        assert not reached(listener, b"fast open"), describe(result)


def run_as(agents: Agents, token_file: Path, user: int | None, script: str, *args: str):
    argv = [str(harness.BINARY), "run", "--config", str(agents.world.config),
            "--token-file", str(token_file)]
    if user is not None:
        argv += ["--user", str(user)]
    argv += ["--", "/usr/bin/python3", "-c", script, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=agents.env())


def test_unprivileged_agent_cannot_leave_its_cgroup(agents: Agents, alice_token_file: Path):
    outer = harness.cgroup2_mount() / "cgroup.procs"
    parent = agents.world.cgroup_root / "cgroup.procs"
    with harness.Listener() as listener:
        for target in (outer, parent):
            result = run_as(agents, alice_token_file, NOBODY, MOVE_THEN_CONNECT, str(target))
            assert "move refused" in result.stdout, describe(result)
        assert not reached(listener, b"escaped"), listener.received


def test_root_agent_leaves_its_cgroup_and_reaches_aws_directly(
        agents: Agents, alice_token_file: Path):
    """Documented here, not a defect of the gateway: an agent run as root (no --user) is
    trusted with the machine; it can move itself out of the session's cgroup."""
    outer = harness.cgroup2_mount() / "cgroup.procs"
    with harness.Listener() as listener:
        result = run_as(agents, alice_token_file, None, MOVE_THEN_CONNECT, str(outer))
        assert "moved" in result.stdout, describe(result)
        assert reached(listener, b"escaped"), describe(result)
