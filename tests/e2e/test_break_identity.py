"""Breaking identity: a token that expires mid-session, and the token file the daemon (root)
reads again near expiry, a path the (unprivileged) caller chose.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Idp, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

#: Two calls a few seconds apart (argv[1] seconds); prints the status line of each.
TWO_CALLS = r"""
import json, os, subprocess, sys, time
aws = sys.argv[2]
out = []
for pause in (0, float(sys.argv[1])):
    time.sleep(pause)
    done = subprocess.run([aws, "sts", "get-caller-identity", "--output", "json"],
                          capture_output=True, text=True)
    out.append({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-600:]})
print(json.dumps(out))
"""


def test_a_token_that_expires_mid_session_gets_denials(agents: Agents, idp: Idp):
    token = idp.token(harness.SHORT_LIVED)
    token_file = agents.token_file("short-mid-session", token)
    _, claims = harness.jwt_parts(token)
    result = agents.run(token_file, [str(harness.PYTHON), "-c", TWO_CALLS, "4",
                                     str(harness.AWS_CLI)])
    assert result.returncode == 0, describe(result)
    first, second = json.loads(result.stdout.strip().splitlines()[-1])
    assert time.time() > claims["exp"]
    assert second["rc"] != 0, f"a call after exp was served: {second}"
    assert "expired" in second["stderr"].lower(), second


#: Replaces its own token file (argv[1]) with a sparse file of argv[2] bytes (a stand-in for
#: /dev/zero: the same unbounded read, but finite), then makes one call.
SWAP_TOKEN_FILE = r"""
import os, subprocess, sys
path, size = sys.argv[1], int(sys.argv[2])
os.unlink(path)
with open(path, "wb") as f:
    f.truncate(size)
done = subprocess.run([sys.argv[3], "sts", "get-caller-identity", "--output", "json"],
                      capture_output=True, text=True)
print(done.returncode, done.stderr[-300:].replace("\n", " "))
"""


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_token_file_re_read_is_bounded(agents: Agents, idp: Idp, daemon: Daemon):
    assert daemon.process is not None
    size = 1 << 30
    token_file = agents.token_file("short-swapped", idp.token(harness.SHORT_LIVED))
    before = vm_hwm_kib(daemon.process.pid)
    result = agents.run(token_file, [str(harness.PYTHON), "-c", SWAP_TOKEN_FILE,
                                     str(token_file), str(size), str(harness.AWS_CLI)])
    after = vm_hwm_kib(daemon.process.pid)
    os.unlink(token_file)
    grown_mib = (after - before) // 1024
    assert grown_mib < 64, (f"the daemon's peak memory grew by {grown_mib} MiB reading a "
                            f"{size >> 20} MiB token file; agent: {describe(result)}")
