//! The interceptor: identity, policy and an audit trail between AI coding agents and AWS.
//!
//! Module map, following the data path:
//! - [`redirect`]: the eBPF cgroup programs that send agent connections to the gateway, and the
//!   lookup of each connection's original destination.
//! - [`gateway`]: the TLS-terminating listener, the local CA, request handling and forwarding.
//! - [`aws`]: what a request is (service, region, action), SigV4 re-signing, AWS error bodies.
//! - [`identity`]: OIDC token validation and the STS credentials bound to each identity.
//! - [`session`]: the registry of live agent sessions, keyed by cgroup id.
//! - [`control`]: the Unix control socket between the CLI and the daemon.
//! - [`records`]: the audit log and the per-session recordings.
//! - [`config`]: the daemon's TOML configuration.

pub mod approvals;
pub mod records;
pub mod aws;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod gateway;
pub mod identity;
pub mod memory;
pub mod policy;
pub mod redirect;
pub mod run;
pub mod session;
pub mod watch;
pub mod tls;
