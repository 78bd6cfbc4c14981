"""The benchmark suite of the interceptor (`cargo xtask bench`; issue 6).

Runs inside the private network + mount namespace that scripts/bench creates, on loopback only,
and stops by itself. It reuses the e2e harness (tests/e2e/harness.py) for the test CA, the OIDC
provider, moto (the STS stand-in), the daemon and `interceptor run`, and adds:

- nginx (Debian) with TLS on 127.0.0.2:443 as the fast AWS stand-in (tests/bench/nginx.conf.in):
  fixed EC2 answers, an S3 upload sink and download file, STS proxied to moto;
- wrk with tests/bench/sigv4.lua (SigV4-shaped calls), tests/bench/client.py (a new TLS
  connection per call; fixed batches), curl (large transfers), tests/bench/connect_cost.c,
  mitmdump with tests/bench/mitm_resign.py (full mode only).

"direct" is the same client outside the agent cgroup: the name resolves to 127.0.0.2, where
nginx listens; "gateway" is the client started with `interceptor run`, whose connections the
eBPF programs send to the gateway, which re-signs and forwards them to nginx.

    bench.py [--quick] [--runs N] [--out DIR] [--transfer-gb G] [--no-write] [--profile]

Exit status 0 when every gateway call succeeded; 1 when any failed (the CI smoke relies on it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "tests" / "bench"
# The harness reads these when imported: the release binary, and the log level of a deployment
# (debug logging is a cost of its own; see BENCHMARKS.md).
os.environ.setdefault("INTERCEPTOR_BIN", str(REPO / "target" / "release" / "interceptor"))
os.environ.setdefault("INTERCEPTOR_E2E_LOG", "info")
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402  (needs the environment above)
from harness import Agents, Daemon, HarnessError, Idp, Moto, Process, TestCa, World  # noqa: E402

UPSTREAM_ADDRESS = harness.AWS_ADDRESS  # 127.0.0.2: where the names resolve and nginx listens
EC2_HOST = f"ec2.{harness.REGION}.amazonaws.com"
S3_HOST = f"s3.{harness.REGION}.amazonaws.com"
EC2_URL = f"https://{EC2_HOST}/"
#: Access keys in the Authorization header: the agent's placeholder (the upstream refuses it, so a
#: call that reaches nginx unsigned fails) and the "real" key of the direct client.
AGENT_AKID = "AKIAPLACEHOLDERAGENT0"
DIRECT_AKID = "ASIABENCHDIRECTKEY00"
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark step could not run; the message names the step and the cause."""


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def bench_json(text: str, what: str) -> dict[str, Any]:
    """The last "BENCHJSON {...}" line of a tool's output."""
    for line in reversed(text.splitlines()):
        if line.startswith("BENCHJSON "):
            return json.loads(line[len("BENCHJSON "):])
    raise BenchError(f"{what}: no BENCHJSON line in its output:\n{text[-3000:]}")


def percentile(dist: list[list[float]], p: float) -> float:
    """The value at percentile `p` of a [[p, value], ...] list (the nearest point at or above)."""
    for point, value in dist:
        if point >= p:
            return float(value)
    return float(dist[-1][1]) if dist else float("nan")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0])
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's VmRSS every 50 ms in a thread; `peak_mib` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            try:
                rss = proc_status(self.pid).get("VmRSS", 0)
            except OSError:
                return
            self.peak_kib = max(self.peak_kib, rss)
            self.samples.append((time.monotonic() - started, rss))
            self._stop.wait(0.05)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def peak_mib(self) -> float:
        return self.peak_kib / 1024


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "binary": os.path.relpath(harness.BINARY, REPO),
    }


# ---------------------------------------------------------------------------------------------
# The test world: CA, IdP, moto, nginx, daemon
# ---------------------------------------------------------------------------------------------


def upstream_certificate(ca: TestCa, directory: Path) -> tuple[Path, Path]:
    """A certificate for nginx, signed by the harness's test CA: the AWS names the benchmarks
    use and the upstream address (the daemon connects to https://127.0.0.2 and checks it)."""
    key, csr, cert = directory / "upstream.key", directory / "upstream.csr", directory / "upstream.pem"
    ext = directory / "upstream.ext"
    names = ["*.amazonaws.com", f"*.{harness.REGION}.amazonaws.com", "*.s3.amazonaws.com",
             "localhost"]
    ext.write_text("subjectAltName=" + ",".join(
        [f"DNS:{name}" for name in names] + [f"IP:{UPSTREAM_ADDRESS}", "IP:127.0.0.1"])
        + "\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    harness.check_call(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr),
                        "-subj", "/CN=bench upstream"], what="create upstream key")
    harness.check_call(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.ca_cert),
                        "-CAkey", str(ca.ca_cert.with_name("ca.key")), "-CAcreateserial",
                        "-out", str(cert), "-days", "2", "-extfile", str(ext)],
                       what="sign upstream certificate")
    key.chmod(0o600)
    return cert, key


