//! The kernel half of the data path: eBPF cgroup programs send agents' TCP connections to the
//! gateway, and the gateway asks here where each accepted connection was going.
//!
//! The programs (crate `interceptor-ebpf`, embedded at build time) are attached to the agents'
//! cgroup root with bpf_links (which the kernel always attaches as multi-program). Links and
//! maps are pinned under [`RedirectSettings::pin_dir`]:
//!
//! ```text
//! <pin_dir>/links/{connect4,connect6,established,getpeername4,getpeername6}
//! <pin_dir>/maps/{CONFIG,REDIRECT_PORTS,ORIG_BY_COOKIE,ORIG_BY_PORT}
//! ```
//!
//! Fail closed: the pinned links outlive the daemon, so when it stops, agents' connections are
//! still redirected to the gateway port, where nothing listens, and are refused. A new daemon
//! takes the pins over (see [`Redirector::install`]); only [`Redirector::uninstall`] or
//! [`uninstall_pins`] detach the programs.

pub mod cgroupfs;
mod logs;
mod pins;
mod sys;

use std::{
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError},
    programs::{
        CgroupAttachMode, Program, ProgramError,
        links::{FdLink, LinkError},
    },
};
use interceptor_common::{
    BY_PORT_MAP, CONFIG_MAP, FAMILY_INET, OriginalDst, PORTS_MAP, RedirectConfig, by_port_key,
};

pub use pins::uninstall_pins;

/// Where links and maps are pinned unless the settings say otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/interceptor";

/// The address the redirected IPv4 (and v4-mapped IPv6) connections go to.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// The address the redirected IPv6 connections go to.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::LOCALHOST;

/// The eBPF object built from `interceptor-ebpf` by build.rs.
#[cfg(not(fuzzing))]
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/interceptor"));
/// Fuzz builds (`cargo fuzz` passes `--cfg fuzzing`, scripts/fuzz sets `AYA_BUILD_SKIP=1`) do not
/// build the eBPF object: they exercise the byte parsers only and never load the redirect, which
/// would fail here on an empty object.
#[cfg(fuzzing)]
static EBPF_OBJECT: &[u8] = &[];

/// The programs in the object, in the order they are attached.
const PROGRAMS: [&str; 5] = [
    "connect4",
    "connect6",
    "established",
    "getpeername4",
    "getpeername6",
];

/// What to redirect and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectSettings {
    /// The cgroup v2 directory whose descendants are agents; created if missing.
    pub cgroup_root: PathBuf,
    /// The gateway's port on [`GATEWAY_V4`] and [`GATEWAY_V6`].
    pub gateway_port: u16,
    /// TCP destination ports that are sent to the gateway.
    pub redirect_ports: Vec<u16>,
    /// The bpffs directory for the pins; [`DEFAULT_PIN_DIR`] unless a test isolates itself.
    pub pin_dir: PathBuf,
}

impl RedirectSettings {
    /// Settings with the pins in [`DEFAULT_PIN_DIR`].
    pub fn new(cgroup_root: PathBuf, gateway_port: u16, redirect_ports: Vec<u16>) -> Self {
        Self {
            cgroup_root,
            gateway_port,
            redirect_ports,
            pin_dir: DEFAULT_PIN_DIR.into(),
        }
    }
}

/// What the kernel recorded about an agent connection the gateway accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConnection {
    /// Where the agent was connecting to. An IPv6 socket that asked for a v4-mapped address
    /// (`::ffff:a.b.c.d`) is reported as that mapped `SocketAddr::V6`, as the agent wrote it;
    /// use `Ipv6Addr::to_ipv4_mapped` to get the IPv4 address.
    pub original_dst: SocketAddr,
    /// The cgroup v2 id of the process that connected (see [`cgroupfs::cgroup_id`]).
    pub cgroup_id: u64,
    /// The process (tgid, in the initial pid namespace) that called connect().
    pub pid: u32,
}

