//! `aws::classify` and the re-signing that follows it (`aws::resign`, `aws::sigv4::
//! resign_chunked`) over arbitrary HTTP/1 request heads and bodies: the input is a request as
//! an agent would write it, head and body; the head is split into method, target and headers
//! with `httparse` only to build `http::request::Parts` the way hyper hands them to the gateway.
//!
//! Invariants beyond "no panic":
//! - the body never changes what the head decides: service, signing name, region, host and the
//!   agent's signature are the same with `None` and with `Some(body)` (the protocol may change:
//!   a form body with an `Action` makes a request Query), and so is an error about the head
//!   (host, scope, Authorization); the body may only add errors of its own (a malformed body,
//!   an operation or parameter it repeats or contradicts);
//! - every classification error is a 400;
//! - a re-signed head carries an Authorization header that our own parser reads back as SigV4
//!   with the session's key and the classified region and service;
//! - re-signing touches only the signing headers: method, target and every other header are
//!   sent as the agent sent them (a Host is added only when the agent sent none).
#![no_main]

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use http::{HeaderMap, HeaderName, request::Parts};
use interceptor::aws::{
    AwsRequest, ClientSignature, CredentialScope, Payload, RequestError, SignError, classify,
    protocol_hint,
    request::parse_authorization,
    resign,
    sigv4::{chunk_signed, resign_chunked},
};
use libfuzzer_sys::fuzz_target;

const ACCESS_KEY: &str = "AKIDFUZZEXAMPLE";
/// 2013-05-24T00:00:00Z, the date of AWS's documented SigV4 examples.
const NOW_SECS: u64 = 1_369_353_600;
/// Headers re-signing replaces (aws::sigv4's AGENT_SIGNING_HEADERS) or adds.
const SIGNING_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-region-set",
];

/// The head as hyper would give it, and the body after it; None when it is not an HTTP/1 head.
fn parse(data: &[u8]) -> Option<(Parts, &[u8])> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = request.parse(data).ok()? else {
        return None;
    };
    let mut builder = http::Request::builder()
        .method(request.method?)
        .uri(request.path?);
    if request.version == Some(0) {
        builder = builder.version(http::Version::HTTP_10);
    }
    for header in request.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some((parts, &data[len..]))
}

fn check_classify(parts: &Parts, body: &[u8]) -> Option<AwsRequest> {
    let _ = protocol_hint(parts);
    let head_only = classify(parts, None);
    let with_body = classify(parts, Some(body));
    assert_eq!(
        head_error(&head_only),
        head_error(&with_body),
        "the body changed an error about the head"
    );
    for err in [&head_only, &with_body]
        .into_iter()
        .filter_map(|r| r.as_ref().err())
    {
        assert_eq!(
            err.status_and_code().0,
            http::StatusCode::BAD_REQUEST,
            "{err}"
        );
    }
    if let (Ok(a), Ok(b)) = (&head_only, &with_body) {
        assert_eq!(
            (decided(a), &a.client_signature),
            (decided(b), &b.client_signature),
            "the body changed what the head decided"
        );
        let _ = (b.needs_body(), b.streams_body(), b.is_s3_family());
    }
    with_body.ok()
}

/// The error of `result` if it is about the head alone.
fn head_error(result: &Result<AwsRequest, RequestError>) -> Option<&RequestError> {
    result.as_ref().err().filter(|e| is_head_error(e))
}

/// Errors about the head alone: who the request is for and how the agent signed it.
fn is_head_error(err: &RequestError) -> bool {
    matches!(
        err,
        RequestError::MissingHost
            | RequestError::NotAwsHost { .. }
            | RequestError::InvalidHost { .. }
            | RequestError::MalformedAuthorization { .. }
            | RequestError::UnknownService { .. }
            | RequestError::UnknownRegion { .. }
            | RequestError::RegionMismatch { .. }
            | RequestError::ServiceMismatch { .. }
    )
}

/// What classification reads from the head alone.
fn decided(r: &AwsRequest) -> [&str; 4] {
    [&r.service, &r.signing_name, &r.region, &r.host]
}

/// What must be sent as the agent sent it: every header but the signing ones.
fn kept_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let signing = |name: &HeaderName| SIGNING_HEADERS.contains(&name.as_str());
    headers
        .iter()
        .filter(|(name, _)| !signing(name))
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect()
}

fn check_signed(before: &Parts, after: &Parts, req: &AwsRequest) {
    assert_eq!(
        (&before.method, &before.uri),
        (&after.method, &after.uri),
        "target changed"
    );
    let mut expected = kept_headers(&before.headers);
    if !before.headers.contains_key(http::header::HOST) {
        let host = after
            .headers
            .get(http::header::HOST)
            .expect("a Host is added");
        expected.push(("host".to_owned(), host.as_bytes().to_vec()));
    }
    let mut sent = kept_headers(&after.headers);
    expected.sort();
    sent.sort();
    assert_eq!(
        sent, expected,
        "re-signing changed a header it does not own"
    );

    let auth = after
        .headers
        .get(http::header::AUTHORIZATION)
        .expect("signed");
    let auth = auth.to_str().expect("the signer writes ASCII");
    let scope = CredentialScope {
        access_key: ACCESS_KEY.to_owned(),
        date: "20130524".to_owned(),
        region: req.region.clone(),
        service: req.signing_name.clone(),
    };
    assert_eq!(
        parse_authorization(auth),
        Ok(ClientSignature::HeaderV4(scope)),
        "{auth}"
    );
    let token = after
        .headers
        .get("x-amz-security-token")
        .map(|v| v.as_bytes());
    assert_eq!(token, Some(&b"fuzz-session-token"[..]));
}

fn check_sign_error(err: &SignError) {
    let (status, code) = err.status_and_code();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{err}: {status}"
    );
    assert!(!code.is_empty() && !err.to_string().is_empty());
}

fn check_resign(parts: &Parts, req: &AwsRequest, body: &[u8]) {
    let creds = Credentials::new(
        ACCESS_KEY,
        "fuzz-secret",
        Some("fuzz-session-token".into()),
        None,
        "fuzz",
    );
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    if chunk_signed(parts).is_some() {
        let mut signed = parts.clone();
        match resign_chunked(&mut signed, req, &creds, now) {
            Ok(_) => check_signed(parts, &signed, req),
            Err(err) => check_sign_error(&err),
        }
        return;
    }
    for payload in [Payload::Bytes(body), Payload::ClientDeclared] {
        let mut signed = parts.clone();
        match resign(&mut signed, req, payload, &creds, now) {
            Ok(()) => check_signed(parts, &signed, req),
            Err(err) => check_sign_error(&err),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((parts, body)) = parse(data) else {
        return;
    };
    if let Some(req) = check_classify(&parts, body) {
        check_resign(&parts, &req, body);
    }
});
