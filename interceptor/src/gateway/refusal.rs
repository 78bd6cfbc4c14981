//! Every way the gateway answers a call itself instead of forwarding it, with the AWS error the
//! agent's SDK reads and the reason written to the audit log.

use http::StatusCode;

use crate::{
    aws::{request::RequestError, sigv4::SignError},
    identity::{oidc::IdentityError, sts::StsError},
};

/// Why a call was not forwarded (or its answer not received).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The connection's cgroup has no live session (never opened, ended, or killed).
    #[error("no live interceptor session for this process (cgroup {cgroup_id}); start the agent with `interceptor run`")]
    NoSession { cgroup_id: u64 },
    /// The policy denies the call.
    #[error("{reason}")]
    Denied { reason: String },
    /// A rule's limit would be exceeded.
    #[error("limit of rule {rule:?} reached: {used} of {max} {count} per {per} used, this call needs {wanted} more")]
    LimitExceeded { rule: String, count: String, used: u64, wanted: u64, max: u64, per: String },
    /// A human refused the held call.
    #[error("denied by {by} (held by rule {rule:?}): {reason}")]
    ApprovalDenied { rule: String, by: String, reason: String },
    /// Nobody answered the held call in time.
    #[error("no approval within {after} (held by rule {rule:?}); the call was denied")]
    ApprovalTimedOut { rule: String, after: String },
    /// The session's OIDC token expired and the token file holds no valid newer one.
    #[error("the session's identity token is no longer valid: {0}; renew the token file")]
    TokenExpired(IdentityError),
    /// The request could not be understood well enough to check and sign it.
    #[error("malformed request: {0}")]
    Malformed(RequestError),
    /// A non-S3 body larger than `gateway.max_api_body_bytes`.
    #[error("request body exceeds the gateway's limit of {limit} bytes for API calls")]
    BodyTooLarge { limit: u64 },
    /// The agent's body broke off.
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    /// STS refused or could not be reached for the session's credentials.
    #[error("no AWS credentials for this session: {0}")]
    Credentials(StsError),
    /// The request is in a form the gateway does not re-sign.
    #[error("request cannot be re-signed: {0}")]
    Signing(SignError),
    /// An answer with fields to mask could not be masked, so it is withheld.
    #[error("the answer could not be masked and was withheld: {0}")]
    MaskFailed(String),
    /// AWS (or the configured upstream) could not be reached.
    #[error("upstream {host} unreachable: {cause}")]
    Upstream { host: String, cause: String },
}

impl Refusal {
    /// The HTTP status and AWS error code the agent sees.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoSession { .. }
            | Self::TokenExpired(_)
            | Self::Denied { .. }
            | Self::LimitExceeded { .. }
            | Self::ApprovalDenied { .. }
            | Self::ApprovalTimedOut { .. } => (StatusCode::FORBIDDEN, "AccessDenied"),
            Self::Credentials(StsError::Refused { .. } | StsError::InvalidRequest { .. }) => {
                (StatusCode::FORBIDDEN, "AccessDenied")
            }
            Self::Credentials(_) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
            Self::Malformed(_) | Self::BodyRead(_) => (StatusCode::BAD_REQUEST, "InvalidRequest"),
            Self::Signing(_) => (StatusCode::BAD_REQUEST, "NotImplemented"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
            Self::Upstream { .. } | Self::MaskFailed(_) => {
                (StatusCode::BAD_GATEWAY, "ServiceUnavailable")
            }
        }
    }

    /// The decision written to the audit log: a refusal by rule or identity is a denial, a
    /// failure of ours or of a peer is an error.
    pub fn decision(&self) -> &'static str {
        match self.status_and_code().0 {
            StatusCode::FORBIDDEN => "deny",
            _ => "error",
        }
    }
}