/// Why installing, querying or removing the redirect failed.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    /// cgroup2 or bpffs could not be found or mounted.
    #[error(transparent)]
    Mount(#[from] cgroupfs::MountError),
    /// A directory (cgroup root or pin directory) could not be created.
    #[error("create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    /// The cgroup root could not be opened for attaching.
    #[error("open cgroup {}: {source}", path.display())]
    OpenCgroup { path: PathBuf, source: io::Error },
    /// The kernel refused the eBPF object (maps, relocations, BTF).
    #[error("load the eBPF object (map pins in {}): {}", pin_dir.display(), chain(source))]
    LoadObject {
        pin_dir: PathBuf,
        source: Box<aya::EbpfError>,
    },
    /// The embedded object lacks a program this module expects.
    #[error("eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The embedded object lacks a map this module expects.
    #[error("eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// The verifier rejected a program.
    #[error("load program {program}: {}", chain(source))]
    LoadProgram {
        program: &'static str,
        source: ProgramError,
    },
    /// A program could not be attached to the cgroup root.
    #[error("attach program {program} to cgroup {}: {}", cgroup.display(), chain(source))]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        source: ProgramError,
    },
    /// An attachment did not come back as a bpf_link (kernel older than 5.7).
    #[error("attach program {program}: not a bpf_link: {}", chain(source))]
    NotALink {
        program: &'static str,
        source: LinkError,
    },
    /// A link could not be pinned.
    #[error("pin link {}: {source}", path.display())]
    Pin { path: PathBuf, source: io::Error },
    /// A pinned link could not be detached.
    #[error("detach link {}: {source}", path.display())]
    Detach { path: PathBuf, source: io::Error },
    /// A pin could not be removed.
    #[error("remove pin {}: {source}", path.display())]
    Unpin { path: PathBuf, source: io::Error },
    /// A map could not be read or written.
    #[error("access map {map}: {}", chain(source))]
    Map { map: &'static str, source: MapError },
}

/// The attached, pinned redirect. Dropping it leaves the programs attached (fail closed).
pub struct Redirector {
    by_port: HashMap<MapData, u32, OriginalDst>,
    links: Vec<pins::OwnedPin>,
    pin_dir: PathBuf,
    log_task: Option<tokio::task::AbortHandle>,
}

impl Redirector {
    /// Mounts bpffs if needed, loads the programs, attaches them to `cgroup_root` (creating the
    /// directory), pins maps and links under `pin_dir` and writes the config.
    ///
    /// Takeover: when an earlier daemon left pins, its maps are reused (records of connections
    /// made before the restart stay findable), the new links are attached next to the old ones
    /// (cgroup links are multi-program), then each new link is renamed over the old pin and the
    /// old link is detached (BPF_LINK_DETACH): there is no moment where neither runs, and no
    /// old program stays behind even if the earlier daemon still runs.
    ///
    /// Called inside a tokio runtime, it also forwards the programs' aya-log records to the
    /// `log` crate (at the level `log::max_level()` allows); outside one they stay off.
    pub fn install(settings: &RedirectSettings) -> Result<Self, RedirectError> {
        cgroupfs::ensure_bpffs()?;
        let maps_dir = pins::prepare_dirs(&settings.pin_dir)?;
        pins::drop_incompatible_map_pins(&maps_dir);
        let forward_logs = tokio::runtime::Handle::try_current().is_ok();

        let mut ebpf = load_object(&maps_dir, forward_logs)?;
        write_config(&mut ebpf, settings)?;
        let cgroup = open_cgroup(&settings.cgroup_root)?;
        let links = attach_all(&mut ebpf, &cgroup, &settings.cgroup_root)?;
        let (links, took_over) = pins::pin_links(links, &settings.pin_dir)?;

        let log_task = forward_logs
            .then(|| logs::spawn_forwarder(&mut ebpf))
            .flatten();
        let by_port = take_hash_map(&mut ebpf, BY_PORT_MAP)?;
        tracing::info!(
            cgroup = %settings.cgroup_root.display(),
            pins = %settings.pin_dir.display(),
            gateway_port = settings.gateway_port,
            ports = ?settings.redirect_ports,
            took_over,
            "redirect attached"
        );
        Ok(Self {
            by_port,
            links,
            pin_dir: settings.pin_dir.clone(),
            log_task,
        })
    }

