//! The eBPF redirect against the real kernel: needs root, cgroup v2 and BPF, and fails (never
//! skips) when one is missing.
//!
//! Each test runs its scenario on a thread that unshared a fresh network namespace (so every
//! listener and connection stays inside it), installs the redirect on its own cgroup root with
//! its own pin directory, and starts "agents": this test binary re-executed in the
//! `agent_process` role, moved into a session cgroup before exec.

use std::{
    fs::{self, File},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use interceptor::redirect::{
    AgentConnection, RedirectSettings, Redirector, cgroupfs, uninstall_pins,
};

/// Set in an agent's environment: what the agent does (see [`agent_process`]).
const AGENT_ENV: &str = "INTERCEPTOR_REDIRECT_TEST_AGENT";
/// Prefix of the one line an agent reports on stdout.
const REPORT: &str = "AGENT ";
/// The destination agents ask for; a listener there proves a connection was NOT redirected.
const ORIGINAL: &str = "127.0.0.9:443";
const ORIGINAL_MAPPED: &str = "[::ffff:127.0.0.9]:443";
const ORIGINAL_V6: &str = "[::1]:443";
/// Bound on every wait for an agent.
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn agent_connections_reach_the_gateway_and_keep_their_original_destination() {
    in_fresh_netns("connect", |env| {
        let original = listen(ORIGINAL);
        let gateway = listen("127.0.0.1:0");
        let port = gateway.local_addr().unwrap().port();
        let gateway6 = listen(&format!("[::1]:{port}"));
        let redirector = env.install(&gateway);

        // A real IPv6 destination goes to the gateway's ::1 listener, the others to 127.0.0.1.
        for (target, gateway) in [
            (ORIGINAL, &gateway),
            (ORIGINAL_MAPPED, &gateway),
            (ORIGINAL_V6, &gateway6),
        ] {
            let mut agent = env.spawn_agent(&format!("tcp {target}"));
            let report = agent.report();
            let (accepted, peer) = accept(gateway);
            let found = redirector.lookup(peer).expect("lookup");
            let expected = AgentConnection {
                original_dst: target.parse().unwrap(),
                cgroup_id: env.session_id(),
                pid: agent.child.id(),
            };
            assert_eq!(
                found,
                Some(expected),
                "lookup of {peer} for agent to {target}"
            );
            // The agent's getpeername shows where it asked to go, not the gateway.
            assert_eq!(report.field("peer"), target, "agent report: {}", report.0);
            // The gateway saw the agent's own local port as the peer port.
            let local: SocketAddr = report.field("local").parse().unwrap();
            assert_eq!(local.port(), peer.port());
            drop(accepted);
            agent.finish();
        }
        assert_nothing_pending(&original, "a redirected agent reached the original address");
        redirector.uninstall().expect("uninstall");
    });
}

#[test]
fn udp_and_processes_outside_the_cgroup_are_left_alone() {
    in_fresh_netns("bypass", |env| {
        let original_udp = UdpSocket::bind(ORIGINAL).expect("bind udp 127.0.0.9:443");
        original_udp.set_read_timeout(Some(WAIT)).unwrap();
        let original = listen(ORIGINAL);
        let gateway = listen("127.0.0.1:0");
        let redirector = env.install(&gateway);

        let mut agent = env.spawn_agent(&format!("udp {ORIGINAL}"));
        let report = agent.report();
        let mut datagram = [0u8; 16];
        let (len, from) = original_udp
            .recv_from(&mut datagram)
            .expect("udp datagram arrives");
        assert_eq!(&datagram[..len], b"agent");
        assert_eq!(
            report.field("peer"),
            ORIGINAL,
            "udp peer as the agent sees it"
        );
        assert_eq!(redirector.lookup(from).expect("lookup"), None);
        agent.finish();

        // This test process is outside the agents' cgroup root.
        let outside = TcpStream::connect(ORIGINAL).expect("direct connect from outside");
        assert_eq!(outside.peer_addr().unwrap(), ORIGINAL.parse().unwrap());
        let (_accepted, _) = accept(&original);
        assert_nothing_pending(&gateway, "a process outside the cgroup was redirected");
        redirector.uninstall().expect("uninstall");
    });
}

#[test]
fn pins_fail_closed_are_taken_over_and_uninstall_detaches() {
    in_fresh_netns("lifecycle", |env| {
        let original = listen(ORIGINAL);

        // A daemon that stops without uninstalling leaves agents refused, not sent out.
        let gateway = listen("127.0.0.1:0");
        let first = env.install(&gateway);
        let port = gateway.local_addr().unwrap().port();
        drop(first);
        drop(gateway);
        assert!(
            env.pin_dir.join("links/connect4").exists(),
            "links stay pinned after drop"
        );
        for target in [ORIGINAL, ORIGINAL_MAPPED] {
            let mut agent = env.spawn_agent(&format!("tcp {target}"));
            assert_eq!(
                agent.report().field("error"),
                "ECONNREFUSED",
                "agent to {target}"
            );
            agent.finish();
        }
        assert_nothing_pending(
            &original,
            "agent reached the original address with no daemon",
        );

        // A new daemon on the same port takes the pins over; one program per hook remains.
        let gateway = listen(&format!("127.0.0.1:{port}"));
        let second = env.install(&gateway);
        let mut agent = env.spawn_agent(&format!("tcp {ORIGINAL}"));
        agent.report();
        let (_accepted, peer) = accept(&gateway);
        let found = second
            .lookup(peer)
            .expect("lookup")
            .expect("record after takeover");
        assert_eq!(found.original_dst, ORIGINAL.parse().unwrap());
        agent.finish();
        for hook in HOOKS {
            assert_eq!(
                attached(&env.cgroup_root, hook),
                1,
                "programs on {hook:?} after takeover"
            );
        }

        // Taking over from a daemon that still runs (and holds its links) detaches them too.
        let third = env.install(&gateway);
        for hook in HOOKS {
            let count = attached(&env.cgroup_root, hook);
            assert_eq!(
                count, 1,
                "programs on {hook:?} after takeover from a live daemon"
            );
        }
        drop(second);

        // Uninstall detaches everything and removes the pins: agents connect directly again.
        third.uninstall().expect("uninstall");
        assert!(!env.pin_dir.exists(), "pin directory removed");
        for hook in HOOKS {
            assert_eq!(
                attached(&env.cgroup_root, hook),
                0,
                "programs on {hook:?} after uninstall"
            );
        }
        let mut agent = env.spawn_agent(&format!("tcp {ORIGINAL}"));
        assert_eq!(agent.report().field("peer"), ORIGINAL);
        let (_accepted, _) = accept(&original);
        agent.finish();
    });
}

#[test]
fn redirect_decisions_reach_the_daemon_log() {
    log::set_logger(&CAPTURED).expect("this test is the only one that sets a logger");
    log::set_max_level(log::LevelFilter::Debug);
    in_fresh_netns("logs", |env| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        let gateway = listen("127.0.0.1:0");
        let redirector = env.install(&gateway);

        let mut agent = env.spawn_agent(&format!("tcp {ORIGINAL}"));
        agent.report();
        let wanted = format!("redirect {ORIGINAL} to gateway");
        let seen = runtime.block_on(async {
            let poll = async {
                while !CAPTURED.contains(&wanted) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(WAIT, poll).await.is_ok()
        });
        assert!(
            seen,
            "no log line {wanted:?}; captured: {:?}",
            CAPTURED.lines()
        );
        agent.finish();
        redirector.uninstall().expect("uninstall");
    });
}

/// Keeps every `log` record; the eBPF log forwarder writes to the `log` crate.
struct Captured(std::sync::Mutex<Vec<String>>);

static CAPTURED: Captured = Captured(std::sync::Mutex::new(Vec::new()));

impl Captured {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn contains(&self, wanted: &str) -> bool {
        self.lines().iter().any(|line| line.contains(wanted))
    }
}

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }

    fn flush(&self) {}
}

