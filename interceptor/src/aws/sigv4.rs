//! Re-signing: the agent's SigV4 signature (made with placeholder keys) is stripped and the
//! request is signed again with the session's STS credentials, by the `aws-sigv4` crate.
//!
//! What is signed is exactly what is sent: [`resign`] edits the request head in place, and the
//! gateway must forward that head unchanged (same Host, same headers, same Content-Length).
//! Headers a proxy hop may add, drop or rewrite are left out of the signature (botocore's list,
//! see [`UNSIGNED_HEADERS`]).
//!
//! Cost: `aws-sigv4` derives the signing key (four HMAC-SHA256 rounds) on every call although
//! it is valid for a whole day, region and service. That is a few microseconds per request;
//! a per-(day, region, service) key cache needs our own canonicaliser (issue 6).

use super::chunked::{ChunkSigner, Variant};
use super::request::{AwsRequest, query_pairs, request_host};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_smithy_runtime_api::client::identity::Identity;
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use http::request::Parts;
use std::borrow::Cow;
use std::time::SystemTime;

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
    let body = SignableBody::Precomputed(variant.marker().to_owned());
    let seed = sign_head(parts, req, rules, body, true, creds, now)?;

    let date_time = parts
        .headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| SignError::Signer("the signer set no X-Amz-Date".to_owned()))?
        .to_owned();
    let date = date_time.get(..8).unwrap_or(&date_time);
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.signing_name);
    // Same secret, time, region and name as the seed signature: the key of its scope.
    let key = aws_sigv4::sign::v4::generate_signing_key(
        creds.secret_access_key(),
        now,
        &req.region,
        &req.signing_name,
    );
    Ok(ChunkSigner::new(variant, key.as_ref(), date_time, scope, seed))
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
    let body = signable_body(req, rules, payload, declared.as_deref())?;
    let send_content_sha256 = rules.always_content_sha256 || declared.is_some();
    sign_head(parts, req, rules, body, send_content_sha256, creds, now).map(drop)
}

/// Replaces the agent's signing headers with a signature over `body`'s hash; returns the
/// signature (the seed of a chunk-signed body).
fn sign_head(
    parts: &mut Parts,
    req: &AwsRequest,
    rules: Rules,
    body: SignableBody<'_>,
    send_content_sha256: bool,
    creds: &Credentials,
    now: SystemTime,
) -> Result<String, SignError> {
    for name in AGENT_SIGNING_HEADERS {
        parts.headers.remove(*name);
    }
    ensure_host_header(parts)?;

    let identity = Identity::from(creds.clone());
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&req.region)
        .name(&req.signing_name)
        .time(now)
        .settings(settings(rules, send_content_sha256))
        .build()
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into();

    let headers = header_pairs(parts)?;
    let uri = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let signable = SignableRequest::new(parts.method.as_str(), uri, headers.into_iter(), body)
        .map_err(|e| SignError::Signer(error_chain(&e)))?;
    let (instructions, signature) = sign(signable, &params)
        .map_err(|e| SignError::Signer(error_chain(&e)))?
        .into_parts();

    let (new_headers, _no_query_params) = instructions.into_parts();
    for header in new_headers {
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|_| SignError::Signer(format!("bad value for {}", header.name())))?;
        value.set_sensitive(header.sensitive());
        parts
            .headers
            .insert(HeaderName::from_static(header.name()), value);
    }
    Ok(signature)
}

fn settings(rules: Rules, send_content_sha256: bool) -> SigningSettings {
    let mut s = SigningSettings::default();
    s.percent_encoding_mode = if rules.encode_path_twice {
        PercentEncodingMode::Double
    } else {
        PercentEncodingMode::Single
    };
    s.uri_path_normalization_mode = if rules.normalize_path {
        UriPathNormalizationMode::Enabled
    } else {
        UriPathNormalizationMode::Disabled
    };
    s.payload_checksum_kind = if send_content_sha256 {
        PayloadChecksumKind::XAmzSha256
    } else {
        PayloadChecksumKind::NoHeader
    };
    s.signature_location = SignatureLocation::Headers;
    s.session_token_mode = SessionTokenMode::Include;
    s.excluded_headers = Some(UNSIGNED_HEADERS.iter().map(|h| Cow::Borrowed(*h)).collect());
    s
}

/// Presigned URLs and SigV4a are refused: neither may be forwarded nor silently downgraded.
fn refuse_unsupported(parts: &Parts) -> Result<(), SignError> {
    if query_pairs(parts).any(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Signature")) {
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

fn signable_body<'a>(
    req: &AwsRequest,
    rules: Rules,
    payload: Payload<'a>,
    declared: Option<&str>,
) -> Result<SignableBody<'a>, SignError> {
    // An aws-chunked body keeps its marker whoever reads it: its hash is not the body's.
    if declared == Some(STREAMING_UNSIGNED_TRAILER) {
        return Ok(SignableBody::StreamingUnsignedPayloadTrailer);
    }
    match (payload, declared) {
        (Payload::Bytes(bytes), _) => Ok(SignableBody::Bytes(bytes)),
        (Payload::ClientDeclared, Some(hash)) => Ok(SignableBody::Precomputed(hash.to_owned())),
        (Payload::ClientDeclared, None) if rules.always_content_sha256 => {
            Ok(SignableBody::UnsignedPayload)
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

fn header_pairs(parts: &Parts) -> Result<Vec<(&str, &str)>, SignError> {
    parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value =
                std::str::from_utf8(value.as_bytes()).map_err(|_| SignError::HeaderNotUtf8 {
                    name: name.to_string(),
                })?;
            Ok((name.as_str(), value))
        })
        .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;