    /// The original destination of an accepted gateway connection, by its peer address.
    ///
    /// `None` when no agent connection from that peer is recorded, including any peer that is
    /// not the gateway address itself: a redirected agent socket always connects from it.
    pub fn lookup(&self, peer: SocketAddr) -> Result<Option<AgentConnection>, RedirectError> {
        let Some(ipv6_wire) = wire_family_of_gateway_peer(peer.ip()) else {
            return Ok(None);
        };
        match self.by_port.get(&by_port_key(peer.port(), ipv6_wire), 0) {
            Ok(original) => Ok(Some(agent_connection(&original))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(RedirectError::Map {
                map: BY_PORT_MAP,
                source,
            }),
        }
    }

    /// Detaches the programs and removes every pin. Only for an explicit uninstall or stop:
    /// afterwards agents connect directly again.
    pub fn uninstall(mut self) -> Result<(), RedirectError> {
        // Our own link fds would keep the programs attached after the pins are gone.
        self.links.clear();
        uninstall_pins(&self.pin_dir)
    }
}

// The gateway shares one Redirector between its connection tasks.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Redirector>();
};

impl Drop for Redirector {
    fn drop(&mut self) {
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
    }
}

/// An error and its sources on one line: aya's messages name the syscall, the source the errno.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Loads the embedded object, reusing maps pinned in `maps_dir`.
fn load_object(maps_dir: &Path, forward_logs: bool) -> Result<Ebpf, RedirectError> {
    // Log statements below this level are skipped in the kernel, so debug lines cost nothing
    // unless the daemon logs at debug; with no forwarder they are all off.
    let log_level = if forward_logs {
        log::max_level() as u8
    } else {
        0
    };
    EbpfLoader::new()
        .default_map_pin_directory(maps_dir)
        .override_global("AYA_LOG_LEVEL", &log_level, true)
        .load(EBPF_OBJECT)
        .map_err(|source| RedirectError::LoadObject {
            pin_dir: maps_dir.to_path_buf(),
            source: Box::new(source),
        })
}

/// Writes the gateway address and the redirected ports, dropping ports no longer wanted.
fn write_config(ebpf: &mut Ebpf, settings: &RedirectSettings) -> Result<(), RedirectError> {
    let map_err = |map| move |source| RedirectError::Map { map, source };

    let mut ports: HashMap<_, u16, u8> = map_mut(ebpf, PORTS_MAP)?;
    let stale: Vec<u16> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|port| !settings.redirect_ports.contains(port))
        .collect();
    for port in &settings.redirect_ports {
        ports.insert(port, 1, 0).map_err(map_err(PORTS_MAP))?;
    }
    for port in &stale {
        ports.remove(port).map_err(map_err(PORTS_MAP))?;
    }

    let mut config: Array<_, RedirectConfig> = map_mut(ebpf, CONFIG_MAP)?;
    let value = RedirectConfig {
        gateway_ip4: u32::from_ne_bytes(GATEWAY_V4.octets()),
        gateway_ip6: ip6_words(GATEWAY_V6),
        gateway_port: settings.gateway_port,
        enabled: 1,
    };
    config.set(0, value, 0).map_err(map_err(CONFIG_MAP))
}

fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, RedirectError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let map = ebpf.map_mut(name).ok_or(RedirectError::MissingMap(name))?;
    T::try_from(map).map_err(|source| RedirectError::Map { map: name, source })
}

