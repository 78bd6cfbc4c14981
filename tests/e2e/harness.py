"""The end-to-end harness: real peers (OIDC provider, moto), the daemon, and agents.

Everything here runs inside the private network + mount namespace that `tests/e2e/run` creates
(conftest refuses to start elsewhere), so every address is loopback in a network nobody else
sees, the private /etc/hosts and /etc/nsswitch.conf are bind mounts that vanish with it, and
/sys/fs/bpf is a bpffs instance of the namespace's own (the daemon's pins die with it too).

ASSUMPTIONS about the daemon that DESIGN.md does not fix yet are collected in the block right
below, and nowhere else: adjust them here when the daemon settles.
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# ASSUMPTIONS about the daemon and its CLI (the one place to adjust them)
# ---------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
#: The binary under test; scripts/test builds it with `cargo build`.
BINARY = Path(os.environ.get("INTERCEPTOR_BIN", REPO / "target" / "debug" / "interceptor"))


def daemon_argv(config: Path) -> list[str]:
    """Start the daemon in the foreground; it logs to stderr."""
    return [str(BINARY), "daemon", "--config", str(config)]


def uninstall_argv(config: Path) -> list[str]:
    """The explicit clean-up path: detach the eBPF programs and remove the bpffs pins."""
    return [str(BINARY), "daemon", "--uninstall", "--config", str(config)]


def run_argv(config: Path, token_file: Path, command: list[str]) -> list[str]:
    """Start `command` as an agent session; the exit code passes through."""
    return [str(BINARY), "run", "--config", str(config), "--token-file", str(token_file), "--",
            *command]


#: The daemon is ready when its control socket accepts a connection AND the gateway port
#: accepts a TCP connection (no control-protocol message is assumed for readiness).
DAEMON_START_TIMEOUT = 30.0
#: The daemon's log filter (tracing-subscriber's RUST_LOG syntax); its log goes to stderr.
DAEMON_LOG_FILTER = os.environ.get("INTERCEPTOR_E2E_LOG", "info,interceptor=debug")
#: SIGTERM ends the daemon (leaving the pins in place: fail closed) within this time.
DAEMON_STOP_TIMEOUT = 10.0

#: The audit log: records.dir/audit.log, one JSON object per line. A request line carries at
#: least: time, session, identity {subject, groups}, service, action, decision, status,
#: request_id. `action` may be "GetCallerIdentity" or "sts:GetCallerIdentity": compare with
#: `audit_action_name`.
AUDIT_LOG_NAME = "audit.log"
AUDIT_REQUEST_KEYS = ("time", "session", "identity", "service", "action", "decision", "status",
                      "request_id")
#: The decision logged for a call the (permissive) policy let through.
AUDIT_ALLOWED = "allow"

#: Leeway the daemon grants on `exp` (CLOCK_LEEWAY in interceptor/src/identity/oidc.rs).
#: The expired-token test waits until exp + this has passed.
JWT_EXP_LEEWAY_SECONDS = int(os.environ.get("INTERCEPTOR_E2E_JWT_LEEWAY", "30"))

#: The policy the suite runs with outside the policy tests (test_policy_* restore it).
PERMISSIVE_POLICY = ('# e2e: everything allowed; test_policy_*.py install their own and put '
                     'this back\ndefault = "allow"\n')
#: Daemon log (stderr) lines: a new policy file is in force / a broken one was refused (that
#: line carries "line N" and the reason). The daemon reloads on SIGHUP and polls the file.
POLICY_RELOADED_LOG = "policy reloaded"
POLICY_REFUSED_LOG = "new policy refused"
POLICY_RELOAD_TIMEOUT = 10.0


def policy_check_argv(policy: Path, request: Path | None = None) -> list[str]:
    """Validate a policy file (and dry-run a request); needs no daemon and no config file."""
    argv = [str(BINARY), "policy", "check", "--policy", str(policy)]
    return argv + (["--request", str(request)] if request else [])


def approvals_argv(config: Path, json: bool = True) -> list[str]:
    """The held calls as a JSON list of {id, session, subject, groups, action, rule, params
    ["Name=value", ...], held_since, expires_in}; without `json`, a table for people."""
    return [str(BINARY), "approvals", *(["--json"] if json else []), "--config", str(config)]


def approve_argv(config: Path, call_id: str) -> list[str]:
    return [str(BINARY), "approve", call_id, "--config", str(config)]


def deny_argv(config: Path, call_id: str, reason: str) -> list[str]:
    return [str(BINARY), "deny", call_id, "--reason", reason, "--config", str(config)]


#: Audit decisions: refused by policy, and released by a human (with `approval` = the held
#: call's id and `approved_by` = the admin's user name).
AUDIT_DENIED = "deny"
AUDIT_APPROVED = "approved"
#: The quota usage file in records.dir (per rule name and subject).
QUOTA_FILE_NAME = "quotas.json"

#: What `interceptor run` says (stdout + stderr, case-insensitive) for each refused token.
TOKEN_REFUSAL_PATTERNS = {
    "expired": re.compile(r"expired", re.I),
    "forged": re.compile(r"signature", re.I),
    "wrong_audience": re.compile(r"audience", re.I),
}

# ---------------------------------------------------------------------------------------------
# Fixed facts of the test world
# ---------------------------------------------------------------------------------------------

PEERS = REPO / "tests" / "peers"
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
#: The JavaScript SDK v3 agent (tests/peers/js_agent.mjs).
JS_AGENT = PEERS / "js_agent.mjs"
AWS_CLI = VENV_BIN / "aws"

#: AWS names resolve here inside the namespace: a loopback address that is NOT the gateway's
#: (127.0.0.1), so only the eBPF redirect can bring an agent to the gateway.
AWS_ADDRESS = "127.0.0.2"
REGION = "us-east-1"
#: Buckets of the shared/cases tests (test_cases_*.py).
CASES_BUCKETS = ("e2e-cases-keys", "e2e-cases-bodies", "e2e-cases-expect", "e2e-cases-big")
#: Buckets the agents create: clients address them virtual-host style (bucket.s3...), so each
#: needs a name in the private hosts file. "demo-bucket" is scripts/demo's.
BUCKETS = ("e2e-cli-bucket", "e2e-boto3-bucket", "e2e-boto3-objects", "e2e-js-bucket",
           "demo-bucket", *CASES_BUCKETS)
AWS_HOSTS = (
    "sts.amazonaws.com",
    f"sts.{REGION}.amazonaws.com",
    f"ec2.{REGION}.amazonaws.com",
    "s3.amazonaws.com",
    f"s3.{REGION}.amazonaws.com",
    *(f"{bucket}.s3.amazonaws.com" for bucket in BUCKETS),
    *(f"{bucket}.s3.{REGION}.amazonaws.com" for bucket in BUCKETS),
    f"secretsmanager.{REGION}.amazonaws.com",
    f"dynamodb.{REGION}.amazonaws.com",
    f"ssm.{REGION}.amazonaws.com",
    # test_cases_signing.py: REST-JSON services with encoded characters in the path.
    f"lambda.{REGION}.amazonaws.com",
    f"apigateway.{REGION}.amazonaws.com",
    "route53.amazonaws.com",
)
#: An image moto ships in its default AMI list.
AMI_ID = "ami-12c6146b"
AUDIENCE = "interceptor"
WRONG_AUDIENCE_RESOURCE = "urn:other-audience"
#: Clients of tests/peers/oidc/server.mjs (secret = "<id>-secret").
ALICE = "agent-alice"
ADMIN = "agent-admin"
SHORT_LIVED = "agent-short"
SHORT_TTL_SECONDS = 2

PEER_START_TIMEOUT = 30.0
AGENT_TIMEOUT = 120.0


class HarnessError(RuntimeError):
    """The test world could not be set up; the message says which part and why."""


# ---------------------------------------------------------------------------------------------
# Namespace and private name resolution
# ---------------------------------------------------------------------------------------------


def ns_id(kind: str, pid: str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def in_private_namespaces() -> bool:
    """True when this process's network and mount namespaces are not the ones `run` left.

    tests/e2e/run records the namespaces it leaves in INTERCEPTOR_E2E_OUTER_NS (PID 1's are not
    always readable, e.g. in a container).
    """
    outer = os.environ.get("INTERCEPTOR_E2E_OUTER_NS", "").split()
    if len(outer) != 2:
        return False
    try:
        return ns_id("net") != outer[0] and ns_id("mnt") != outer[1]
    except OSError:
        return False


def hosts_text() -> str:
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
    lines += [f"{AWS_ADDRESS} {host}" for host in AWS_HOSTS]
    return "\n".join(lines) + "\n"


NSSWITCH_TEXT = """\
# interceptor e2e: names come from the private /etc/hosts only, never from DNS.
passwd: files
group: files
shadow: files
hosts: files
networks: files
protocols: files
services: files
ethers: files
rpc: files
"""


def bind_private_etc(directory: Path) -> None:
    """Bind-mount a private /etc/hosts and /etc/nsswitch.conf (this mount namespace only)."""
    if not in_private_namespaces():
        raise HarnessError("refusing to bind-mount /etc files outside a private namespace")
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("hosts", hosts_text()), ("nsswitch.conf", NSSWITCH_TEXT)):
        private = directory / name
        private.write_text(text)
        check_call(["mount", "--bind", str(private), f"/etc/{name}"], what=f"bind /etc/{name}")


def check_call(argv: list[str], what: str, timeout: float = 60.0) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise HarnessError(f"{what}: {argv!r} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel reports free now (bound, then released)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def cgroup2_mount() -> Path:
    """The cgroup v2 mount point, from /proc/self/mounts."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    raise HarnessError("no cgroup2 mount in /proc/self/mounts")


