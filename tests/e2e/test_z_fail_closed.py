"""Fail closed: with the daemon stopped (not uninstalled) an agent's connection is refused.

This file runs last (pytest.ini): it stops the daemon, then starts it again and checks that the
restarted daemon takes the pinned programs over and serves agents.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Listener, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def test_stopped_daemon_refuses_agent_connections_then_restart_serves_again(
        daemon: Daemon, agents: Agents, alice_token_file: Path):
    agent = agents.spawn(alice_token_file, [str(harness.PYTHON), "-c",
                                            harness.CONNECT_SCRIPT, "wait"])
    try:
        assert harness.read_line(agent.stdout, 30.0, "the agent") == "ready"
        with Listener() as listener:
            asked = time.monotonic()
            status = daemon.stop()
            took = time.monotonic() - asked
            # SIGTERM is a clean stop (systemd's): at once, exit status 0, not a kill.
            assert status == 0 and took < 5.0, f"exit status {status} after {took:.1f}s"
            agent.stdin.write("go\n")
            agent.stdin.flush()
            outcome = harness.read_line(agent.stdout, 30.0, "the agent's connect")
        assert outcome == "refused", agent.stderr.read() if outcome == "" else outcome
        assert listener.received == [], "with the daemon down nothing may reach the address"
    finally:
        agent.kill()
        agent.wait(10)
        daemon.start()

    result = agents.aws(alice_token_file, "sts", "get-caller-identity")
    assert result.returncode == 0, describe(result)
    assert ":assumed-role/agent/" in json.loads(result.stdout)["Arn"]