/// Not a test: the agent process the tests above start (in the role named by [`AGENT_ENV`]).
/// In a normal run, without that variable, it does nothing.
///
/// Roles: `tcp ADDR` connects and reports `local=` and `peer=` (getpeername) or `error=`;
/// `udp ADDR` connects a UDP socket, sends one datagram and reports `peer=`. Then it holds the
/// socket open until its stdin closes, so the parent can look the connection up meanwhile.
#[test]
fn agent_process() {
    let Ok(role) = std::env::var(AGENT_ENV) else {
        return;
    };
    let (kind, target) = role.split_once(' ').expect("role is `KIND ADDR`");
    let target: SocketAddr = target.parse().expect("role address");
    let (report, held): (String, Option<Box<dyn std::any::Any>>) = match kind {
        "tcp" => match TcpStream::connect_timeout(&target, WAIT) {
            Ok(stream) => {
                let line = format!(
                    "local={} peer={}",
                    stream.local_addr().unwrap(),
                    stream.peer_addr().unwrap()
                );
                (line, Some(Box::new(stream)))
            }
            Err(error) => (format!("error={}", errno_name(&error)), None),
        },
        "udp" => {
            let any: SocketAddr = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()
            .unwrap();
            let socket = UdpSocket::bind(any).expect("bind udp");
            socket.connect(target).expect("connect udp");
            socket.send(b"agent").expect("send udp");
            (
                format!("peer={}", socket.peer_addr().unwrap()),
                Some(Box::new(socket)),
            )
        }
        other => panic!("unknown agent role {other}"),
    };
    println!("{REPORT}{report}");
    io::stdout().flush().unwrap();
    let _ = io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}

