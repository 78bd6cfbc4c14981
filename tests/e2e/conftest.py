"""Session fixtures of the end-to-end suite: namespace, test CA, OIDC provider, moto, daemon.

Run the suite with `scripts/test` (everything) or `tests/e2e/run [pytest args]` (this suite
only); both enter a fresh network + mount namespace first. Fixtures, in dependency order:

    private_etc      (autouse) private /etc/hosts + /etc/nsswitch.conf bind mounts
    test_ca          openssl CA + 127.0.0.1 certificate for the IdP
    idp              tests/peers/oidc/server.mjs            -> harness.Idp
    moto             tests/peers/moto_server.py             -> harness.Moto
    world            config.toml, policy, records dir, gateway port, cgroup root -> harness.World
    short_lived_token  agent-short's token, fetched early so it has expired by its test
    daemon           `interceptor daemon` (started; stopped, uninstalled, cgroups removed after)
    agents           `interceptor run` helper                -> harness.Agents
    alice_token, alice_token_file, admin_token_file
    policy           install a policy in the daemon for one test, then the permissive one again
    audit            records.dir/audit.log read from a mark -> harness.AuditLog
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

import harness
from harness import Agents, Daemon, Idp, Moto, TestCa, World


def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() != 0:
        pytest.exit("the e2e suite needs root (eBPF, cgroups, namespaces)", returncode=2)
    if not harness.in_private_namespaces():
        pytest.exit("the e2e suite runs only in its own network + mount namespace: "
                    "use scripts/test or tests/e2e/run", returncode=2)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("world")


@pytest.fixture(scope="session", autouse=True)
def private_etc(world_dir: Path) -> None:
    harness.bind_private_etc(world_dir / "etc")


@pytest.fixture(scope="session")
def test_ca(world_dir: Path) -> TestCa:
    return TestCa.create(world_dir / "ca")


@pytest.fixture(scope="session")
def idp(world_dir: Path, test_ca: TestCa):
    peer = Idp.start(world_dir / "idp", test_ca)
    yield peer
    peer.process.stop()


@pytest.fixture(scope="session")
def moto(world_dir: Path):
    peer = Moto.start(world_dir / "moto")
    yield peer
    peer.process.stop()


@pytest.fixture(scope="session")
def world(world_dir: Path, test_ca: TestCa, idp: Idp, moto: Moto) -> World:
    built = World(
        tmp=world_dir,
        ca=test_ca,
        idp=idp,
        moto=moto,
        gateway_port=harness.free_port(),
        cgroup_root=harness.cgroup2_mount() / f"interceptor-e2e-{os.getpid()}",
    )
    built.write_config()
    return built


@pytest.fixture(scope="session")
def short_lived_token(idp: Idp) -> str:
    """A token of the short-lived client; see test_tokens.py."""
    return idp.token(harness.SHORT_LIVED)


@pytest.fixture(scope="session")
def daemon(world: World, short_lived_token: str):
    if not harness.BINARY.exists():
        pytest.fail(f"{harness.BINARY} is missing: run `cargo build` (scripts/test does)")
    running = Daemon(world)
    try:
        running.start()
        yield running
    finally:
        teardown_daemon(running, world)


def teardown_daemon(running: Daemon, world: World) -> None:
    """Stop by PID, run the explicit uninstall, remove our cgroups; warn about leftovers."""
    running.stop()
    problems = harness.remove_cgroup_tree(world.cgroup_root)
    if running.starts:
        result = running.uninstall()
        if result.returncode != 0:
            problems.append(f"uninstall exited {result.returncode}: {result.stderr.strip()}")
    for problem in problems:
        warnings.warn(f"e2e teardown: {problem}", stacklevel=1)


@pytest.fixture(scope="session")
def agents(world: World, daemon: Daemon) -> Agents:
    return Agents(world=world, home=world.tmp / "agent-home", tokens=world.tmp / "tokens")


@pytest.fixture(scope="session")
def alice_token(idp: Idp) -> str:
    return idp.token(harness.ALICE)


@pytest.fixture(scope="session")
def alice_token_file(agents: Agents, alice_token: str) -> Path:
    return agents.token_file("alice", alice_token)


@pytest.fixture(scope="session")
def admin_token_file(agents: Agents, idp: Idp) -> Path:
    return agents.token_file("admin", idp.token(harness.ADMIN))


@pytest.fixture
def policy(world: World, daemon: Daemon):
    """Install a policy in the running daemon for one test; the permissive one comes back after,
    so other test files are unaffected (quota usage persists: use rule names unique per test)."""
    control = harness.PolicyControl(world, daemon)
    try:
        yield control
    finally:
        if daemon.process is not None and daemon.process.alive():
            control.restore()
        else:
            world.policy.write_text(harness.PERMISSIVE_POLICY)


@pytest.fixture
def audit(world: World) -> harness.AuditLog:
    return harness.AuditLog(world.audit_log)


@pytest.fixture
def daemon_log(daemon: Daemon, request: pytest.FixtureRequest):
    """On failure, show the daemon's last log lines under the test's report."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- daemon log (tail)\n{daemon.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
