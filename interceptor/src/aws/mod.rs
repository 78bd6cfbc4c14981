//! AWS requests as the gateway sees them: what a request is ([`classify`]), re-signing it with
//! the session's credentials ([`resign`]), and errors an agent's SDK can read
//! ([`error_response`]).
//!
//! The flow in the gateway: `classify(&head, None)`; if [`AwsRequest::needs_body`], read the
//! body (capped) and `classify(&head, Some(&body))` again; decide policy on the result; then
//! `resign(&mut head, &req, payload, &creds, now)` and forward. Any error is answered with
//! `error_response(req.protocol, ...)`, or with [`protocol_hint`] when classification failed;
//! [`RequestError::status_and_code`] and [`SignError::status_and_code`] give status and code.

pub mod chunked;
pub mod error;
pub mod request;
mod s3;
mod services;
pub mod sigv4;

pub use error::{access_denied, error_response, new_request_id};
pub use request::{
    AwsRequest, ClientSignature, CredentialScope, ParamValue, Params, Protocol, RequestError,
    classify, is_aws_host, protocol_hint,
};
pub use sigv4::{Payload, SignError, UNSIGNED_HEADERS, resign};
