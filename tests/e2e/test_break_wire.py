"""Breaking the wire: framing tricks, a silent upstream, and secrets in places the recording does
not mask. An UpstreamTap sits between the daemon and moto for this module, so the test sees
the exact bytes the gateway sends upstream.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Moto, UpstreamTap, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

EC2 = f"ec2.{harness.REGION}.amazonaws.com"

#: Sends raw bytes (argv[1], JSON string with \r\n) over TLS to argv[2] through the redirect
#: and prints {"status", "body", "seconds"} of what came back (argv[3]: read timeout).
RAW_BYTES_AGENT = r"""
import json, os, socket, ssl, sys, time
host = sys.argv[2]
raw = socket.create_connection((host, 443), timeout=float(sys.argv[3]))
tls = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"]).wrap_socket(
    raw, server_hostname=host)
started = time.monotonic()
tls.sendall(json.loads(sys.argv[1]).encode("latin-1"))
answer = b""
try:
    while piece := tls.recv(65536):
        answer += piece
except (socket.timeout, TimeoutError):
    answer += b"<read timed out>"
except (ssl.SSLError, OSError) as error:
    answer += f"<{error}>".encode()
status, _, rest = answer.partition(b"\r\n")
print(json.dumps({"status": status.decode(errors="replace"),
                  "body": rest.decode(errors="replace")[-2000:].replace("\r\n", " "),
                  "seconds": time.monotonic() - started}))
"""


def send_raw(agents: Agents, token_file: Path, data: str, host: str = EC2,
             read_timeout: float = 30.0) -> dict:
    """`host` is the name connected to and the SNI; the Host header is in `data`."""
    result = agents.run(token_file, [str(harness.PYTHON), "-c", RAW_BYTES_AGENT,
                                     json.dumps(data), host, str(read_timeout)],
                        timeout=read_timeout + 60)
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def tap(world: World, daemon: Daemon, moto: Moto):
    relay = UpstreamTap(("127.0.0.1", moto.port))
    harness.set_upstream(world, daemon, relay.url)
    try:
        yield relay
    finally:
        harness.set_upstream(world, daemon, moto.url)
        relay.close()


def test_content_length_with_transfer_encoding_is_not_smuggled_upstream(
        agents: Agents, alice_token_file: Path, tap: UpstreamTap):
    smuggled = "GET /?Action=DescribeRegions&Version=2016-11-15 HTTP/1.1\r\nHost: x\r\n\r\n"
    body = "Action=DescribeRegions&Version=2016-11-15&" + "x" * 8
    chunked = f"{len(body):x}\r\n{body}\r\n0\r\n\r\n"
    head = (f"POST / HTTP/1.1\r\nHost: {EC2}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    mark = tap.mark()
    answer = send_raw(agents, alice_token_file, head + chunked + smuggled)
    sent = [r for r in tap.since(mark) if (r.header("host") or "").startswith("ec2.")]
    # Either refused (400) or forwarded as exactly one request whose framing matches its body.
    assert len(sent) <= 1, [(r.method, r.target) for r in sent]
    for request in sent:
        length = request.header("content-length")
        assert request.chunked or length == str(request.body_length), (request.headers, answer)


def test_secret_in_a_query_string_is_masked_in_the_recording(
        agents: Agents, alice_token_file: Path, tap: UpstreamTap, world: World):
    secret = f"S3cret-{uuid.uuid4().hex}"
    user = f"u{uuid.uuid4().hex[:8]}"
    # iam.amazonaws.com has no name in the private hosts file: connect (and SNI) to EC2's, and
    # name IAM in the Host header, which is what the gateway routes by. (moto answers a GET
    # query call 403: its signature check re-encodes the query; the recording is the point.)
    head = (f"GET /?Action=CreateLoginProfile&Version=2010-05-08&UserName={user}"
            f"&Password={secret} HTTP/1.1\r\nHost: iam.amazonaws.com\r\nConnection: close"
            "\r\n\r\n")
    answer = send_raw(agents, alice_token_file, head)
    assert answer["status"].startswith("HTTP/1.1"), answer
    leaks = [path.name for path in (world.records / "sessions").glob("*.jsonl")
             if secret in path.read_text(errors="replace")]
    assert not leaks, f"the password is in the recording(s) {leaks}"


class BlackHole:
    """Relays to moto, except a request whose head names `host`: that one is read and never
    answered (an upstream that stopped answering)."""

    def __init__(self, target: tuple[str, int], host: str) -> None:
        self.target, self.host = target, host.encode()
        self.held: list[socket.socket] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        upstream = None
        try:
            while data := conn.recv(65536):
                if upstream is None and b"host: " + self.host in data.lower():
                    self.held.append(conn)
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target)
                    threading.Thread(target=self.back, args=(upstream, conn),
                                     daemon=True).start()
                upstream.sendall(data)
        except OSError:
            pass

    @staticmethod
    def back(upstream: socket.socket, conn: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                conn.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.stopped.set()
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_silent_upstream_gets_a_timely_aws_error(
        agents: Agents, alice_token_file: Path, world: World, daemon: Daemon, moto: Moto):
    hole = BlackHole(("127.0.0.1", moto.port), EC2)
    original = world.config.read_text()
    # aws.response_timeout (default 15m, the longest synchronous AWS call) made short here.
    world.config.write_text(original.replace("[aws]\n", "[aws]\nresponse_timeout = \"3s\"\n", 1))
    harness.set_upstream(world, daemon, f"http://127.0.0.1:{hole.port}")
    try:
        head = (f"GET /?Action=DescribeRegions&Version=2016-11-15 HTTP/1.1\r\nHost: {EC2}\r\n"
                "Connection: close\r\n\r\n")
        answer = send_raw(agents, alice_token_file, head, read_timeout=75)
    finally:
        world.config.write_text(original)
        daemon.stop()
        daemon.start()
        hole.close()
    assert hole.held, "the request never reached the silent upstream"
    assert answer["status"].split()[1:2] in (["502"], ["503"], ["504"]), answer
    assert answer["seconds"] < 20, answer


def test_refused_upstream_gets_a_quick_aws_error(
        agents: Agents, alice_token_file: Path, world: World, daemon: Daemon, moto: Moto):
    harness.set_upstream(world, daemon, f"http://127.0.0.1:{harness.free_port()}")
    try:
        head = (f"GET /?Action=DescribeRegions&Version=2016-11-15 HTTP/1.1\r\nHost: {EC2}\r\n"
                "Connection: close\r\n\r\n")
        result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", RAW_BYTES_AGENT,
                                               json.dumps(head), EC2, "30"], timeout=90)
    finally:
        harness.set_upstream(world, daemon, moto.url)
    # STS is unreachable too, so the session opens only if the credentials were cached; either
    # way the agent (or run) must get a readable refusal quickly.
    text = result.stdout + result.stderr
    assert "panicked" not in text and "Traceback" not in text, describe(result)
    if result.returncode == 0:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer["status"].split()[1] in ("502", "503", "500"), answer
        assert answer["seconds"] < 20, answer
