//! Re-signing: the agent's SigV4 signature (made with placeholder keys) is stripped and the
//! request is signed again with the session's STS credentials.
//!
//! What is signed is exactly what is sent: [`resign`] edits the request head in place, and the
//! gateway must forward that head unchanged (same Host, same headers, same Content-Length).
//! Headers a proxy hop may add, drop or rewrite are left out of the signature (botocore's list,
//! see [`UNSIGNED_HEADERS`]).
//!
//! Cost (issue 6): the canonical request is built in one buffer ([`canonical`]) and the signing
//! key, valid for a whole UTC day, region and service, is derived once and then taken from a
//! cache ([`signing_key`]). What is signed is what the `aws-sigv4` crate signed with the same
//! settings, byte for byte: the tests keep that crate as the oracle.

use super::chunked::{ChunkSigner, Variant};
use super::request::{AwsRequest, query_pairs, request_host};
use aws_credential_types::Credentials;
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use http::request::Parts;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::time::SystemTime;

#[path = "canonical.rs"]
mod canonical;
#[path = "signing_key.rs"]
pub mod signing_key;

use canonical::{Canonical, EMPTY_SHA256, Input};
use signing_key::SigningKey;

/// The SigV4 algorithm name, first line of the string to sign and of Authorization.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// What aws-sigv4 answered for a session token or payload hash that is no header value (kept
/// as the message of [`SignError::Signer`] for the same requests).
const INVALID_HEADER_VALUE: &str =
    "failed to create canonical request: invalid header value: failed to parse header value";

/// `x-amz-content-sha256`: the payload hash S3 checks against the body.
const CONTENT_SHA256: &str = "x-amz-content-sha256";

/// Payload hash markers a body may carry instead of a hex SHA-256.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";

/// Headers never signed: hop-by-hop headers a proxy may change, and headers SDKs rewrite on
/// retry. Same set as botocore's `SIGNED_HEADERS_BLACKLIST`, plus `authorization` (being
/// computed) and `proxy-connection`.
pub const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

/// Headers of the agent's signature, removed before signing. `x-amz-content-sha256` is removed
/// too and set again by the signer when it is sent (see [`resign`]).
const AGENT_SIGNING_HEADERS: &[&str] = &[
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "x-amz-region-set",
];