# ---------------------------------------------------------------------------------------------
# Test CA (openssl)
# ---------------------------------------------------------------------------------------------


@dataclass
class TestCa:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost signed by it."""

    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, directory: Path) -> "TestCa":
        directory.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
        key, csr, cert = directory / "idp.key", directory / "idp.csr", directory / "idp.pem"
        ext = directory / "idp.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        check_call(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_cert),
                    "-days", "2", "-subj", "/CN=interceptor e2e test CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], what="create test CA")
        check_call(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr),
                    "-subj", "/CN=127.0.0.1"], what="create IdP key")
        check_call(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert),
                    "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert), "-days", "2",
                    "-extfile", str(ext)], what="sign IdP certificate")
        for private in (ca_key, key):
            private.chmod(0o600)
        return cls(ca_cert=ca_cert, server_cert=cert, server_key=key)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Process:
    """A child process with its output in files; stopped by its PID only."""

    name: str
    popen: subprocess.Popen
    stdout: Path
    stderr: Path

    @classmethod
    def start(cls, name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None,
              ) -> "Process":
        logs.mkdir(parents=True, exist_ok=True)
        stdout, stderr = logs / f"{name}.stdout", logs / f"{name}.stderr"
        with stdout.open("ab") as out, stderr.open("ab") as err:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                     env=env, start_new_session=True)
        return cls(name=name, popen=popen, stdout=stdout, stderr=stderr)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of stderr and stdout, for error messages."""
        parts = []
        for path in (self.stderr, self.stdout):
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"[{path.name}]\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def ready_line(self, timeout: float = PEER_START_TIMEOUT) -> dict[str, Any]:
        """The first JSON line the process prints on stdout, waited for with a deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout.read_text() if self.stdout.exists() else ""
            if "\n" in text:
                return json.loads(text.splitlines()[0])
            if not self.alive():
                raise HarnessError(
                    f"{self.name} exited {self.popen.returncode} before it was ready:\n"
                    f"{self.log_tail()}")
            time.sleep(0.05)
        raise HarnessError(f"{self.name} printed no ready line within {timeout}s:\n"
                           f"{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig`, wait up to `timeout`, then SIGKILL; returns the exit status."""
        if self.alive():
            self.popen.send_signal(sig)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `predicate` until true; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout}s waiting for {what}")


def tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(0.5)
        try:
            conn.connect(str(path))
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# Peers
# ---------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Moto:
    """moto server with signature checks on (see tests/peers/moto_server.py)."""

    process: Process
    url: str
    port: int
    role_arn: str
    key_log: Path
    token_log: Path

    @classmethod
    def start(cls, directory: Path) -> "Moto":
        key_log, token_log = directory / "moto-keys.jsonl", directory / "moto-tokens.jsonl"
        env = clean_env({"AWS_EC2_METADATA_DISABLED": "true"})
        process = Process.start(
            "moto",
            [str(PYTHON), str(PEERS / "moto_server.py"), "--port", "0",
             "--key-log", str(key_log), "--token-log", str(token_log)],
            directory, env=env)
        ready = process.ready_line()
        return cls(process=process, url=ready["url"], port=ready["port"],
                   role_arn=ready["role_arn"], key_log=key_log, token_log=token_log)

    def keys(self) -> list[dict[str, Any]]:
        """Every request moto authenticated or refused: access_key_id, authenticated, ..."""
        return read_jsonl(self.key_log)

    def web_identity_tokens(self) -> list[dict[str, Any]]:
        """Every AssumeRoleWithWebIdentity moto received: token, role_arn, ..."""
        return read_jsonl(self.token_log)


