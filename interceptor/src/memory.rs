//! How the daemon's memory goes back to the system. The allocator is mimalloc (main.rs); left
//! at its defaults it kept what bursts had freed: an idle daemon held ~28 MiB of arena pages
//! (the kernel BTF parsed at start, freed long since) plus transparent huge pages, and a
//! thousand connections left their buffers resident after they closed (BENCHMARKS.md).

use std::time::Duration;

/// mimalloc's `purge_delay` option (mimalloc.h, v3: option 15, default 1000 ms).
const MIMALLOC_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Freed pages go back to the system this long after they were freed. 0 (at once) halved the
/// gateway's throughput in the benchmark: a madvise for nearly every free.
const PURGE_DELAY_MS: std::ffi::c_long = 10;
/// How often the daemon asks the allocator to return what is due. Purging is otherwise only
/// done while the allocator is busy, so memory freed by a burst stayed once the burst ended.
const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Called once, early in the daemon (before its runtime starts).
pub fn tune_for_daemon() {
    no_transparent_huge_pages();
    // SAFETY: sets an option of the allocator this binary links; mimalloc reads it on every
    // purge decision, so setting it at run time is supported.
    unsafe { libmimalloc_sys::mi_option_set(MIMALLOC_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// mimalloc asks for transparent huge pages on its arenas (madvise), so touching a few bytes of
/// a region made the kernel commit 2 MiB. With THP off for the daemon, RSS is what it uses.
/// Only the daemon: the flag is inherited by every program a client command would start.
fn no_transparent_huge_pages() {
    // SAFETY: prctl with integer arguments; it only changes this process's paging policy.
    let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE refused");
    }
}

/// Returns everything freed so far by the calling thread. The daemon's start-up (the kernel BTF
/// parsed to load the eBPF programs: ~25 MiB, freed at once) runs on the main thread, whose
/// heap no later allocation revisits; collecting once when start-up is done returns it.
pub fn collect_after_start() {
    // SAFETY: asks the allocator to collect; no pointer is passed.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Runs for the daemon's life: returns freed memory that is due, once a second.
pub async fn return_freed_memory() {
    let mut every = tokio::time::interval(COLLECT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: asks the allocator to collect; no pointer is passed.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}

#[cfg(test)]
mod tests {
    /// The option is set by its number; v3's default for `purge_delay` (1000 ms, where other
    /// options default to 0, 1, 2 or 10) tells that the number still names it after an upgrade.
    #[test]
    fn the_purge_delay_option_number_names_purge_delay() {
        // SAFETY: reads an allocator option.
        let default = unsafe { libmimalloc_sys::mi_option_get(super::MIMALLOC_PURGE_DELAY) };
        assert_eq!(default, 1000);
    }
}