/// What the signature says about the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The whole body, read by the gateway: its SHA-256 is computed and signed.
    Bytes(&'a [u8]),
    /// The body streams through unread (S3): the hash the agent declared in
    /// `x-amz-content-sha256` is signed as is (`UNSIGNED-PAYLOAD`, a hex SHA-256, or
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`); S3 checks it against the body it receives.
    /// An S3 request that declares nothing is signed as `UNSIGNED-PAYLOAD`.
    ClientDeclared,
}

/// Why a request cannot be re-signed. The gateway answers these with an AWS error and never
/// forwards the request.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A body signed chunk by chunk from the seed signature, given to [`resign`]: the
    /// SigV4 variants go through [`resign_chunked`]; the SigV4a ones are refused.
    #[error(
        "re-sign request: x-amz-content-sha256 {value:?} (chunk-signed streaming upload) is not \
         supported through the gateway yet; use an unsigned-payload upload"
    )]
    SignedStreaming {
        /// The declared payload marker.
        value: String,
    },
    /// [`resign_chunked`] called for a request that declares no chunk-signed payload.
    #[error(
        "re-sign request: x-amz-content-sha256 is not STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]"
    )]
    NotChunkSigned,
    /// SigV4a (`AWS4-ECDSA-P256-SHA256`); re-signing it as SigV4 would silently downgrade it.
    #[error("re-sign request: SigV4a (AWS4-ECDSA-P256-SHA256) signatures are not supported")]
    SigV4a,
    /// A presigned URL: its signature is in the query string.
    #[error("re-sign request: presigned URLs (X-Amz-Signature in the query) are not supported")]
    Presigned,
    /// `x-amz-content-sha256` is neither a hex SHA-256 nor a known marker.
    #[error("re-sign request: x-amz-content-sha256 {value:?} is not a SHA-256 or known marker")]
    BadContentSha256 {
        /// The declared value.
        value: String,
    },
    /// A service other than S3 whose body was not read and that declared no hash.
    #[error("re-sign request: the body of a {service} request must be read to sign it")]
    BodyNeeded {
        /// The signing name.
        service: String,
    },
    /// Neither a Host header nor an authority.
    #[error("re-sign request: no Host header and no authority to sign")]
    MissingHost,
    /// A header value that is not UTF-8 cannot be canonicalised.
    #[error("re-sign request: header {name} is not valid UTF-8")]
    HeaderNotUtf8 {
        /// The header name.
        name: String,
    },
    /// The signer refused the request (bad URI or header).
    #[error("re-sign request: {0}")]
    Signer(String),
}

impl SignError {
    /// The HTTP status and AWS error code to answer this refusal with: 400 for what the agent
    /// sent (SDKs do not retry it), 500 when the signer itself failed.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        match self {
            SignError::Signer(_) => (http::StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
            SignError::SignedStreaming { .. } | SignError::SigV4a | SignError::Presigned => {
                (http::StatusCode::BAD_REQUEST, "NotImplemented")
            }
            _ => (http::StatusCode::BAD_REQUEST, "InvalidRequest"),
        }
    }
}

/// Re-signs `parts` in place for `req` with the session credentials `creds` at time `now`.
///
/// Removes the agent's Authorization, X-Amz-Date, X-Amz-Security-Token and
/// x-amz-content-sha256, then signs with SigV4 for `req.signing_name` and `req.region`, adding
/// Authorization, X-Amz-Date, X-Amz-Security-Token (when `creds` has a session token) and, for
/// S3 or when the agent sent one, x-amz-content-sha256. A request without a Host header gets
/// one from its authority, so the Host signed is the Host sent.
///
/// S3 (and its relatives) sign the path as sent, encoded once and not normalised; every other
/// service signs the path encoded twice and normalised. Query strings are decoded, re-encoded
/// and sorted by `aws-sigv4`.
///
/// Contract with the forwarder: send `parts` as they are after this call. A header added later
/// must be one that was absent here or is in [`UNSIGNED_HEADERS`] (e.g. Content-Length for a
/// body that arrived chunked, Transfer-Encoding, Connection). On error `parts` may have lost the
/// agent's signing headers but carries no new signature; it must not be forwarded.
pub fn resign(
    parts: &mut Parts,
    req: &AwsRequest,
    payload: Payload<'_>,
    creds: &Credentials,
    now: SystemTime,
) -> Result<(), SignError> {
    sign_with_rules(parts, req, Rules::for_request(req), payload, creds, now)
}

/// The chunk-signed variant `parts` declares in `x-amz-content-sha256`
/// (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`), if any. Such a request is re-signed with
/// [`resign_chunked`], not [`resign`] (which refuses it).
pub fn chunk_signed(parts: &Parts) -> Option<Variant> {
    let value = parts.headers.get(CONTENT_SHA256)?.to_str().ok()?;
    Variant::from_marker(value)
}

/// Re-signs the head of a chunk-signed streaming upload like [`resign`], with the streaming
/// marker as the payload hash, and returns the chain that re-signs its body: the request's
/// new signature is the seed of the chunk signatures. The body must then be sent through
/// [`super::chunked::ResignedBody`] (or [`super::chunked::ChunkResigner`]); sent as is, its
/// chunk signatures would be the agent's.
///
/// Content-Length, `Content-Encoding: aws-chunked` and `x-amz-decoded-content-length` are
/// signed as sent: the re-framed body has the same length. Errors as for [`resign`]; a request
/// that declares no chunk-signed marker is refused with [`SignError::NotChunkSigned`].
pub fn resign_chunked(
    parts: &mut Parts,
    req: &AwsRequest,
    creds: &Credentials,
    now: SystemTime,
) -> Result<ChunkSigner, SignError> {
    refuse_unsupported(parts)?;
    let variant = chunk_signed(parts).ok_or(SignError::NotChunkSigned)?;
    let rules = Rules::for_request(req);
    let signed = sign_head(parts, req, rules, variant.marker(), true, creds, now)?;
    Ok(ChunkSigner::new(
        variant,
        signed.key.as_bytes(),
        signed.date_time,
        signed.scope,
        signed.signature,
    ))
}

/// The per-service choices of SigV4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rules {
    /// Encode the (already encoded) path once more: every service but S3.
    encode_path_twice: bool,
    /// Remove `.`/`..` segments and merge `//`: every service but S3.
    normalize_path: bool,
    /// Always send and sign `x-amz-content-sha256`: S3.
    always_content_sha256: bool,
}

impl Rules {
    fn for_request(req: &AwsRequest) -> Self {
        let s3 = req.is_s3_family();
        Rules {
            encode_path_twice: !s3,
            normalize_path: !s3,
            always_content_sha256: s3,
        }
    }
}