fn take_hash_map(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, u32, OriginalDst>, RedirectError> {
    let map = ebpf.take_map(name).ok_or(RedirectError::MissingMap(name))?;
    HashMap::try_from(map).map_err(|source| RedirectError::Map { map: name, source })
}

fn open_cgroup(path: &Path) -> Result<File, RedirectError> {
    std::fs::create_dir_all(path).map_err(|source| RedirectError::CreateDir {
        path: path.to_path_buf(),
        source,
    })?;
    File::open(path).map_err(|source| RedirectError::OpenCgroup {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads every program and attaches it to the cgroup; the links are returned, not yet pinned.
fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &File,
    cgroup_path: &Path,
) -> Result<Vec<(&'static str, FdLink)>, RedirectError> {
    PROGRAMS
        .into_iter()
        .map(|name| {
            let program = ebpf
                .program_mut(name)
                .ok_or(RedirectError::MissingProgram(name))?;
            attach_one(program, name, cgroup, cgroup_path).map(|link| (name, link))
        })
        .collect()
}

fn attach_one(
    program: &mut Program,
    name: &'static str,
    cgroup: &File,
    cgroup_path: &Path,
) -> Result<FdLink, RedirectError> {
    let load_err = |source| RedirectError::LoadProgram {
        program: name,
        source,
    };
    let attach_err = |source| RedirectError::Attach {
        program: name,
        cgroup: cgroup_path.into(),
        source,
    };
    let link_err = |source| RedirectError::NotALink {
        program: name,
        source,
    };
    // A cgroup bpf_link is always attached as BPF_F_ALLOW_MULTI (so it runs next to an earlier
    // daemon's link during takeover), and LINK_CREATE refuses any explicit flag with EINVAL:
    // `Single` is the mode aya turns into flags = 0. Older kernels without cgroup links would
    // get an exclusive prog_attach instead; attach_one refuses those below (NotALink).
    let mode = CgroupAttachMode::Single;
    match program {
        Program::CgroupSockAddr(program) => {
            program.load().map_err(load_err)?;
            let id = program.attach(cgroup, mode).map_err(attach_err)?;
            let link = program.take_link(id).map_err(attach_err)?;
            FdLink::try_from(link).map_err(link_err)
        }
        Program::SockOps(program) => {
            program.load().map_err(load_err)?;
            let id = program.attach(cgroup, mode).map_err(attach_err)?;
            let link = program.take_link(id).map_err(attach_err)?;
            FdLink::try_from(link).map_err(link_err)
        }
        _ => Err(RedirectError::MissingProgram(name)),
    }
}

/// `Some(ipv6_wire)` when `peer` is a gateway address an agent socket connects from.
fn wire_family_of_gateway_peer(peer: IpAddr) -> Option<bool> {
    match peer {
        IpAddr::V4(ip) => (ip == GATEWAY_V4).then_some(false),
        IpAddr::V6(ip) if ip == GATEWAY_V6 => Some(true),
        IpAddr::V6(ip) => (ip.to_ipv4_mapped() == Some(GATEWAY_V4)).then_some(false),
    }
}

fn agent_connection(original: &OriginalDst) -> AgentConnection {
    let original_dst = if original.family == FAMILY_INET {
        let ip = Ipv4Addr::from(original.addr[0].to_ne_bytes());
        SocketAddr::V4(SocketAddrV4::new(ip, original.port))
    } else {
        SocketAddr::V6(SocketAddrV6::new(
            ip6_from_words(original.addr),
            original.port,
            0,
            0,
        ))
    };
    AgentConnection {
        original_dst,
        cgroup_id: original.cgroup_id,
        pid: original.pid,
    }
}

/// An IPv6 address as the kernel's four network-order words.
fn ip6_words(ip: Ipv6Addr) -> [u32; 4] {
    let o = ip.octets();
    std::array::from_fn(|i| {
        u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
    })
}

fn ip6_from_words(words: [u32; 4]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(family: u32, addr: [u32; 4], port: u16) -> OriginalDst {
        OriginalDst {
            cgroup_id: 7,
            family,
            addr,
            port,
            _pad: 0,
            pid: 42,
            _pad2: 0,
            cookie: 1,
        }
    }

    #[test]
    fn ipv4_record_reads_back_as_the_address_the_agent_asked_for() {
        let addr = [u32::from_ne_bytes([127, 0, 0, 9]), 0, 0, 0];
        let conn = agent_connection(&recorded(FAMILY_INET, addr, 443));
        assert_eq!(conn.original_dst, "127.0.0.9:443".parse().unwrap());
        assert_eq!((conn.cgroup_id, conn.pid), (7, 42));
    }

    #[test]
    fn v4_mapped_record_reads_back_as_the_mapped_v6_address() {
        let ip: Ipv6Addr = "::ffff:127.0.0.9".parse().unwrap();
        let conn = agent_connection(&recorded(
            interceptor_common::FAMILY_INET6,
            ip6_words(ip),
            443,
        ));
        assert_eq!(conn.original_dst, "[::ffff:127.0.0.9]:443".parse().unwrap());
    }

    #[test]
    fn only_gateway_addresses_are_agent_peers() {
        assert_eq!(
            wire_family_of_gateway_peer("127.0.0.1".parse().unwrap()),
            Some(false)
        );
        assert_eq!(
            wire_family_of_gateway_peer("::ffff:127.0.0.1".parse().unwrap()),
            Some(false)
        );
        assert_eq!(
            wire_family_of_gateway_peer("::1".parse().unwrap()),
            Some(true)
        );
        assert_eq!(
            wire_family_of_gateway_peer("127.0.0.2".parse().unwrap()),
            None
        );
    }
}