@dataclass
class Nginx:
    process: Process
    directory: Path

    @classmethod
    def start(cls, directory: Path, cert: Path, key: Path, moto_url: str,
              download_bytes: int) -> "Nginx":
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise BenchError("nginx is missing: run scripts/setup (it installs nginx-light)")
        directory.mkdir(parents=True, exist_ok=True)
        bucket = directory / "s3" / "bench-bucket"
        bucket.mkdir(parents=True, exist_ok=True)
        # Sparse: reads are zeros from the page cache, no disk involved.
        with (bucket / "big").open("wb") as big:
            big.truncate(download_bytes)
        # The upload sink: a tmpfs of this mount namespace (it vanishes with it), one upload big.
        sink = directory / "sink"
        (sink).mkdir(exist_ok=True)
        size = f"{max(download_bytes, 64 * MIB) * 2 // MIB}m"
        harness.check_call(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "bench-sink",
                            str(sink)], what="mount the upload sink")
        (sink / "tmp").mkdir()
        conf = (BENCH / "nginx.conf.in").read_text().format(sink=sink,
            dir=directory, cert=cert, key=key, listen=f"{UPSTREAM_ADDRESS}:443",
            region=harness.REGION, moto=moto_url.rstrip("/"), workers=os.cpu_count() or 1)
        (directory / "nginx.conf").write_text(conf)
        process = Process.start("nginx", [nginx, "-c", str(directory / "nginx.conf"),
                                          "-p", str(directory)], directory)
        try:
            harness.wait_until(lambda: harness.tcp_accepts(UPSTREAM_ADDRESS, 443), 15,
                               "nginx on 127.0.0.2:443")
        except HarnessError as error:
            raise BenchError(f"{error}\n{process.log_tail()}\n"
                             f"{(directory / 'nginx-error.log').read_text(errors='replace')}")
        return cls(process=process, directory=directory)


class BenchWorld(World):
    """The e2e world with nginx as the upstream (STS still answered by moto, behind nginx)."""

    def write_config(self) -> None:
        self.policy.write_text(harness.PERMISSIVE_POLICY)
        self.config.write_text(f"""\
# interceptor bench config, written by tests/bench/bench.py
[gateway]
port = {self.gateway_port}
redirect_ports = [443]

[cgroup]
root = "{self.cgroup_root}"

[oidc]
issuer = "{self.idp.issuer}"
audience = "{harness.AUDIENCE}"
groups_claim = "groups"
ca_file = "{self.ca.ca_cert}"

[aws]
role_arn = "{self.moto.role_arn}"
region = "{harness.REGION}"
upstream = "https://{UPSTREAM_ADDRESS}:443"
upstream_ca_file = "{self.ca.ca_cert}"

[policy]
file = "{self.policy}"

[records]
dir = "{self.records}"

[control]
socket = "{self.control_socket}"
""")


