//! identity
pub mod oidc;
pub mod sts;
