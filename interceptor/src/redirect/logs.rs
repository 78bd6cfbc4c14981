//! Forwards the programs' aya-log records into the daemon's log.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::{Interest, unix::AsyncFd};

/// Starts a task on the current tokio runtime that drains the programs' log ring buffer into
/// the `log` crate (bridged to `tracing` by the daemon). `None` if the buffer is missing.
///
/// Must be called inside a tokio runtime.
pub(super) fn spawn_forwarder(ebpf: &mut Ebpf) -> Option<tokio::task::AbortHandle> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(error) => {
            tracing::warn!(%error, "eBPF log records will not be forwarded");
            return None;
        }
    };
    let task = tokio::spawn(forward(logger));
    Some(task.abort_handle())
}

async fn forward<T: log::Log>(logger: EbpfLogger<T>) {
    // SAFETY: the fd is the ring buffer's, owned by `logger`, which the AsyncFd owns until it is
    // dropped; EbpfLogger::as_raw_fd always returns that same fd and flush() never replaces it.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut logger = match registered {
        Ok(logger) => logger,
        Err(error) => {
            tracing::warn!(%error, "eBPF log records will not be forwarded");
            return;
        }
    };
    loop {
        let mut ready = match logger.readable_mut().await {
            Ok(ready) => ready,
            Err(error) => {
                tracing::warn!(%error, "eBPF log forwarding stopped");
                return;
            }
        };
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
