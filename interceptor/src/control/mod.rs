//! The control socket between the CLI and the daemon: one JSON request and one JSON reply per
//! line, over a Unix socket whose peer credentials (SO_PEERCRED) the daemon checks.
//!
//! Opening a session is open to any local user (the OIDC token is the credential); everything
//! else answers only root and members of `control.admin_group`.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

use crate::{approvals::HeldCall, session::SessionSummary};

/// Longest request line the daemon reads; a token is a few KiB at most.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Validate the token, create a session cgroup and move the caller into it.
    OpenSession {
        token: String,
        /// Absolute path of the token file, re-read when the token nears expiry.
        token_file: Option<String>,
        role_arn: Option<String>,
        name: Option<String>,
    },
    /// Live sessions.
    ListSessions,
    /// Kill a session's processes and refuse its calls from now on.
    KillSession { id: String },
    /// The gateway CA certificate.
    CaCertificate,
    /// A live stream of audit records (all sessions, or one), one JSON line each, until the
    /// client disconnects.
    Watch { session: Option<String> },
    /// Calls held for a human's approval.
    ListApprovals,
    /// Release a held call.
    Approve { id: String },
    /// Refuse a held call; the agent sees the reason.
    Deny { id: String, reason: Option<String> },
}

/// What the daemon answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    SessionOpened(OpenedSession),
    Sessions { sessions: Vec<SessionSummary> },
    SessionKilled { id: String },
    CaCertificate { pem: String },
    Approvals { calls: Vec<HeldCall> },
    /// First line of a watch stream: the watcher is subscribed; records follow.
    Watching { session: Option<String> },
    /// The held call was answered.
    Answered { id: String },
    /// The request was refused; `message` says why, for the user to read.
    Error { message: String },
}

/// What `interceptor run` needs to start the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenedSession {
    pub id: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub role_arn: String,
    pub cgroup: String,
    /// The gateway CA alone (for NODE_EXTRA_CA_CERTS, which adds to Node's own roots).
    pub ca_file: String,
    /// System roots plus the gateway CA (for runtimes that replace their store with a bundle).
    pub ca_bundle: String,
}
