//! The eBPF programs of the interceptor, attached to the agents' cgroup root.
//!
//! - `connect4` / `connect6` send an agent's TCP connection to a redirected port to the gateway
//!   on loopback and remember where it was going, keyed by socket cookie.
//! - `established` (sockops) re-keys that record by the agent socket's local port once the
//!   connection is established, so the gateway can find it from the accepted connection's peer
//!   port, and drops both entries when the agent socket closes.
//! - `getpeername4` / `getpeername6` show the agent the address it asked for.
//!
//! Every program allows the operation (returns 1): a connection we cannot record is still
//! redirected, so the gateway refuses it rather than the agent reaching the network directly.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG,
        BPF_TCP_CLOSE, bpf_sock_addr,
    },
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{Array, HashMap, LruHashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use aya_log_ebpf::debug;
use interceptor_common::{
    FAMILY_INET, FAMILY_INET6, MAX_REDIRECT_PORTS, MAX_TRACKED_CONNECTIONS, OriginalDst,
    RedirectConfig, by_port_key,
};

/// The verdict that lets the socket operation go on.
const ALLOW: i32 = 1;
/// `SOCK_STREAM`: only TCP is redirected.
const SOCK_STREAM: u32 = 1;

// The map names below are the constants of interceptor-common (CONFIG_MAP, PORTS_MAP, ...): the
// `#[map]` attribute names a map after its static. All are pinned by name, so a restarted daemon
// reuses them and connections recorded before the restart stay findable.

/// The redirect settings, one entry at index 0, written by the daemon.
#[map]
static CONFIG: Array<RedirectConfig> = Array::pinned(1, 0);

/// Redirected TCP destination ports (host order) -> 1.
#[map]
static REDIRECT_PORTS: HashMap<u16, u8> = HashMap::pinned(MAX_REDIRECT_PORTS, 0);

/// Socket cookie -> where the agent was going.
#[map]
static ORIG_BY_COOKIE: LruHashMap<u64, OriginalDst> =
    LruHashMap::pinned(MAX_TRACKED_CONNECTIONS, 0);

/// `by_port_key(local port, wire family)` of the agent socket -> where it was going.
#[map]
static ORIG_BY_PORT: LruHashMap<u32, OriginalDst> = LruHashMap::pinned(MAX_TRACKED_CONNECTIONS, 0);

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the whole call.
    let (sock_type, ip, port) = unsafe { ((*sa).type_, (*sa).user_ip4, (*sa).user_port) };
    let port = port_from_ctx(port);
    let Some(config) = redirect_config(sock_type, port) else {
        return ALLOW;
    };

    record(&ctx, FAMILY_INET, [ip, 0, 0, 0], port);
    // SAFETY: as above; connect4 may write the destination address and port.
    unsafe {
        (*sa).user_ip4 = config.gateway_ip4;
        (*sa).user_port = port_to_ctx(config.gateway_port);
    }
    debug!(&ctx, "redirect {:i}:{} to gateway", u32::from_be(ip), port);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for the whole call.
    let (sock_type, ip, port) = unsafe { ((*sa).type_, read_ip6(sa), (*sa).user_port) };
    let port = port_from_ctx(port);
    let Some(config) = redirect_config(sock_type, port) else {
        return ALLOW;
    };

    record(&ctx, FAMILY_INET6, ip, port);
    // A v4-mapped destination goes to the IPv4 gateway in its mapped form: the socket is a
    // dual-stack IPv6 socket and the kernel routes ::ffff:a.b.c.d over IPv4.
    let gateway = if is_v4_mapped(&ip) {
        [0, 0, 0xffff_u32.to_be(), config.gateway_ip4]
    } else {
        config.gateway_ip6
    };
    // SAFETY: as above; connect6 may write the destination address and port.
    unsafe {
        write_ip6(sa, gateway);
        (*sa).user_port = port_to_ctx(config.gateway_port);
    }
    debug!(&ctx, "redirect [{:i}]:{} to gateway", ip6_bytes(&ip), port);
    ALLOW
}