/// The cgroup hooks the redirect attaches to (uapi `enum bpf_attach_type`).
const HOOKS: [Hook; 5] = [
    Hook::Connect4,
    Hook::Connect6,
    Hook::SockOps,
    Hook::GetPeerName4,
    Hook::GetPeerName6,
];

#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Hook {
    SockOps = 3,
    Connect4 = 10,
    Connect6 = 11,
    GetPeerName4 = 29,
    GetPeerName6 = 30,
}

/// One test's cgroups and pins; removed on drop, also when the test fails.
struct TestEnv {
    cgroup_root: PathBuf,
    session: PathBuf,
    pin_dir: PathBuf,
}

impl TestEnv {
    fn new(name: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the redirect test needs root (cgroups, bpffs, BPF programs); run it as root"
        );
        let cgroup2 = cgroupfs::cgroup2_mount().expect("the redirect test needs cgroup v2");
        let bpffs = cgroupfs::ensure_bpffs().expect("the redirect test needs bpffs");
        let unique = format!("interceptor-test-{}-{name}", std::process::id());
        let cgroup_root = cgroup2.join(&unique);
        let session = cgroup_root.join("session");
        fs::create_dir_all(&session).expect("create the test cgroups");
        Self {
            cgroup_root,
            session,
            pin_dir: bpffs.join(unique),
        }
    }

    fn install(&self, gateway: &TcpListener) -> Redirector {
        let settings = RedirectSettings {
            cgroup_root: self.cgroup_root.clone(),
            gateway_port: gateway.local_addr().unwrap().port(),
            redirect_ports: vec![443, 80],
            pin_dir: self.pin_dir.clone(),
        };
        Redirector::install(&settings)
            .unwrap_or_else(|error| panic!("install the redirect (BPF support needed): {error}"))
    }

    fn session_id(&self) -> u64 {
        cgroupfs::cgroup_id(&self.session).expect("session cgroup id")
    }

    /// Starts an agent in the session cgroup, in this thread's network namespace.
    fn spawn_agent(&self, role: &str) -> Agent {
        let procs = File::options()
            .write(true)
            .open(self.session.join("cgroup.procs"))
            .expect("open session cgroup.procs");
        let procs_fd = procs.as_raw_fd();
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "agent_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(AGENT_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: between fork and exec the closure only calls write(2) on an fd opened above
        // (still open: `procs` outlives spawn), which is async-signal-safe. Writing "0" moves
        // the writing process, so the agent is in the cgroup before it runs any of its code.
        unsafe {
            command.pre_exec(move || {
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let mut child = command.spawn().expect("spawn agent");
        drop(procs);
        let stdin = child.stdin.take();
        Agent {
            reports: read_reports(child.stdout.take().unwrap()),
            child,
            stdin,
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Err(error) = uninstall_pins(&self.pin_dir) {
            eprintln!("cleanup: {error}");
        }
        for dir in [&self.session, &self.cgroup_root] {
            if let Err(error) = fs::remove_dir(dir) {
                eprintln!("cleanup: remove cgroup {}: {error}", dir.display());
            }
        }
    }
}

struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    reports: mpsc::Receiver<String>,
}

/// `key=value` pairs an agent reported.
struct Report(String);

impl Report {
    fn field(&self, key: &str) -> &str {
        let prefix = format!("{key}=");
        self.0
            .split(' ')
            .find_map(|pair| pair.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("agent report {:?} has no {key}", self.0))
    }
}

impl Agent {
    fn report(&mut self) -> Report {
        Report(
            self.reports
                .recv_timeout(WAIT)
                .expect("agent reports within 10s"),
        )
    }

    /// Lets the agent close its socket and exit; waits for it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for agent");
        assert!(status.success(), "agent exited with {status}");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Only reached with the agent still running when a test failed: stop our own child.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_reports(stdout: impl io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test agent_process ... " on the same line first.
            if let Some((_, report)) = line.split_once(REPORT) {
                let _ = sender.send(report.to_string());
            }
        }
    });
    receiver
}

