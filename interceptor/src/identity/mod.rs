//! Identity: who is behind a session, and the AWS credentials bound to that identity.
//!
//! - [`oidc`]: validates the OIDC token an agent session is created with (discovery, key set,
//!   signature, iss, aud, exp, nbf) into an [`Identity`].
//! - [`sts`]: exchanges that token for short-lived role credentials with
//!   AssumeRoleWithWebIdentity, cached per session and role.

mod http;
pub mod oidc;
pub mod sts;

pub use oidc::{Identity, IdentityError, OidcValidator};
pub use sts::{AssumeRequest, CredentialBroker, StsError};

#[cfg(test)]
mod test_server;