@dataclass
class Env:
    """Everything a scenario needs, and the clean-up of it."""

    tmp: Path
    out: Path
    world: World
    daemon: Daemon
    agents: Agents
    token_file: Path
    nginx: Nginx
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def daemon_pid(self) -> int:
        assert self.daemon.process is not None, "the daemon was started in setup()"
        return self.daemon.process.pid

    def agent_env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**self.agents.env(), **extra}

    def run(self, command: list[str], *, agent: bool, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs `command` directly or as an agent (warmed up first: STS and the leaf certificate
        are fetched before the measured command starts)."""
        extra = {"BENCH_AKID": AGENT_AKID if agent else DIRECT_AKID, **(env or {})}
        if agent:
            warm = [sys.executable, str(BENCH / "client.py"), "keepalive", "--url", EC2_URL,
                    "--calls", "3"]
            script = '"$0" "$@" >/dev/null || { echo "warm-up failed" >&2; exit 97; }; exec ' \
                + " ".join(_quote(arg) for arg in command)
            argv = self.agents.argv(self.token_file, ["sh", "-c", script, *warm])
        else:
            argv = command
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=self.agent_env(extra), stdin=subprocess.DEVNULL)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def setup(tmp: Path, out: Path, download_bytes: int) -> Env:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # 1,000 agent connections mean 2,000+ sockets in the daemon, and wrk needs 1,000 too.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    harness.bind_private_etc(tmp / "etc")
    ca = TestCa.create(tmp / "ca")
    cert, key = upstream_certificate(ca, tmp / "ca")
    stoppers: list[Callable[[], None]] = []
    idp = Idp.start(tmp / "idp", ca)
    stoppers.append(idp.process.stop)
    moto = Moto.start(tmp / "moto")
    stoppers.append(moto.process.stop)
    nginx = Nginx.start(tmp / "nginx", cert, key, moto.url, download_bytes)
    stoppers.append(nginx.process.stop)
    world = BenchWorld(tmp=tmp, ca=ca, idp=idp, moto=moto, gateway_port=harness.free_port(),
                       cgroup_root=harness.cgroup2_mount() / f"interceptor-bench-{os.getpid()}")
    world.write_config()
    daemon = Daemon(world)
    daemon.start()
    agents = Agents(world=world, home=tmp / "agent-home", tokens=tmp / "tokens")
    token_file = agents.token_file("alice", idp.token(harness.ALICE))
    return Env(tmp=tmp, out=out, world=world, daemon=daemon, agents=agents,
               token_file=token_file, nginx=nginx, stoppers=stoppers)


def teardown(env: Env) -> None:
    env.daemon.stop()
    problems = harness.remove_cgroup_tree(env.world.cgroup_root)
    if env.daemon.starts:
        result = env.daemon.uninstall()
        if result.returncode != 0:
            problems.append(f"uninstall exited {result.returncode}: {result.stderr.strip()}")
    for stop in reversed(env.stoppers):
        stop()
    for problem in problems:
        print(f"bench teardown: {problem}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------


@dataclass
class Results:
    """Per figure, the value of every run; per scenario, the latency distributions to plot."""

    figures: dict[str, list[float]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    dists: dict[str, dict[str, list[list[list[float]]]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, unit: str) -> None:
        self.figures.setdefault(name, []).append(value)
        self.units[name] = unit

    def dist(self, scenario: str, path: str, points: list[list[float]]) -> None:
        self.dists.setdefault(scenario, {}).setdefault(path, []).append(points)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)
            print(f"  FAILED: {what}", file=sys.stderr)


def wrk(env: Env, *, agent: bool, connections: int, seconds: float, url: str = EC2_URL,
        host: str = EC2_HOST, threads: int | None = None) -> dict[str, Any]:
    threads = threads or min(connections, os.cpu_count() or 1)
    # wrk takes whole seconds only.
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(BENCH / "sigv4.lua"), url]
    result = env.run(argv, agent=agent, env={"BENCH_HOST": host},
                     timeout=seconds + 120)
    what = f"wrk -c{connections} {'gateway' if agent else 'direct'}"
    if result.returncode != 0:
        raise BenchError(f"{what} exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    data = bench_json(result.stdout, what)
    data["errors"] = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors",
                                           "status_errors", "timeouts"))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def wrk_ok(results: Results, data: dict[str, Any], what: str) -> None:
    results.check(data["requests"] > 0 and data["errors"] == 0,
                  f"{what}: {data['requests']} requests, {data['errors']} errors "
                  f"(non-2xx {data['status_errors']}, socket {data['errors'] - data['status_errors']})")


def scenario_keepalive(env: Env, results: Results, seconds: float) -> None:
    """One connection, one call at a time: the latency an agent feels per call."""
    runs = {}
    for path, agent in (("direct", False), ("gateway", True)):
        data = wrk(env, agent=agent, connections=1, threads=1, seconds=seconds)
        wrk_ok(results, data, f"keep-alive {path}")
        runs[path] = data
        results.dist("keepalive", path, data["percentiles"])
    for p, name in ((50, "p50"), (99, "p99")):
        direct = percentile(runs["direct"]["percentiles"], p)
        gateway = percentile(runs["gateway"]["percentiles"], p)
        results.add(f"keep-alive {name} direct", direct, "us")
        results.add(f"keep-alive {name} gateway", gateway, "us")
        results.add(f"keep-alive {name} ratio", gateway / direct, "x")


def scenario_newconn(env: Env, results: Results, seconds: float) -> None:
    """A new TCP + TLS connection for every call (leaf certificate cached after the first)."""
    p50 = {}
    for path, agent in (("direct", False), ("gateway", True)):
        argv = [sys.executable, str(BENCH / "client.py"), "newconn", "--url", EC2_URL,
                "--seconds", f"{seconds:g}"]
        result = env.run(argv, agent=agent, timeout=seconds + 120)
        data = bench_json(result.stdout, f"newconn {path}")
        results.check(result.returncode == 0 and data["calls"] > 0,
                      f"new connection per call {path}: {data['calls']} calls, "
                      f"{data['errors']} errors, {data['non_2xx']} non-2xx")
        results.dist("newconn", path, data["percentiles"])
        p50[path] = percentile(data["percentiles"], 50)
        results.add(f"new-conn p50 {path}", p50[path], "us")
        results.add(f"new-conn calls/s {path}", data["calls"] / seconds, "1/s")
    results.add("new-conn p50 ratio", p50["gateway"] / p50["direct"], "x")


def scenario_throughput(env: Env, results: Results, seconds: float) -> None:
    """64 connections as fast as they go; the daemon's CPU time per call as well."""
    rps = {}
    for path, agent in (("direct", False), ("gateway", True)):
        before = cpu_seconds(env.daemon_pid)
        data = wrk(env, agent=agent, connections=64, seconds=seconds)
        spent = cpu_seconds(env.daemon_pid) - before
        wrk_ok(results, data, f"throughput-64 {path}")
        results.dist("throughput64", path, data["percentiles"])
        rps[path] = data["rps"]
        results.add(f"throughput-64 {path}", data["rps"], "req/s")
        if agent:
            results.add("daemon CPU per call (64 conns)", spent / data["requests"] * 1e6, "us")
    results.add("throughput-64 ratio", rps["gateway"] / rps["direct"], "x")


def scenario_mitmproxy(env: Env, results: Results, seconds: float) -> None:
    """mitmdump in reverse mode with the botocore re-signing add-on, same load as 64-conn."""
    mitmdump = Path(sys.executable).with_name("mitmdump")
    if not mitmdump.exists():
        results.notes.append("mitmproxy skipped: no .venv-bench (scripts/setup --bench)")
        return
    port = harness.free_port()
    process = Process.start("mitmdump", [
        str(mitmdump), "-q", "--mode", f"reverse:https://{UPSTREAM_ADDRESS}:443",
        "--listen-host", "127.0.0.1", "--listen-port", str(port),
        "--set", "keep_host_header=true", "--set", f"confdir={env.tmp / 'mitm'}",
        "--set", f"ssl_verify_upstream_trusted_ca={env.world.ca.ca_cert}",
        "-s", str(BENCH / "mitm_resign.py")], env.tmp / "mitm")
    try:
        harness.wait_until(lambda: harness.tcp_accepts("127.0.0.1", port), 30, "mitmdump")
        with RssSampler(process.pid) as rss:
            data = wrk(env, agent=False, connections=64, seconds=seconds,
                       url=f"https://127.0.0.1:{port}/")
        wrk_ok(results, data, "mitmproxy")
        results.dist("throughput64", "mitmproxy", data["percentiles"])
        results.add("mitmproxy throughput-64", data["rps"], "req/s")
        results.add("mitmproxy p50 (64 conns)", percentile(data["percentiles"], 50), "us")
        results.add("mitmproxy RSS peak", rss.peak_mib, "MiB")
        gateway = results.figures.get("throughput-64 gateway")
        if gateway:
            results.add("gateway / mitmproxy throughput", gateway[-1] / max(data["rps"], 1e-9),
                        "x")
    finally:
        process.stop()


def curl_transfer(env: Env, *, agent: bool, upload: Path | None, size: int) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    akid = AGENT_AKID if agent else DIRECT_AKID
    auth = (f"AWS4-HMAC-SHA256 Credential={akid}/{stamp[:8]}/{harness.REGION}/s3/aws4_request, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}")
    argv = ["curl", "-sSk", "-o", "/dev/null", "-w", "%{json}", "-H", f"Authorization: {auth}",
            "-H", f"X-Amz-Date: {stamp}", "-H", "X-Amz-Content-Sha256: UNSIGNED-PAYLOAD",
            "-H", "Expect:"]
    if upload is not None:
        argv += ["-T", str(upload), f"https://{S3_HOST}/bench-bucket/uploaded"]
    else:
        argv += [f"https://{S3_HOST}/bench-bucket/big"]
    result = env.run(argv, agent=agent, timeout=1800)
    out = result.stdout[result.stdout.find("{"):] if "{" in result.stdout else "{}"
    data = json.loads(out)
    # The sink answers a stored PUT with 201 (204 when it replaced one); S3 would say 200.
    data["ok"] = result.returncode == 0 and data.get("http_code") in (200, 201, 204)
    if upload is not None:
        (env.nginx.directory / "sink" / "bench-bucket" / "uploaded").unlink(missing_ok=True)
    data["seconds"] = float(data.get("time_total", 0) or 0)
    moved = data.get("size_upload" if upload else "size_download", 0)
    data["ok"] = data["ok"] and moved == size
    data["mib_s"] = moved / MIB / data["seconds"] if data["seconds"] else 0.0
    data["stderr"] = result.stderr[-2000:]
    return data


def scenario_transfers(env: Env, results: Results, size: int) -> None:
    """Upload to the S3 sink and download the big file: throughput and the daemon's memory."""
    source = env.tmp / "upload.bin"
    with source.open("wb") as sparse:
        sparse.truncate(size)
    gib = size / (1024 * MIB)
    # Both files are read once first, so neither path pays for bringing them into the page
    # cache (the direct transfer runs first and used to, which made run 1's direct figures the
    # slowest of every series).
    for path in (source, env.nginx.directory / "s3" / "bench-bucket" / "big"):
        with path.open("rb") as cold:
            while cold.read(4 * MIB):
                pass
    for direction, upload in (("upload", source), ("download", None)):
        speeds = {}
        for path, agent in (("direct", False), ("gateway", True)):
            # The allocator keeps what earlier scenarios (1,000 connections) took: what counts
            # for "flat memory" is the growth during the transfer, next to the peak itself.
            before = proc_status(env.daemon_pid)["VmRSS"] / 1024
            with RssSampler(env.daemon_pid) as rss:
                data = curl_transfer(env, agent=agent, upload=upload, size=size)
            results.check(data["ok"], f"{gib:g} GiB {direction} {path}: http "
                          f"{data.get('http_code')}, {data['stderr'].strip()}")
            speeds[path] = data["mib_s"]
            results.add(f"{gib:g} GiB {direction} {path}", data["mib_s"], "MiB/s")
            if agent:
                results.add(f"{gib:g} GiB {direction}: daemon RSS peak", rss.peak_mib, "MiB")
                results.add(f"{gib:g} GiB {direction}: daemon RSS growth",
                            rss.peak_mib - before, "MiB")
        results.add(f"{gib:g} GiB {direction} ratio", speeds["gateway"] / max(speeds["direct"], 1e-9),
                    "x")
    results.add("daemon VmHWM after transfers", proc_status(env.daemon_pid)["VmHWM"] / 1024, "MiB")
    source.unlink()


def scenario_many(env: Env, results: Results, seconds: float) -> None:
    """1,000 concurrent agent connections: errors, and the daemon's memory while they are open."""
    before = proc_status(env.daemon_pid)["VmRSS"] / 1024
    with RssSampler(env.daemon_pid) as rss:
        data = wrk(env, agent=True, connections=1000, threads=2, seconds=seconds)
    wrk_ok(results, data, "1000 connections gateway")
    results.dist("conn1000", "gateway", data["percentiles"])
    results.add("1000 conns: daemon RSS peak", rss.peak_mib, "MiB")
    results.add("1000 conns: daemon RSS before", before, "MiB")
    results.add("1000 conns: gateway req/s", data["rps"], "req/s")
    results.add("1000 conns: errors", data["errors"], "")
    direct = wrk(env, agent=False, connections=1000, threads=2, seconds=seconds)
    results.dist("conn1000", "direct", direct["percentiles"])
    results.add("1000 conns: direct req/s", direct["rps"], "req/s")


def connect_cost_binary(env: Env) -> Path:
    binary = env.tmp / "connect_cost"
    if not binary.exists():
        harness.check_call(["cc", "-O2", "-o", str(binary), str(BENCH / "connect_cost.c")],
                           what="compile connect_cost.c")
    return binary


def scenario_connect(env: Env, results: Results, batches: int, calls: int) -> None:
    """connect() of a socket that is not redirected (127.0.0.1, not port 443), inside the agent
    cgroup against outside: the cost of the cgroup/connect4 and sock_ops programs.

    Outside and inside alternate three times, and the fastest batch of each counts: on a shared
    machine a batch is only ever slowed down by others, never sped up, so the minimum is the
    figure that repeats; the median batch is reported as well."""
    binary = connect_cost_binary(env)
    batches_of: dict[str, dict[str, list[float]]] = {"outside": {}, "inside": {}}
    for _ in range(3):
        for path, agent in (("outside", False), ("inside", True)):
            result = env.run([str(binary), str(batches), str(calls)], agent=agent, timeout=300)
            if result.returncode != 0:
                raise BenchError(f"connect_cost {path} exited {result.returncode}: "
                                 f"{result.stderr}")
            for mode, values in bench_json(result.stdout, f"connect_cost {path}").items():
                batches_of[path].setdefault(mode, []).extend(values)
    for mode in ("refused", "established"):
        outside, inside = batches_of["outside"][mode], batches_of["inside"][mode]
        results.add(f"connect() {mode} outside (fastest batch)", min(outside), "ns")
        results.add(f"connect() {mode} inside (fastest batch)", min(inside), "ns")
        results.add(f"connect() {mode} extra", min(inside) - min(outside), "ns")
        results.add(f"connect() {mode} extra (median batches)",
                    statistics.median(inside) - statistics.median(outside), "ns")


# ---------------------------------------------------------------------------------------------
# CPU cost as a count (callgrind) and the profile (perf)
# ---------------------------------------------------------------------------------------------


def callgrind_batch(env: Env, results: Results, calls: int, newconn: bool) -> None:
    """The daemon's instructions for exactly `calls` calls, under callgrind (restarted)."""
    label = "new connection" if newconn else "keep-alive"
    argv = env.agents.argv(env.token_file, [
        sys.executable, str(BENCH / "client.py"), "batch", "--url", EC2_URL,
        "--calls", str(calls), *(["--newconn"] if newconn else [])])
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=env.agent_env({"BENCH_AKID": AGENT_AKID}))
    try:
        line = harness.read_line(agent.stdout, 300, "the batch client's warm-up")
        if line != "warm":
            raise BenchError(f"batch client warm-up: {line!r} {agent.stderr.read()[-2000:]}")
        pid = str(env.daemon_pid)
        harness.check_call(["callgrind_control", "--zero", pid], what="callgrind zero")
        agent.stdin.write("go\n")
        agent.stdin.flush()
        out, err = agent.communicate(timeout=1800)
        dump = env.out / f"callgrind.{'newconn' if newconn else 'keepalive'}.out"
        harness.check_call(["callgrind_control", "--dump=batch", pid], what="callgrind dump")
    finally:
        if agent.poll() is None:
            agent.kill()
    data = bench_json(out, f"batch client {label}")
    results.check(agent.returncode == 0, f"callgrind batch {label}: {err[-1000:]}")
    # The newest dump file of the daemon's process is the batch's.
    dumps = sorted(env.out.glob(f"callgrind.daemon.{pid}*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise BenchError("callgrind wrote no dump")
    shutil.copy(dumps[-1], dump)
    total = callgrind_total(dump)
    results.add(f"daemon instructions per call ({label})", total / max(data["calls"], 1), "instr")


def callgrind_total(dump: Path) -> int:
    for line in dump.read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise BenchError(f"{dump}: no totals line")


def cpu_count_scenario(env: Env, results: Results, calls: int) -> None:
    """Restart the daemon under callgrind, count a keep-alive and a new-connection batch."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        results.notes.append("instruction counts skipped: valgrind missing (scripts/setup --bench)")
        return
    env.daemon.stop()
    env.out.mkdir(parents=True, exist_ok=True)
    for old in env.out.glob("callgrind.daemon.*"):
        old.unlink()
    vg = ["valgrind", "--tool=callgrind", "--collect-atstart=yes",
          f"--callgrind-out-file={env.out}/callgrind.daemon.%p"]
    env.daemon.starts += 1
    env.daemon.process = Process.start(
        "daemon-callgrind", [*vg, *harness.daemon_argv(env.world.config)], env.tmp / "logs",
        env=harness.clean_env({"RUST_LOG": harness.DAEMON_LOG_FILTER}))
    try:
        harness.wait_until(env.daemon.ready, 300, "the daemon under callgrind")
        callgrind_batch(env, results, calls, newconn=False)
        callgrind_batch(env, results, max(calls // 10, 20), newconn=True)
    finally:
        env.daemon.stop()
        for leftover in env.out.glob("callgrind.daemon.*"):
            leftover.unlink()
        env.daemon.start()


def perf_profile(env: Env, results: Results, seconds: float) -> None:
    """`perf record` (cpu-clock) of the daemon under the 64-connection keep-alive load; writes
    perf-report.txt (by symbol) and perf-dso.txt (by library) into the output directory. Before
    that, `perf stat` counts the daemon's system calls and context switches per call (software
    events: they work where hardware counters do not)."""
    if shutil.which("perf") is None:
        print("  perf missing: no profile", file=sys.stderr)
        return
    # Every system call, then the ones a proxy's per-call cost hinges on: socket writes and
    # reads (two of each per call at best: one per hop), file writes (recording, audit) and
    # futex (one thread waking another).
    names = {"raw_syscalls:sys_enter": "syscalls", "context-switches": "context switches",
             "syscalls:sys_enter_writev": "writev", "syscalls:sys_enter_recvfrom": "recvfrom",
             "syscalls:sys_enter_write": "write", "syscalls:sys_enter_futex": "futex"}
    events = list(names)
    counter = subprocess.Popen(["perf", "stat", "-x", ",", "-e", ",".join(events),
                                "-p", str(env.daemon_pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    load = wrk(env, agent=True, connections=64, seconds=seconds)
    counter.send_signal(signal.SIGINT)
    _, counted = counter.communicate(timeout=60)
    calls = load["requests"] or 1
    for line in counted.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in events and fields[0].isdigit():
            results.add(f"daemon {names[fields[2]]} per call (64 conns)",
                        int(fields[0]) / calls, "")
    data = env.out / "perf.data"
    # -g: the kernel's call chains are exact (the daemon's own are not: no frame pointers in
    # release builds; callgrind gives those).
    recorder = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g",
                                 "-o", str(data), "-p", str(env.daemon_pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    wrk(env, agent=True, connections=64, seconds=seconds)
    recorder.send_signal(signal.SIGINT)
    recorder.wait(60)
    for name, extra in (("perf-report.txt", ["--no-children", "--sort", "symbol", "-g", "none"]),
                        ("perf-dso.txt", ["--no-children", "--sort", "dso", "-g", "none"]),
                        ("perf-kernel.txt", ["--children", "--sort", "symbol", "-g", "none",
                                             "--dsos", "[kernel.kallsyms]"])):
        with (env.out / name).open("w") as report:
            subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--percent-limit", "0.5",
                            *extra], stdout=report, stderr=subprocess.DEVNULL,
                           timeout=600)


# ---------------------------------------------------------------------------------------------
# Report: table, plots, BENCHMARKS.md
# ---------------------------------------------------------------------------------------------

#: The targets of issue 6: figure -> (comparison, bound).
TARGETS = {
    "keep-alive p50 ratio": ("<=", 1.15),
    "keep-alive p99 ratio": ("<=", 1.5),
    "new-conn p50 ratio": ("<=", 1.3),
    "throughput-64 ratio": (">=", 0.8),
    "gateway / mitmproxy throughput": (">=", 50.0),
    "1000 conns: daemon RSS peak": ("<", 100.0),
    "1000 conns: errors": ("<=", 0.0),
    "connect() refused extra": ("<", 2000.0),
    "connect() established extra": ("<", 2000.0),
}


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def target_text(name: str, values: list[float]) -> str:
    for suffix in (" ratio", ": daemon RSS peak"):
        if name.endswith(suffix) and "GiB" in name:
            bound = ("<", 64.0) if "RSS" in name else (">=", 0.8)
            break
    else:
        bound = TARGETS.get(name)
    if bound is None:
        return ""
    op, limit = bound
    median = statistics.median(values)
    met = {"<=": median <= limit, ">=": median >= limit, "<": median < limit}[op]
    return f"{op} {fmt(limit)}: {'met' if met else '**not met**'}"


def table(results: Results) -> str:
    lines = ["| figure | unit | min | median | max | target |", "| --- | --- | --- | --- | --- | --- |"]
    for name, values in results.figures.items():
        lines.append(f"| {name} | {results.units[name]} | {fmt(min(values))} | "
                     f"{fmt(statistics.median(values))} | {fmt(max(values))} | "
                     f"{target_text(name, values)} |")
    return "\n".join(lines)


def plots(results: Results, out: Path) -> list[Path]:
    """One latency-distribution plot per scenario (every run a line), as SVG."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results.notes.append("plots skipped: matplotlib missing (scripts/setup --bench)")
        return []
    titles = {"keepalive": "small call, keep-alive, 1 connection",
              "newconn": "small call, new TLS connection per call",
              "throughput64": "small calls, 64 connections (latency under load)",
              "conn1000": "1,000 concurrent connections"}
    colors = {"direct": "tab:blue", "gateway": "tab:orange", "mitmproxy": "tab:red"}
    written = []
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    for scenario, paths in results.dists.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for path, runs in paths.items():
            for index, points in enumerate(runs):
                xs = [p / 100 for p, _ in points if p < 100]
                ys = [v / 1000 for p, v in points if p < 100]
                ax.plot(xs, ys, color=colors.get(path, "gray"), alpha=0.8 if index == 0 else 0.35,
                        label=path if index == 0 else None, linewidth=1.2)
        ax.set_xscale("logit")
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("latency (ms)")
        ax.set_title(titles.get(scenario, scenario))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = plot_dir / f"{scenario}.svg"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


RESULTS_START = "<!-- bench:results:start (written by cargo xtask bench; edit outside) -->"
RESULTS_END = "<!-- bench:results:end -->"


def results_markdown(results: Results, info: dict[str, str], args: argparse.Namespace,
                     plot_paths: list[Path]) -> str:
    lines = [RESULTS_START, "",
             f"Machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}. "
             f"Date: {info['date']}. Commit: {info['commit']}. Daemon: {info['binary']}. "
             f"Runs: {args.runs} "
             f"({'quick' if args.quick else 'full'}; {args.seconds:g} s per load).", "",
             table(results), ""]
    if results.notes:
        lines += [f"- {note}" for note in results.notes] + [""]
    if results.failures:
        lines += ["Failures:", ""] + [f"- {failure}" for failure in results.failures] + [""]
    for path in plot_paths:
        rel = os.path.relpath(path, REPO)
        lines.append(f"![{path.stem}]({rel})")
    lines += ["", RESULTS_END]
    return "\n".join(lines)


def write_benchmarks_md(block: str) -> None:
    target = REPO / "BENCHMARKS.md"
    text = target.read_text() if target.exists() else "# Benchmarks\n\n"
    if RESULTS_START in text and RESULTS_END in text:
        head, _, rest = text.partition(RESULTS_START)
        _, _, tail = rest.partition(RESULTS_END)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    target.write_text(text)


# ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="interceptor benchmarks (issue 6)")
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke: 1 s per load, 1 run, no transfers, mitmproxy, callgrind")
    parser.add_argument("--runs", type=int, help="repetitions (default 5, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per load (default 5, quick 1)")
    parser.add_argument("--transfer-gb", type=float, default=3.0, help="size of each transfer")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument("--profile", action="store_true",
                        help="perf record of the daemon under the 64-connection load")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to skip: "
                        "keepalive,newconn,throughput,mitmproxy,transfers,many,connect,callgrind")
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 5)
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.skip |= {"mitmproxy", "transfers", "callgrind"}
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0 or not harness.in_private_namespaces():
        print("bench.py runs as root inside its own namespaces: use scripts/bench "
              "(cargo xtask bench)", file=sys.stderr)
        return 2
    if not harness.BINARY.exists():
        print(f"{harness.BINARY} is missing: cargo build --release", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    transfer_bytes = int(args.transfer_gb * 1024 * MIB)
    tmp = Path(tempfile.mkdtemp(prefix="interceptor-bench-"))
    results = Results()
    info = machine()
    started = time.monotonic()
    env = None
    try:
        env = setup(tmp, args.out, 0 if "transfers" in args.skip else transfer_bytes)
        print(f"==> world up in {time.monotonic() - started:.1f}s (daemon pid {env.daemon_pid})")
        s = args.seconds
        for run in range(1, args.runs + 1):
            print(f"==> run {run}/{args.runs}")
            steps: list[tuple[str, Callable[[], None]]] = [
                ("keepalive", lambda: scenario_keepalive(env, results, s)),
                ("newconn", lambda: scenario_newconn(env, results, s)),
                ("throughput", lambda: scenario_throughput(env, results, s)),
                ("mitmproxy", lambda: scenario_mitmproxy(env, results, s)),
                ("transfers", lambda: scenario_transfers(env, results, transfer_bytes)),
                # 1,000 TLS handshakes alone take about a second here: give them time.
                ("many", lambda: scenario_many(env, results, max(s, 4.0))),
                ("connect", lambda: scenario_connect(env, results, 5 if args.quick else 15,
                                                     2000 if args.quick else 5000)),
            ]
            for name, step in steps:
                if name in args.skip:
                    continue
                step_started = time.monotonic()
                step()
                print(f"  {name}: {time.monotonic() - step_started:.1f}s")
        if args.profile:
            print("==> perf profile of the daemon (64 connections)")
            perf_profile(env, results, max(s, 10.0))
        if "callgrind" not in args.skip:
            print("==> instructions per call (daemon under callgrind)")
            cpu_count_scenario(env, results, 2000)
    except (BenchError, HarnessError, subprocess.TimeoutExpired) as error:
        results.failures.append(f"bench aborted: {error}")
        print(f"bench: {error}", file=sys.stderr)
        if env is not None:
            print(f"daemon log:\n{env.daemon.log_tail()}", file=sys.stderr)
    finally:
        if env is not None:
            teardown(env)
        # The upload sink is a tmpfs mounted below tmp: unmount it first, or its mount point
        # (and so tmp) outlives the namespace as an empty directory.
        for sink in tmp.glob("**/sink"):
            subprocess.run(["umount", str(sink)], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    plot_paths = [] if args.quick else plots(results, args.out)
    block = results_markdown(results, info, args, plot_paths)
    (args.out / ("quick.md" if args.quick else "results.md")).write_text(block + "\n")
    (args.out / ("quick.json" if args.quick else "results.json")).write_text(json.dumps(
        {"machine": info, "figures": results.figures, "units": results.units,
         "distributions": results.dists, "failures": results.failures, "notes": results.notes},
        indent=1))
    print(table(results))
    if not args.quick and not args.no_write:
        write_benchmarks_md(block)
        print("==> BENCHMARKS.md updated")
    print(f"==> {time.monotonic() - started:.0f}s; results in {args.out}")
    if results.failures:
        print("bench: FAILED:\n  " + "\n  ".join(results.failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