fn sign_with_rules(
    parts: &mut Parts,
    req: &AwsRequest,
    rules: Rules,
    payload: Payload<'_>,
    creds: &Credentials,
    now: SystemTime,
) -> Result<(), SignError> {
    refuse_unsupported(parts)?;
    let declared = declared_payload_hash(parts)?;
    let body = payload_hash(req, rules, payload, declared.as_deref())?;
    let send_content_sha256 = rules.always_content_sha256 || declared.is_some();
    sign_head(parts, req, rules, &body, send_content_sha256, creds, now).map(drop)
}

/// A head just signed: what a chunk-signed body continues from.
struct Signed {
    signature: String,
    /// `X-Amz-Date`.
    date_time: String,
    /// `date/region/service/aws4_request`.
    scope: String,
    key: SigningKey,
}

/// Replaces the agent's signing headers with a signature over `payload_hash` (the body's hex
/// SHA-256 or a marker); returns the signature with its date, scope and key (the seed of a
/// chunk-signed body).
fn sign_head(
    parts: &mut Parts,
    req: &AwsRequest,
    rules: Rules,
    payload_hash: &str,
    send_content_sha256: bool,
    creds: &Credentials,
    now: SystemTime,
) -> Result<Signed, SignError> {
    for name in AGENT_SIGNING_HEADERS {
        parts.headers.remove(*name);
    }
    ensure_host_header(parts)?;
    check_header_values(parts)?;
    let token = creds.session_token();
    let added_values = [token, send_content_sha256.then_some(payload_hash)];
    if !added_values.into_iter().flatten().all(is_header_text) {
        return Err(SignError::Signer(INVALID_HEADER_VALUE.to_owned()));
    }

    let date_time = canonical::amz_date_time(now);
    let mut added = Vec::with_capacity(3);
    added.push(("x-amz-date", date_time.as_str()));
    if let Some(token) = token {
        added.push(("x-amz-security-token", token));
    }
    if send_content_sha256 {
        added.push((CONTENT_SHA256, payload_hash));
    }
    let canonical = canonical_request(parts, rules, &added, payload_hash);

    let date = canonical::date_of(&date_time);
    let scope = credential_scope(date, &req.region, &req.signing_name);
    let key = signing_key::signing_key(
        creds.access_key_id(),
        creds.secret_access_key(),
        date,
        &req.region,
        &req.signing_name,
    );
    let signature = key.sign(string_to_sign(&date_time, &scope, &canonical).as_bytes());
    let authorization = authorization(creds.access_key_id(), &scope, &canonical, &signature);

    insert_header(parts, "x-amz-date", &date_time, false)?;
    insert_header(parts, "authorization", &authorization, false)?;
    if send_content_sha256 {
        insert_header(parts, CONTENT_SHA256, payload_hash, false)?;
    }
    if let Some(token) = token {
        insert_header(parts, "x-amz-security-token", token, true)?;
    }
    Ok(Signed {
        signature,
        date_time,
        scope,
        key,
    })
}

/// The canonical request of `parts` with the signer's `added` headers.
fn canonical_request(
    parts: &Parts,
    rules: Rules,
    added: &[(&'static str, &str)],
    payload_hash: &str,
) -> Canonical {
    let (path, query) = parts
        .uri
        .path_and_query()
        .map_or(("/", None), |pq| (pq.path(), pq.query()));
    Canonical::build(&Input {
        method: parts.method.as_str(),
        path,
        query,
        headers: &parts.headers,
        added,
        normalize_path: rules.normalize_path,
        encode_path_twice: rules.encode_path_twice,
        payload_hash,
    })
}

/// `date/region/service/aws4_request`.
fn credential_scope(date: &str, region: &str, service: &str) -> String {
    let mut scope = String::with_capacity(date.len() + region.len() + service.len() + 15);
    for part in [date, "/", region, "/", service, "/aws4_request"] {
        scope.push_str(part);
    }
    scope
}

/// `AWS4-HMAC-SHA256`, the time, the scope and the canonical request's hash, one per line.
fn string_to_sign(date_time: &str, scope: &str, canonical: &Canonical) -> String {
    let mut text = String::with_capacity(ALGORITHM.len() + date_time.len() + scope.len() + 67);
    for part in [ALGORITHM, "\n", date_time, "\n", scope, "\n"] {
        text.push_str(part);
    }
    canonical::push_hex(&mut text, &Sha256::digest(canonical.text()));
    text
}

/// The Authorization header: algorithm, credential, signed headers and signature.
fn authorization(
    access_key_id: &str,
    scope: &str,
    canonical: &Canonical,
    signature: &str,
) -> String {
    let signed = canonical.signed_headers();
    let parts = [
        ALGORITHM,
        " Credential=",
        access_key_id,
        "/",
        scope,
        ", SignedHeaders=",
        signed,
        ", Signature=",
        signature,
    ];
    let mut value = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        value.push_str(part);
    }
    value
}

fn insert_header(
    parts: &mut Parts,
    name: &'static str,
    value: &str,
    sensitive: bool,
) -> Result<(), SignError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| SignError::Signer(format!("bad value for {name}")))?;
    value.set_sensitive(sensitive);
    parts.headers.insert(HeaderName::from_static(name), value);
    Ok(())
}

