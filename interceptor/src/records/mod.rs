//! What the daemon writes down: the audit log (one line per request and session event) and the
//! per-session recordings that `interceptor replay` reads.

pub mod audit;
pub mod recording;
pub mod replay;