#[sock_ops]
pub fn established(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => rekey_by_local_port(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => forget(&ctx),
        _ => {}
    }
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    let Some(original) = recorded(&ctx) else {
        return ALLOW;
    };
    if original.family != FAMILY_INET {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: valid context; getpeername4 may rewrite the reported peer.
    unsafe {
        (*sa).user_ip4 = original.addr[0];
        (*sa).user_port = port_to_ctx(original.port);
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    let Some(original) = recorded(&ctx) else {
        return ALLOW;
    };
    if original.family != FAMILY_INET6 {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: valid context; getpeername6 may rewrite the reported peer.
    unsafe {
        write_ip6(sa, original.addr);
        (*sa).user_port = port_to_ctx(original.port);
    }
    ALLOW
}

/// The config when a connection of `sock_type` to `port` must be redirected.
#[inline(always)]
fn redirect_config(sock_type: u32, port: u16) -> Option<RedirectConfig> {
    if sock_type != SOCK_STREAM {
        return None;
    }
    let config = *CONFIG.get(0)?;
    if config.enabled == 0 {
        return None;
    }
    // SAFETY: the value is a plain marker byte; a racing update can only change its value.
    unsafe { REDIRECT_PORTS.get(port) }?;
    Some(config)
}

/// Remembers the original destination of the socket in `ctx` by its cookie.
#[inline(always)]
fn record(ctx: &SockAddrContext, family: u32, addr: [u32; 4], port: u16) {
    // SAFETY: the helpers take the program context the kernel passed in.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: no arguments; valid in cgroup sock_addr programs.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let original = OriginalDst {
        cgroup_id,
        family,
        addr,
        port,
        _pad: 0,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad2: 0,
        cookie,
    };
    // An LRU map evicts instead of failing when full; any other failure leaves the connection
    // redirected but unknown to the gateway, which then refuses it.
    let _ = ORIG_BY_COOKIE.insert(cookie, original, 0);
}

/// The record of the socket in `ctx`, if connect4/6 redirected it.
#[inline(always)]
fn recorded(ctx: &SockAddrContext) -> Option<OriginalDst> {
    // SAFETY: the helper takes the program context the kernel passed in.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; the map only holds plain integers.
    unsafe { ORIG_BY_COOKIE.get(cookie) }.copied()
}

/// Copies the record of an established agent socket under its local port, and asks for the
/// state callback so the entries go when the socket closes.
#[inline(always)]
fn rekey_by_local_port(ctx: &SockOpsContext) {
    // SAFETY: the helper takes the program context the kernel passed in.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; the map only holds plain integers.
    let Some(original) = (unsafe { ORIG_BY_COOKIE.get(cookie) }).copied() else {
        return;
    };
    let _ = ORIG_BY_PORT.insert(port_key(ctx), original, 0);
    // Only redirected sockets get state callbacks, so other connections pay nothing.
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// Drops the entries of a closing agent socket, so a later connection that reuses the port is
/// never mistaken for it.
#[inline(always)]
fn forget(ctx: &SockOpsContext) {
    // SAFETY: the helper takes the program context the kernel passed in.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = port_key(ctx);
    // SAFETY: the value is copied out at once; the map only holds plain integers.
    let owner = unsafe { ORIG_BY_PORT.get(key) }.map(|original| original.cookie);
    if owner == Some(cookie) {
        let _ = ORIG_BY_PORT.remove(key);
    }
    let _ = ORIG_BY_COOKIE.remove(cookie);
}

/// The [`by_port_key`] of the socket in `ctx`: a v4-mapped IPv6 socket runs over IPv4.
#[inline(always)]
fn port_key(ctx: &SockOpsContext) -> u32 {
    let ipv6_wire = ctx.family() == FAMILY_INET6 && !is_v4_mapped(&ctx.local_ip6());
    by_port_key(ctx.local_port() as u16, ipv6_wire)
}

/// The port in a `bpf_sock_addr`: network order in the low 16 bits.
#[inline(always)]
fn port_from_ctx(raw: u32) -> u16 {
    u16::from_be(raw as u16)
}

#[inline(always)]
fn port_to_ctx(port: u16) -> u32 {
    u32::from(port.to_be())
}

#[inline(always)]
fn is_v4_mapped(ip: &[u32; 4]) -> bool {
    ip[0] == 0 && ip[1] == 0 && u32::from_be(ip[2]) == 0xffff
}

/// Reads `user_ip6` one 32-bit word at a time, the access size the verifier accepts.
///
/// # Safety
/// `sa` is the context pointer of a sock_addr program.
#[inline(always)]
unsafe fn read_ip6(sa: *mut bpf_sock_addr) -> [u32; 4] {
    // SAFETY: the caller passes the context; each read is an aligned u32 field load.
    unsafe {
        let words = &raw const (*sa).user_ip6;
        [
            core::ptr::read_volatile(&raw const (*words)[0]),
            core::ptr::read_volatile(&raw const (*words)[1]),
            core::ptr::read_volatile(&raw const (*words)[2]),
            core::ptr::read_volatile(&raw const (*words)[3]),
        ]
    }
}

/// Writes `user_ip6` one 32-bit word at a time.
///
/// # Safety
/// `sa` is the context pointer of a sock_addr program whose attach type may write the address.
#[inline(always)]
unsafe fn write_ip6(sa: *mut bpf_sock_addr, ip: [u32; 4]) {
    // SAFETY: the caller passes the context; each write is an aligned u32 field store.
    unsafe {
        let words = &raw mut (*sa).user_ip6;
        core::ptr::write_volatile(&raw mut (*words)[0], ip[0]);
        core::ptr::write_volatile(&raw mut (*words)[1], ip[1]);
        core::ptr::write_volatile(&raw mut (*words)[2], ip[2]);
        core::ptr::write_volatile(&raw mut (*words)[3], ip[3]);
    }
}

/// The address as the 16 bytes aya-log formats as IPv6.
#[inline(always)]
fn ip6_bytes(ip: &[u32; 4]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let word = ip[i].to_ne_bytes();
        bytes[i * 4] = word[0];
        bytes[i * 4 + 1] = word[1];
        bytes[i * 4 + 2] = word[2];
        bytes[i * 4 + 3] = word[3];
        i += 1;
    }
    bytes
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic; this is never called.
    loop {}
}

/// The project's licence. None of the helpers used here is GPL-only, so the kernel accepts a
/// non-GPL licence (checked on 6.18); calling a GPL-only helper later would need a change here.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