/// Every header value must be UTF-8 to be canonicalised.
fn check_header_values(parts: &Parts) -> Result<(), SignError> {
    for (name, value) in &parts.headers {
        let bytes = value.as_bytes();
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(SignError::HeaderNotUtf8 {
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// What `HeaderValue::from_str` accepts: no control characters but tab.
fn is_header_text(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b >= b' ' && b != 0x7f) || b == b'\t')
}

/// Presigned URLs and SigV4a are refused: neither may be forwarded nor silently downgraded.
fn refuse_unsupported(parts: &Parts) -> Result<(), SignError> {
    let (mut v2_signature, mut v2_key) = (false, false);
    for (k, _) in query_pairs(parts) {
        if k.eq_ignore_ascii_case("X-Amz-Signature") {
            return Err(SignError::Presigned);
        }
        v2_signature |= k == "Signature";
        v2_key |= k == "AWSAccessKeyId";
    }
    // A SigV2 presigned URL (`AWSAccessKeyId` + `Signature` in the query) is refused too.
    if v2_signature && v2_key {
        return Err(SignError::Presigned);
    }
    let auth = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let v4a = auth.is_some_and(|a| a.starts_with(b"AWS4-ECDSA-P256-SHA256"));
    if v4a || parts.headers.contains_key("x-amz-region-set") {
        return Err(SignError::SigV4a);
    }
    Ok(())
}

/// The agent's `x-amz-content-sha256`, checked: chunk-signed streaming is refused.
fn declared_payload_hash(parts: &Parts) -> Result<Option<String>, SignError> {
    let Some(value) = parts.headers.get(CONTENT_SHA256) else {
        return Ok(None);
    };
    let value = String::from_utf8_lossy(value.as_bytes()).trim().to_owned();
    if value.starts_with("STREAMING-AWS4-") {
        // STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], STREAMING-AWS4-ECDSA-P256-SHA256-...
        return Err(SignError::SignedStreaming { value });
    }
    let hex = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
    if hex || value == UNSIGNED_PAYLOAD || value == STREAMING_UNSIGNED_TRAILER {
        return Ok(Some(value));
    }
    Err(SignError::BadContentSha256 { value })
}

/// The payload hash to sign: the body's SHA-256, the agent's declared hash, or a marker.
fn payload_hash<'a>(
    req: &AwsRequest,
    rules: Rules,
    payload: Payload<'_>,
    declared: Option<&'a str>,
) -> Result<Cow<'a, str>, SignError> {
    // An aws-chunked body keeps its marker whoever reads it: its hash is not the body's.
    if declared == Some(STREAMING_UNSIGNED_TRAILER) {
        return Ok(Cow::Borrowed(STREAMING_UNSIGNED_TRAILER));
    }
    match (payload, declared) {
        (Payload::Bytes([]), _) => Ok(Cow::Borrowed(EMPTY_SHA256)),
        (Payload::Bytes(bytes), _) => Ok(Cow::Owned(canonical::hex(&Sha256::digest(bytes)))),
        (Payload::ClientDeclared, Some(hash)) => Ok(Cow::Borrowed(hash)),
        (Payload::ClientDeclared, None) if rules.always_content_sha256 => {
            Ok(Cow::Borrowed(UNSIGNED_PAYLOAD))
        }
        (Payload::ClientDeclared, None) => Err(SignError::BodyNeeded {
            service: req.signing_name.clone(),
        }),
    }
}

/// Adds a Host header from the authority when the request has none (HTTP/2), so the Host
/// signed is the Host the upstream connection sends.
fn ensure_host_header(parts: &mut Parts) -> Result<(), SignError> {
    if parts.headers.contains_key(HOST) {
        return Ok(());
    }
    let host = request_host(parts).ok_or(SignError::MissingHost)?;
    let value = HeaderValue::from_str(&host).map_err(|_| SignError::MissingHost)?;
    parts.headers.insert(HOST, value);
    Ok(())
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
