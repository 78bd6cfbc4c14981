"""Only agents are redirected: a process outside the agent cgroups reaches what it dialled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, Listener, describe

pytestmark = pytest.mark.usefixtures("daemon_log")


def test_process_outside_the_agent_cgroup_is_not_redirected(agents: Agents):
    with Listener() as listener:
        result = subprocess.run([str(harness.PYTHON), "-c", harness.CONNECT_SCRIPT],
                                capture_output=True, text=True, timeout=30,
                                env=harness.clean_env({}))
        harness.wait_until(lambda: listener.received, 5.0, "the listener to get the bytes")

    assert result.stdout.strip() == "sent", describe(result)
    assert listener.received == [b"plain bytes, not TLS\n"]


def test_agent_connection_to_the_same_address_goes_to_the_gateway(
        agents: Agents, alice_token_file: Path):
    with Listener() as listener:
        result = agents.python(alice_token_file, harness.CONNECT_SCRIPT)

    assert result.returncode == 0, describe(result)
    assert listener.received == [], "an agent's port-443 connection must be redirected"
