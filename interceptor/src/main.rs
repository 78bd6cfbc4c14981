/// mimalloc rather than glibc's malloc: the gateway allocates and frees small buffers on every
/// request from many threads, where glibc spent a sixth of the daemon's CPU (BENCHMARKS.md)
/// and kept memory freed after bursts of connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    interceptor::cli::main()
}