/// Runs `scenario` on a thread in a new network namespace with `lo` up. Agents spawned from
/// that thread inherit the namespace.
fn in_fresh_netns(name: &str, scenario: impl FnOnce(&TestEnv) + Send) {
    let env = TestEnv::new(name);
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare a network namespace (needs root)");
            let status = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            assert!(
                status.is_ok_and(|s| s.success()),
                "`ip link set lo up` in the namespace"
            );
            scenario(&env);
        });
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
    });
}

fn listen(addr: &str) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|error| panic!("listen on {addr}: {error}"))
}

/// Accepts one connection, waiting at most [`WAIT`].
fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok(accepted) => return accepted,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no connection within 10s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("accept: {error}"),
        }
    }
}

fn assert_nothing_pending(listener: &TcpListener, what: &str) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("{what} (connection from {peer})"),
        Err(error) => panic!("accept: {error}"),
    }
}

fn errno_name(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED".into(),
        _ => error.to_string().replace(' ', "_"),
    }
}

/// How many programs are attached to `cgroup` at `hook`, from the kernel (BPF_PROG_QUERY).
fn attached(cgroup: &Path, hook: Hook) -> u32 {
    /// The BPF_PROG_QUERY part of uapi `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
        link_ids: u64,
        link_attach_flags: u64,
        revision: u64,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;

    let dir = File::open(cgroup).expect("open cgroup for query");
    let mut attr = QueryAttr {
        target_fd: dir.as_raw_fd() as u32,
        attach_type: hook as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid, zero-padded bpf_attr prefix of the size passed; with
    // prog_ids = 0 the kernel only writes back the counts into it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            size_of::<QueryAttr>(),
        )
    };
    assert_eq!(
        ret,
        0,
        "BPF_PROG_QUERY {hook:?}: {}",
        io::Error::last_os_error()
    );
    attr.prog_cnt
}
