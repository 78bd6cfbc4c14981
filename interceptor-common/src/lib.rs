//! Map layouts shared by the eBPF programs (`interceptor-ebpf`) and the daemon.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so both compilers agree on its layout
//! byte for byte. Addresses are kept in network byte order exactly as the kernel hands them to
//! the programs; ports are kept in host byte order.
#![no_std]

/// Name of the map that holds the redirect settings (one [`RedirectConfig`] at index 0).
pub const CONFIG_MAP: &str = "CONFIG";
/// Name of the map of TCP destination ports that are redirected (port -> 1).
pub const PORTS_MAP: &str = "REDIRECT_PORTS";
/// Name of the map from socket cookie to the connection's [`OriginalDst`].
pub const BY_COOKIE_MAP: &str = "ORIG_BY_COOKIE";
/// Name of the map from the agent socket's local port ([`by_port_key`]) to its [`OriginalDst`].
pub const BY_PORT_MAP: &str = "ORIG_BY_PORT";

/// Most entries the connection maps hold; least recently used entries are evicted first.
pub const MAX_TRACKED_CONNECTIONS: u32 = 65_536;
/// Most redirected destination ports.
pub const MAX_REDIRECT_PORTS: u32 = 64;

/// `AF_INET`, as the kernel reports it in `bpf_sock_addr.user_family`.
pub const FAMILY_INET: u32 = 2;
/// `AF_INET6`.
pub const FAMILY_INET6: u32 = 10;

/// Where redirected connections go: the gateway's loopback listeners.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectConfig {
    /// Gateway IPv4 address, network byte order (127.0.0.1).
    pub gateway_ip4: u32,
    /// Gateway IPv6 address, network byte order words (::1).
    pub gateway_ip6: [u32; 4],
    /// Gateway port, host byte order.
    pub gateway_port: u16,
    /// Non-zero once the daemon has written the config; until then nothing is redirected.
    pub enabled: u16,
}

/// The destination an agent asked for, before the redirect rewrote it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst {
    /// The cgroup v2 id of the process that called connect().
    pub cgroup_id: u64,
    /// [`FAMILY_INET`] or [`FAMILY_INET6`]: the family of the agent's socket.
    pub family: u32,
    /// The original address, network byte order. IPv4 uses word 0 only; an IPv6 socket that
    /// asked for a v4-mapped address keeps the full mapped form here.
    pub addr: [u32; 4],
    /// The original port, host byte order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
    /// The tgid of the process that called connect().
    pub pid: u32,
    /// Explicit padding; always zero.
    pub _pad2: u32,
    /// The socket cookie of the agent's socket; lets the close hook remove only its own
    /// entry from [`BY_PORT_MAP`].
    pub cookie: u64,
}

/// Key of [`BY_PORT_MAP`]: the agent socket's local port (host order) in the low 16 bits, and
/// bit 16 set when the connection runs over IPv6 on the wire.
///
/// An IPv4 and an IPv6 connection to the gateway may share a local port; a v4-mapped IPv6
/// socket runs over IPv4 and shares the IPv4 port space, so it is keyed as IPv4.
pub const fn by_port_key(local_port: u16, ipv6_wire: bool) -> u32 {
    local_port as u32 | ((ipv6_wire as u32) << 16)
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `repr(C)`, `Copy`, contain only integers and have no implicit
    // padding, so every byte pattern the kernel hands back is a valid value.
    unsafe impl aya::Pod for super::RedirectConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OriginalDst {}
}

// The layouts are part of the contract with the eBPF object: a change in size would silently
// break map reads, so it must be a deliberate edit here.
const _: () = assert!(core::mem::size_of::<RedirectConfig>() == 24);
const _: () = assert!(core::mem::size_of::<OriginalDst>() == 48);
