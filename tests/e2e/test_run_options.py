"""`interceptor run` options: --user drops privileges inside the session, --name labels it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: nobody: an unprivileged uid that exists on every machine, so no user database is edited.
NOBODY = 65534


def test_user_option_runs_the_agent_unprivileged_inside_its_session(
        agents: Agents, alice_token_file: Path):
    argv = [str(harness.BINARY), "run", "--config", str(agents.world.config),
            "--token-file", str(alice_token_file), "--user", str(NOBODY), "--",
            "sh", "-c", "id -u; id -g; cat /proc/self/cgroup; echo $INTERCEPTOR_SESSION"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=agents.env())

    assert result.returncode == 0, describe(result)
    lines = result.stdout.strip().splitlines()
    uid, gid, session = lines[0], lines[1], lines[-1]
    unified = [line for line in lines if line.startswith("0::")]  # the cgroup v2 line
    assert (uid, gid) == (str(NOBODY), str(NOBODY)), describe(result)
    assert unified and unified[0].endswith(f"/{session}"), describe(result)


def test_unknown_user_fails_before_a_session_is_opened(agents: Agents, alice_token_file: Path,
                                                        world: World):
    before = harness.read_jsonl(world.audit_log)
    argv = [str(harness.BINARY), "run", "--config", str(world.config),
            "--token-file", str(alice_token_file), "--user", "no-such-user-xyz", "--", "true"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=agents.env())

    assert result.returncode != 0, describe(result)
    assert "no such user: no-such-user-xyz" in result.stderr, describe(result)
    opened = [line for line in harness.read_jsonl(world.audit_log)[len(before):]
              if line.get("event") == "session_opened"]
    assert opened == [], "a failed run must not leave a session behind"


def test_name_labels_the_session(agents: Agents, alice_token_file: Path, world: World):
    argv = [str(harness.BINARY), "run", "--config", str(world.config),
            "--token-file", str(alice_token_file), "--name", "nightly-deploy", "--",
            str(harness.BINARY), "sessions", "--json", "--config", str(world.config)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=agents.env())

    assert result.returncode == 0, describe(result)
    sessions = json.loads(result.stdout)
    assert "nightly-deploy" in [s["name"] for s in sessions], sessions