@dataclass
class Idp:
    """panva's oidc-provider over HTTPS (see tests/peers/oidc/server.mjs)."""

    process: Process
    issuer: str
    token_endpoint: str
    ca_cert: Path

    @classmethod
    def start(cls, directory: Path, ca: TestCa, timeout: float = PEER_START_TIMEOUT) -> "Idp":
        node = shutil.which("node")
        if node is None:
            raise HarnessError("node is not on PATH (scripts/setup installs the peers)")
        process = Process.start(
            "oidc",
            [node, str(PEERS / "oidc" / "server.mjs"), "--cert", str(ca.server_cert),
             "--key", str(ca.server_key), "--port", "0",
             "--short-ttl", str(SHORT_TTL_SECONDS)],
            directory, env=clean_env({}))
        try:
            ready = process.ready_line(timeout)
        except HarnessError:
            # A server that never got ready (e.g. hung at start) must not outlive the run.
            process.stop(signal.SIGKILL, timeout=5.0)
            raise
        return cls(process=process, issuer=ready["issuer"],
                   token_endpoint=ready["token_endpoint"], ca_cert=ca.ca_cert)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def get_json(self, url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, context=self.ssl_context(), timeout=10) as answer:
            return json.load(answer)

    def token(self, client_id: str, resource: str | None = None) -> str:
        """A client-credentials access token (JWT) for `client_id`, client_secret_basic."""
        form = "grant_type=client_credentials"
        if resource:
            form += "&resource=" + urllib.parse.quote(resource, safe="")
        basic = base64.b64encode(f"{client_id}:{client_id}-secret".encode()).decode()
        request = urllib.request.Request(
            self.token_endpoint, data=form.encode(), method="POST",
            headers={"Authorization": f"Basic {basic}",
                     "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, context=self.ssl_context(), timeout=10) as answer:
            return json.load(answer)["access_token"]


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, without verifying it."""
    header, claims, _ = token.split(".")
    return json.loads(_b64url_decode(header)), json.loads(_b64url_decode(claims))


def forge(token: str) -> str:
    """The same header and claims with a signature that no longer matches."""
    header, claims, signature = token.split(".")
    raw = bytearray(_b64url_decode(signature))
    raw[len(raw) // 2] ^= 0xFF
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    return f"{header}.{claims}.{forged}"


# ---------------------------------------------------------------------------------------------
# The daemon
# ---------------------------------------------------------------------------------------------


@dataclass
class World:
    """Paths and peers one daemon configuration names."""

    tmp: Path
    ca: TestCa
    idp: Idp
    moto: Moto
    gateway_port: int
    cgroup_root: Path

    @property
    def config(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def records(self) -> Path:
        return self.tmp / "records"

    @property
    def control_socket(self) -> Path:
        return self.tmp / "control.sock"

    @property
    def policy(self) -> Path:
        return self.tmp / "policy.toml"

    @property
    def audit_log(self) -> Path:
        return self.records / AUDIT_LOG_NAME

    def write_config(self) -> None:
        self.policy.write_text(PERMISSIVE_POLICY)
        self.config.write_text(f"""\
# interceptor e2e config, written by tests/e2e/harness.py
[gateway]
port = {self.gateway_port}
redirect_ports = [443]

[cgroup]
root = "{self.cgroup_root}"

[oidc]
issuer = "{self.idp.issuer}"
audience = "{AUDIENCE}"
groups_claim = "groups"
ca_file = "{self.ca.ca_cert}"

[aws]
role_arn = "{self.moto.role_arn}"
region = "{REGION}"
upstream = "{self.moto.url}"

[policy]
file = "{self.policy}"

[records]
dir = "{self.records}"

[control]
socket = "{self.control_socket}"
""")


@dataclass
class Daemon:
    """`interceptor daemon`, started, stopped and restarted by the tests."""

    world: World
    process: Process | None = None
    starts: int = 0

    def start(self) -> None:
        if self.process is not None and self.process.alive():
            return
        self.starts += 1
        env = clean_env({"RUST_LOG": DAEMON_LOG_FILTER})
        self.process = Process.start(f"daemon-{self.starts}", daemon_argv(self.world.config),
                                     self.world.tmp / "logs", env=env)
        try:
            wait_until(self.ready, DAEMON_START_TIMEOUT, "the daemon's control socket and gateway")
        except HarnessError as error:
            raise HarnessError(f"{error}\ndaemon log:\n{self.process.log_tail()}") from None

    def ready(self) -> bool:
        if self.process is None or not self.process.alive():
            code = None if self.process is None else self.process.popen.returncode
            raise HarnessError(f"daemon exited ({code}) before it was ready")
        return (unix_accepts(self.world.control_socket)
                and tcp_accepts("127.0.0.1", self.world.gateway_port))

    def stop(self) -> int | None:
        """SIGTERM: the daemon exits and the pinned programs stay attached (fail closed)."""
        if self.process is None:
            return None
        return self.process.stop(signal.SIGTERM, DAEMON_STOP_TIMEOUT)

    def log_tail(self) -> str:
        return "" if self.process is None else self.process.log_tail()

    def uninstall(self) -> subprocess.CompletedProcess:
        """The explicit clean-up: detach programs, remove bpffs pins."""
        return subprocess.run(uninstall_argv(self.world.config), capture_output=True, text=True,
                              timeout=60, env=clean_env({}))


def remove_cgroup_tree(root: Path) -> list[str]:
    """Kill what is left in our own cgroups (agents we started) and remove them, leaves first."""
    problems: list[str] = []
    if not root.exists():
        return problems
    groups = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
    for group in [*groups, root]:
        kill = group / "cgroup.kill"
        if kill.exists():
            try:
                kill.write_text("1")
            except OSError as error:
                problems.append(f"cgroup.kill {group}: {error}")
        else:
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            wait_until(lambda g=group: not (g / "cgroup.procs").read_text().strip(), 5.0,
                       f"{group} to empty")
            group.rmdir()
        except (OSError, HarnessError) as error:
            problems.append(f"rmdir {group}: {error}")
    return problems


# ---------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment: no AWS_* variable of the machine leaks in."""
    env = {
        "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("INTERCEPTOR_E2E_HOME", "/root"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


@dataclass
class Agents:
    """Runs commands as agent sessions with `interceptor run`."""

    world: World
    home: Path
    tokens: Path
    written: dict[str, Path] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """What an agent starts with: region, no keys, no instance metadata, no ~/.aws."""
        self.home.mkdir(parents=True, exist_ok=True)
        return clean_env({
            "HOME": str(self.home),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": str(self.home / "aws-config-absent"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "aws-credentials-absent"),
            "PYTHONUNBUFFERED": "1",
        })

    def token_file(self, name: str, token: str) -> Path:
        self.tokens.mkdir(parents=True, exist_ok=True)
        path = self.tokens / f"{name}.jwt"
        path.write_text(token)
        path.chmod(0o600)
        return path

    def argv(self, token_file: Path, command: list[str]) -> list[str]:
        return run_argv(self.world.config, token_file, command)

    def run(self, token_file: Path, command: list[str], timeout: float = AGENT_TIMEOUT,
            ) -> subprocess.CompletedProcess:
        """Run `command` as an agent and wait for it; output captured as text."""
        return subprocess.run(self.argv(token_file, command), capture_output=True, text=True,
                              timeout=timeout, env=self.env(), stdin=subprocess.DEVNULL)

    def spawn(self, token_file: Path, command: list[str]) -> subprocess.Popen:
        """Start `command` as an agent with pipes for stdin and stdout."""
        return subprocess.Popen(self.argv(token_file, command), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env(), start_new_session=True)

    def aws(self, token_file: Path, *args: str) -> subprocess.CompletedProcess:
        """The stock AWS CLI, unmodified, as an agent; JSON output."""
        return self.run(token_file, [str(AWS_CLI), "--output", "json", *args])

    def batch(self, token_file: Path, commands: list[list[str]], timeout: float = AGENT_TIMEOUT,
              ) -> list[dict[str, Any]]:
        """Run several commands in ONE agent session (one `interceptor run`), in order; each
        gives {"argv", "rc", "stdout", "stderr", "seconds"}. A leading "aws" is the venv's CLI
        with JSON output. A command may read a file as stdin: ["<FILE", argv...]."""
        result = self.run(token_file, [str(PYTHON), "-c", BATCH_SCRIPT, json.dumps(commands)],
                          timeout=timeout)
        if result.returncode != 0 or not result.stdout.strip():
            raise HarnessError(f"batch agent failed: {describe(result)}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def python(self, token_file: Path, script: str) -> subprocess.CompletedProcess:
        """A Python agent (the venv with boto3) running `script`."""
        return self.run(token_file, [str(PYTHON), "-c", script])

    def node(self, token_file: Path, script: Path, *args: str) -> subprocess.CompletedProcess:
        """A Node.js agent running `script` (tests/peers, with the AWS SDK for JavaScript v3)."""
        node = shutil.which("node")
        if node is None:
            raise HarnessError("node is not on PATH (scripts/setup installs the peers)")
        return self.run(token_file, [node, str(script), *args])


#: The agent of Agents.batch: runs each command, prints one JSON list of the outcomes.
BATCH_SCRIPT = f"""
import json, subprocess, sys, time
out = []
for argv in json.loads(sys.argv[1]):
    stdin = subprocess.DEVNULL
    if argv and argv[0].startswith("<"):
        stdin = open(argv[0][1:], "rb")
        argv = argv[1:]
    if argv and argv[0] == "aws":
        argv = [{str(AWS_CLI)!r}, "--output", "json", *argv[1:]]
    started = time.monotonic()
    done = subprocess.run(argv, stdin=stdin, capture_output=True)
    out.append({{"argv": argv, "rc": done.returncode,
                 "stdout": done.stdout.decode("utf-8", "replace"),
                 "stderr": done.stderr.decode("utf-8", "replace")[-3000:],
                 "seconds": time.monotonic() - started}})
print(json.dumps(out))
"""


class Listener:
    """A plain TCP listener (e.g. on 127.0.0.2:443) that records what each connection sent."""

    def __init__(self, host: str = AWS_ADDRESS, port: int = 443) -> None:
        self.address = (host, port)
        self.received: list[bytes] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(self.address)
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2.0)
                try:
                    self.received.append(conn.recv(4096))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5.0)
        self._sock.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: A client that connects to `AWS_ADDRESS:443`, sends a line and prints what happened:
#: "sent", "refused" or "error <name>". With a first argument "wait" it prints "ready" and waits
#: for a line on stdin first.
CONNECT_SCRIPT = f"""
import socket, sys
if sys.argv[1:] == ["wait"]:
    print("ready", flush=True)
    sys.stdin.readline()
try:
    with socket.create_connection(({AWS_ADDRESS!r}, 443), timeout=5) as conn:
        conn.sendall(b"plain bytes, not TLS\\n")
    print("sent", flush=True)
except ConnectionRefusedError:
    print("refused", flush=True)
except OSError as error:
    print("error", type(error).__name__, flush=True)
"""


def read_line(stream, timeout: float, what: str) -> str:
    """One line from a child's pipe, with a deadline."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise HarnessError(f"no line from {what} within {timeout}s")
    return stream.readline().strip()


def describe(result: subprocess.CompletedProcess) -> str:
    """A failed command, readable in an assertion message."""
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-4000:]}")


def audit_action_name(line: dict[str, Any]) -> str:
    """The bare action of an audit line ("GetCallerIdentity"), whichever form it is logged in."""
    return str(line.get("action", "")).split(":")[-1]


# ---------------------------------------------------------------------------------------------
# Policy, audit log and approvals (test_policy_*.py)
# ---------------------------------------------------------------------------------------------

def design_policy(launches: str = "small launches", launch_max: int = 4,
                  approve_timeout: str = "10m", extra: str = "") -> str:
    """The example policy of DESIGN.md (default deny), with the launch rule's name, its limit and
    the approval timeout chosen by the test (quota usage is kept per rule name and subject, so a
    test that spends a limit names its own rule)."""
    return f"""\
default = "deny"

[[rule]]
name = "read-only"
groups = ["agents"]
actions = ["ec2:Describe*", "s3:Get*", "s3:List*", "sts:GetCallerIdentity"]
effect = "allow"

[[rule]]
name = "{launches}"
actions = ["ec2:RunInstances"]
when = {{ MaxCount = "<= 2", InstanceType = ["t3.micro", "t3.small"] }}
effect = "allow"
limit = {{ count = "MaxCount", max = {launch_max}, per = "1h" }}   # per identity

[[rule]]
name = "deletes need a human"
actions = ["ec2:TerminateInstances", "s3:Delete*"]
effect = "approve"
timeout = "{approve_timeout}"                       # no answer in time: denied

[[mask]]
actions = ["secretsmanager:GetSecretValue"]
fields = ["SecretString", "SecretBinary"]
{extra}"""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log_lines(path: Path) -> list[str]:
    """A log file's lines without terminal colour codes."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return _ANSI.sub("", text).splitlines()


@dataclass
class PolicyControl:
    """Installs a policy file in the running daemon and waits (bounded) until it took effect."""

    world: World
    daemon: Daemon

    def _log(self) -> Path:
        if self.daemon.process is None:
            raise HarnessError("the daemon is not running")
        return self.daemon.process.stderr

    def _write_and_wait(self, text: str, needle: str, hangup: bool = True) -> list[str]:
        before = len(log_lines(self._log()))
        self.world.policy.write_text(text)
        # SIGHUP forces a reload now; the daemon also notices the change by itself within ~1 s.
        if hangup and self.daemon.process is not None and self.daemon.process.alive():
            os.kill(self.daemon.process.pid, signal.SIGHUP)

        def new_lines() -> list[str]:
            return log_lines(self._log())[before:]

        # Only the awaited line ends the wait: a stray line of an earlier reload cannot.
        try:
            wait_until(lambda: any(needle in line for line in new_lines()),
                       POLICY_RELOAD_TIMEOUT, f"the daemon's {needle!r} log line")
        except HarnessError as error:
            raise HarnessError(f"{error}; the daemon logged since the write:\n"
                               + "\n".join(new_lines()[-20:])) from None
        return [line for line in new_lines() if needle in line]

    def install(self, text: str, hangup: bool = True) -> None:
        """A valid policy: returns once the daemon logged that it is in force. Without `hangup`
        the daemon must notice the changed file by itself."""
        self._write_and_wait(text, POLICY_RELOADED_LOG, hangup)

    def install_broken(self, text: str, hangup: bool = True) -> list[str]:
        """A broken policy: returns the daemon's refusal line(s)."""
        return self._write_and_wait(text, POLICY_REFUSED_LOG, hangup)

    def restore(self) -> None:
        self.install(PERMISSIVE_POLICY)


@dataclass
class AuditLog:
    """records.dir/audit.log, read from a mark (a line count) on."""

    path: Path

    def mark(self) -> int:
        return len(read_jsonl(self.path))

    def since(self, mark: int) -> list[dict[str, Any]]:
        return read_jsonl(self.path)[mark:]

    def wait_for(self, mark: int, predicate, what: str, timeout: float = 10.0,
                 ) -> list[dict[str, Any]]:
        """Lines after `mark` that satisfy `predicate`, once there is at least one.

        The daemon writes lines in order from one writer task, so once a line appears every
        request answered before it is in the file too.
        """
        wait_until(lambda: any(predicate(line) for line in self.since(mark)), timeout,
                   f"an audit line for {what}")
        return [line for line in self.since(mark) if predicate(line)]


def admin(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """An admin command (root, this process's user), output captured as text."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=clean_env({}), stdin=subprocess.DEVNULL)


def held_calls(config: Path) -> list[dict[str, Any]]:
    """`interceptor approvals --json`."""
    result = admin(approvals_argv(config))
    if result.returncode != 0:
        raise HarnessError(f"interceptor approvals failed: {describe(result)}")
    return json.loads(result.stdout)


def wait_for_held_call(config: Path, predicate, timeout: float = 30.0) -> dict[str, Any]:
    """The first held call that satisfies `predicate`, polled with a deadline."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [call for call in held_calls(config) if predicate(call)]
        return bool(found)

    wait_until(seen, timeout, "the held call in `interceptor approvals`", interval=0.2)
    return found[0]


# ---------------------------------------------------------------------------------------------
# Recordings, replay and the admin CLI (test_records_*.py)
# ---------------------------------------------------------------------------------------------

#: What a masked text value becomes (MARKER in interceptor/src/gateway/mask.rs).
MASK_MARKER = "<masked by interceptor>"
#: Session recordings: records.dir/sessions/<session id>.jsonl, one JSON object per line with a
#: `kind` (session_opened, exchange, session_killed, session_ended).
RECORDINGS_DIR_NAME = "sessions"


def sessions_argv(config: Path, *command: str, json: bool = False) -> list[str]:
    """`interceptor sessions [--json] [watch [ID] | kill ID]`."""
    return [str(BINARY), "sessions", *(["--json"] if json else []), *command,
            "--config", str(config)]


def replay_argv(config: Path, session: str, json: bool = False,
                policy: Path | None = None) -> list[str]:
    """`interceptor replay SESSION [--json] [--policy P]`: reads the recording, no daemon."""
    argv = [str(BINARY), "replay", session, "--config", str(config)]
    argv += ["--json"] if json else []
    return argv + (["--policy", str(policy)] if policy else [])


def recording_path(world: World, session: str) -> Path:
    return world.records / RECORDINGS_DIR_NAME / f"{session}.jsonl"


def read_recording(world: World, session: str) -> list[dict[str, Any]]:
    """A session's recording; every line must parse (the file is always readable)."""
    return read_jsonl(recording_path(world, session))


def live_sessions(config: Path) -> list[dict[str, Any]]:
    """`interceptor sessions --json`."""
    result = admin(sessions_argv(config, json=True))
    if result.returncode != 0:
        raise HarnessError(f"interceptor sessions failed: {describe(result)}")
    return json.loads(result.stdout)


def wait_for_session(config: Path, predicate, timeout: float = 30.0) -> dict[str, Any]:
    """The first live session that satisfies `predicate`, polled with a deadline."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [s for s in live_sessions(config) if predicate(s)]
        return bool(found)

    wait_until(seen, timeout, "the session in `interceptor sessions`", interval=0.1)
    return found[0]


# ---------------------------------------------------------------------------------------------
# What reached the upstream (test_cases_*.py)
# ---------------------------------------------------------------------------------------------


@dataclass
class TappedRequest:
    """One HTTP/1.1 request as the gateway sent it upstream: head, framing, first body bytes."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body_prefix: bytes = b""
    body_length: int = 0
    chunked: bool = False

    def header(self, name: str) -> str | None:
        """The first value of `name` (case-insensitive), or None."""
        values = self.header_values(name)
        return values[0] if values else None

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def signed_headers(self) -> list[str]:
        """SignedHeaders of the Authorization header (lower-case names), [] when unsigned."""
        match = re.search(r"SignedHeaders=([^,\s]+)", self.header("authorization") or "")
        return match.group(1).split(";") if match else []


class _RequestParser:
    """Splits the gateway-to-upstream byte stream of one connection into requests.

    Handles Content-Length and chunked framing; keeps `prefix_cap` bytes of each body (never the
    whole body, so a 1 GB upload costs no memory here)."""

    def __init__(self, sink: list[TappedRequest], lock: threading.Lock,
                 prefix_cap: int = 4096) -> None:
        self._sink, self._lock, self._cap = sink, lock, prefix_cap
        self._buffer = b""
        self._state = "head"
        self._remaining = 0
        self._current: TappedRequest | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while self._step():
            pass

    def _body(self, data: bytes) -> None:
        current = self._current
        if current is None:
            return
        current.body_length += len(data)
        room = self._cap - len(current.body_prefix)
        if room > 0:
            current.body_prefix += data[:room]

    def _line(self) -> bytes | None:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return None
        line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
        return line

    def _step(self) -> bool:
        if self._state == "head":
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4:]
            self._start(head)
            return True
        if self._state in ("body", "chunk"):
            if not self._buffer:
                return False
            taken = self._buffer[:self._remaining]
            self._buffer = self._buffer[len(taken):]
            self._remaining -= len(taken)
            self._body(taken)
            if self._remaining == 0:
                self._state = "chunk-end" if self._state == "chunk" else "head"
            return True
        line = self._line()
        if line is None:
            return False
        if self._state == "chunk-end":
            self._state = "chunk-size"
        elif self._state == "chunk-size":
            size = int(line.split(b";")[0].strip() or b"0", 16)
            self._state, self._remaining = ("trailers", 0) if size == 0 else ("chunk", size)
        elif self._state == "trailers" and line == b"":
            self._state = "head"
        return True

    def _start(self, head: str) -> None:
        request_line, *lines = head.split("\r\n")
        method, target, _ = (request_line.split(" ", 2) + ["", ""])[:3]
        headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
        request = TappedRequest(method=method, target=target, headers=headers)
        request.chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
        with self._lock:
            self._sink.append(request)
        self._current = request
        length = int(request.header("content-length") or 0)
        if request.chunked:
            self._state = "chunk-size"
        elif length:
            self._state, self._remaining = "body", length
        else:
            self._state = "head"


class UpstreamTap:
    """A TCP relay between the daemon and moto that records every request the gateway sent.

    The daemon's `aws.upstream` is plain HTTP in the suite, so the relay sees the exact bytes
    AWS would see after TLS: the re-signed head, Content-Length or chunked framing, the body."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.requests: list[TappedRequest] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark(self) -> int:
        with self._lock:
            return len(self.requests)

    def since(self, mark: int) -> list[TappedRequest]:
        with self._lock:
            return list(self.requests[mark:])

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            conn.close()
            return
        upstream.settimeout(None)
        parser = _RequestParser(self.requests, self._lock)
        back = threading.Thread(target=self._pump, args=(upstream, conn, None), daemon=True)
        back.start()
        self._pump(conn, upstream, parser)
        back.join(30)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, parser: _RequestParser | None) -> None:
        try:
            while data := source.recv(1 << 16):
                if parser is not None:
                    parser.feed(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (sink, source):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(5.0)
        self._sock.close()


def set_upstream(world: World, daemon: Daemon, url: str) -> None:
    """Point the daemon's `aws.upstream` at `url` and restart it (sessions are adopted again;
    used to put an UpstreamTap in the path, and to take it out)."""
    text = world.config.read_text()
    new = re.sub(r'(?m)^upstream = ".*"$', f'upstream = "{url}"', text, count=1)
    if new == text and f'upstream = "{url}"' not in text:
        raise HarnessError(f"no upstream line in {world.config}")
    world.config.write_text(new)
    daemon.stop()
    daemon.start()


if __name__ == "__main__":
    sys.exit("harness.py is a library for tests/e2e; run the suite with scripts/test")
