"""The connection itself: HTTP/2 with and without ALPN, and non-AWS destinations."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import harness
from harness import Agents, Listener, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

H2_AGENT = harness.REPO / "tests" / "peers" / "h2_agent.mjs"

NON_AWS_TLS_SCRIPT = """
import socket, ssl
ctx = ssl.create_default_context()
try:
    with socket.create_connection(("127.0.0.2", 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="example.com") as tls:
            print("handshake completed")
except (ssl.SSLError, ConnectionError, OSError) as err:
    print("refused:", type(err).__name__)
"""


@pytest.mark.parametrize("mode", ["tls", "cleartext"])
def test_http2_clients_are_served(agents: Agents, alice_token_file: Path, mode: str):
    result = agents.node(alice_token_file, H2_AGENT, mode)

    assert result.returncode == 0, describe(result)
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200, answer
    if mode == "tls":
        assert answer["protocol"] == "h2", answer
    assert "assumed-role/agent/agent-alice@" in answer["body"], answer


def test_non_aws_tls_destination_is_refused_not_reached(agents: Agents, alice_token_file: Path):
    with Listener() as listener:
        result = agents.python(alice_token_file, NON_AWS_TLS_SCRIPT)

    assert result.returncode == 0, describe(result)
    assert result.stdout.strip().startswith("refused"), describe(result)
    assert listener.received == [], "a refused destination must not be reached directly"


def test_other_destinations_pass_splices_non_aws_bytes_untouched(
        agents: Agents, alice_token_file: Path, world: harness.World, daemon: harness.Daemon):
    text = world.config.read_text()
    world.config.write_text(text.replace("[gateway]\n", "[gateway]\nother_destinations = \"pass\"\n", 1))
    daemon.stop()
    daemon.start()
    try:
        with Listener() as listener:
            # A ClientHello for a non-AWS name goes to where the agent was going, byte for byte.
            result = agents.python(alice_token_file, NON_AWS_TLS_SCRIPT)
            harness.wait_until(lambda: listener.received, 10.0, "the spliced bytes")
        assert result.returncode == 0, describe(result)
        hello = listener.received[0] if listener.received else b""
        assert hello.startswith(b"\x16\x03") and b"example.com" in hello, listener.received
    finally:
        world.config.write_text(text)
        daemon.stop()
        daemon.start()
