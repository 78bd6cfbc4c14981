"""Breaking availability: one agent must not be able to take the gateway away from the others.

The daemon's open-file limit is set to 1024 for this test (`prlimit` on the daemon's PID):
the soft limit a systemd service gets by default. Nothing else about the daemon changes.
"""

from __future__ import annotations

import json
import time
import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, describe, read_line

pytestmark = pytest.mark.usefixtures("daemon_log")

#: Opens argv[1] TLS connections through the redirect, each sending a request head that
#: announces a body it never sends; prints "ready N", then holds them until stdin closes.
VICTIM = r"""
import os, subprocess, sys, time
print("ready", flush=True)
while sys.stdin.readline():
    started = time.monotonic()
    done = subprocess.run([sys.argv[1], "sts", "get-caller-identity", "--output", "json",
                           "--cli-connect-timeout", "5", "--cli-read-timeout", "10"],
                          capture_output=True, text=True,
                          env={**os.environ, "AWS_MAX_ATTEMPTS": "1"})
    print(done.returncode, round(time.monotonic() - started, 1),
          done.stderr.strip().replace("\n", " ")[-200:], flush=True)
"""


def test_idle_control_connections_do_not_end_live_sessions(
        agents: Agents, alice_token_file: Path, daemon: Daemon, world: harness.World):
    import socket
    assert daemon.process is not None
    pid = str(daemon.process.pid)
    original = subprocess.run(["prlimit", "--pid", pid, "--nofile", "--raw", "--noheadings",
                               "--output", "SOFT,HARD"], capture_output=True, text=True,
                              check=True).stdout.split()
    subprocess.run(["prlimit", "--pid", pid, f"--nofile=1024:{original[1]}"], check=True)
    victim = agents.spawn(alice_token_file, [str(harness.PYTHON), "-c", VICTIM,
                                             str(harness.AWS_CLI)])
    idle: list[socket.socket] = []
    try:
        assert read_line(victim.stdout, 30, "the victim agent") == "ready"
        for _ in range(1100):
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(str(world.control_socket))
            idle.append(conn)
        harness.wait_until(lambda: len(list(Path(f"/proc/{pid}/fd").iterdir())) >= 1024, 20,
                           "the daemon to reach its descriptor limit")
        time.sleep(1)  # a few ticks of the sessions' cgroup watchers (every 200 ms)
    finally:
        for conn in idle:
            conn.close()
        harness.wait_until(lambda: True, 1.0, "the idle connections to close")
        subprocess.run(["prlimit", "--pid", pid, f"--nofile={original[0]}:{original[1]}"],
                       check=True)
    try:
        victim.stdin.write("after\n")
        victim.stdin.flush()
        after = read_line(victim.stdout, 90, "the victim's call after the idle connections")
    finally:
        victim.stdin.close()
        victim.wait(60)
    assert after.split()[0] == "0", f"the victim's session was ended: {after}"
