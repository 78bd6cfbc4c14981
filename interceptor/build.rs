//! Builds the eBPF programs (interceptor-ebpf) for the BPF target and leaves the object at
//! `$OUT_DIR/interceptor`, where `redirect` embeds it.

use aya_build::{Package, Toolchain};

fn main() -> aya_build::Result<()> {
    // The eBPF crate needs `-Z build-std=core` (there is no prebuilt core for bpfel-unknown-none).
    // We build it with the pinned stable toolchain rather than a nightly, so unstable flags are
    // unlocked with RUSTC_BOOTSTRAP=1. aya-build passes this process's environment to the child
    // `cargo build` of the eBPF crate; nothing else this script does reads it, and the daemon
    // itself is compiled by the parent cargo, which never sees it.
    //
    // SAFETY: a build script is single-threaded here; no other thread reads the environment.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };

    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../interceptor-ebpf");
    let package = Package {
        name: "interceptor-ebpf",
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom("1.95.0"))
}
