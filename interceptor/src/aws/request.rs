//! What an AWS request is: service, region, protocol, action and parameters.
//!
//! [`classify`] turns a request head (and, for services other than S3, its body) into one
//! [`AwsRequest`]. Policy, re-signing and forwarding all use that value, so what is checked is
//! what is signed and sent.
//!
//! The gateway calls [`classify`] twice for services whose body it reads: first with the head
//! only, to learn from [`AwsRequest::streams_body`] whether the body streams through unread
//! (S3); then, for the others, again with the whole body (capped by the caller) to find the
//! action and parameters that live in it.

use super::s3;
pub use super::services::is_aws_host;
use super::services::{self, ParsedHost, ServiceInfo};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::request::Parts;
use std::borrow::Cow;

/// The wire protocol of an AWS service; it decides where the action lives and the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `Action=` in a form body or the query string; errors in `<ErrorResponse>`.
    Query,
    /// EC2's dialect of the query protocol; errors in `<Response><Errors>`.
    Ec2Query,
    /// JSON with `X-Amz-Target`, `application/x-amz-json-1.0` (DynamoDB, SQS, Step Functions).
    Json10,
    /// JSON with `X-Amz-Target`, `application/x-amz-json-1.1` (Secrets Manager, SSM, KMS, ...).
    Json11,
    /// REST with JSON bodies (Lambda, API Gateway, ...): the operation is in method and path.
    RestJson,
    /// REST with XML bodies (S3, Route 53, CloudFront).
    RestXml,
    /// Not known: errors use the generic `<Error>` XML shape.
    Unknown,
}

impl Protocol {
    /// Whether this is one of the JSON-RPC protocols (`X-Amz-Target`).
    pub fn is_json_rpc(self) -> bool {
        matches!(self, Protocol::Json10 | Protocol::Json11)
    }
}

/// How the agent signed its request. Its signature is never forwarded; this only says what
/// re-signing must refuse and what the audit log may name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientSignature {
    /// No Authorization header and no query signature.
    Unsigned,
    /// SigV4 in the Authorization header.
    HeaderV4(CredentialScope),
    /// SigV4a (`AWS4-ECDSA-P256-SHA256`): refused, never downgraded silently.
    HeaderV4a {
        /// The agent's access key id (a placeholder).
        access_key: String,
    },
    /// A presigned URL (`X-Amz-Signature` in the query): refused.
    Presigned(Option<CredentialScope>),
    /// Another scheme (e.g. SigV2 `AWS AKID:sig`); re-signed with SigV4 like an unsigned call.
    Other {
        /// The first word of the Authorization header.
        scheme: String,
    },
}

/// The credential scope of a SigV4 signature: `AKID/20261204/us-east-1/ec2/aws4_request`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialScope {
    /// The agent's access key id (a placeholder).
    pub access_key: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// The region the agent signed for.
    pub region: String,
    /// The service (signing name) the agent signed for.
    pub service: String,
}

/// A parameter value as a policy rule can test it.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// A string (every query-protocol value is one; compare numerically with [`Self::as_f64`]).
    Str(String),
    /// A JSON number.
    Num(serde_json::Number),
    /// A JSON boolean.
    Bool(bool),
    /// A JSON null.
    Null,
}

impl ParamValue {
    /// The value as text (numbers and booleans formatted), `None` for null.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            ParamValue::Str(s) => Some(Cow::Borrowed(s)),
            ParamValue::Num(n) => Some(Cow::Owned(n.to_string())),
            ParamValue::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            ParamValue::Null => None,
        }
    }

    /// The value as a number: JSON numbers, and strings that parse as one (`MaxCount=50`).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Num(n) => n.as_f64(),
            ParamValue::Str(s) => s.trim().parse().ok(),
            ParamValue::Bool(_) | ParamValue::Null => None,
        }
    }
}

/// Request parameters, flattened to dotted names in wire order.
///
/// Query protocol names are kept as sent (`MaxCount`, `InstanceId.1`,
/// `TagSpecification.1.Tag.1.Key`); JSON objects are flattened the same way with 1-based list
/// indexes (`Key.id.S`, `AttributesToGet.1`). S3 requests carry `Bucket`, `Key` and the query
/// parameters; Lambda carries `FunctionName`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub Vec<(String, ParamValue)>);

impl Params {
    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// All values whose name is `name` or starts with `name.` (list members of a query list).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ParamValue> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| {
                n == name || (n.starts_with(name) && n.as_bytes().get(name.len()) == Some(&b'.'))
            })
            .map(|(_, v)| v)
    }

    fn push(&mut self, name: impl Into<String>, value: ParamValue) {
        self.0.push((name.into(), value));
    }
}

/// One AWS request, parsed once at the edge.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsRequest {
    /// The IAM service prefix used in actions: `ec2`, `s3`, `dynamodb`, `cloudwatch`.
    pub service: String,
    /// The SigV4 signing name (credential scope service): `ec2`, `s3`, `monitoring`.
    pub signing_name: String,
    /// The region to sign for.
    pub region: String,
    /// The wire protocol.
    pub protocol: Protocol,
    /// The API operation, e.g. `RunInstances`, `ListObjectsV2`; `None` when not recognised.
    pub operation: Option<String>,
    /// The IAM action, e.g. `ec2:RunInstances`, `s3:ListBucket`; `None` when not recognised
    /// (policy then applies its default; an unknown call is never assumed harmless).
    pub action: Option<String>,
    /// The resource where known: an S3 ARN, a Lambda function, a table or secret name.
    pub resource: Option<String>,
    /// The S3 bucket (virtual host or first path segment).
    pub bucket: Option<String>,
    /// The S3 object key, percent-decoded.
    pub key: Option<String>,
    /// Parameters a policy rule can test.
    pub params: Params,
    /// The Host as sent by the agent (Host header, else the URI authority). It is what is
    /// signed, so the gateway must send it unchanged.
    pub host: String,
    /// How the agent signed.
    pub client_signature: ClientSignature,
}

impl AwsRequest {
    /// Whether the body streams through unread (S3 and its relatives). For every other
    /// service the gateway reads the body (under its cap) to classify and sign it.
    pub fn streams_body(&self) -> bool {
        self.is_s3_family()
    }

    /// Whether the gateway must read the whole body before classifying and signing.
    pub fn needs_body(&self) -> bool {
        !self.streams_body()
    }

    /// Whether SigV4 follows S3's rules for this request: path signed as sent (encoded once,
    /// not normalised) and `x-amz-content-sha256` always sent.
    pub fn is_s3_family(&self) -> bool {
        services::is_s3_signing_name(&self.signing_name)
    }
}

/// Why a request could not be classified. The gateway answers these with an AWS error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// Neither a Host header nor an authority in the request line.
    #[error("classify request: no Host header and no authority in the request target")]
    MissingHost,
    /// The Host is not an AWS service host.
    #[error("classify request: host {host:?} is not an AWS service host")]
    NotAwsHost {
        /// The Host as sent.
        host: String,
    },
    /// The Authorization header is not a well-formed SigV4 header.
    #[error("classify request: malformed Authorization header: {reason}")]
    MalformedAuthorization {
        /// What is wrong with it.
        reason: String,
    },
    /// No credential scope and an unknown host: the service to sign for is unknown.
    #[error("classify request: cannot tell the AWS service of host {host:?} (unsigned request)")]
    UnknownService {
        /// The Host as sent.
        host: String,
    },
    /// No credential scope and the host names no region.
    #[error("classify request: cannot tell the region of host {host:?} (unsigned request)")]
    UnknownRegion {
        /// The Host as sent.
        host: String,
    },
    /// The agent signed for a region other than the one its host names.
    #[error(
        "classify request: signed for region {scope_region:?} but host {host:?} is in \
         {host_region:?}"
    )]
    RegionMismatch {
        /// The Host as sent.
        host: String,
        /// The region in the host name.
        host_region: String,
        /// The region in the credential scope.
        scope_region: String,
    },
    /// The Host is not a plain host name (`[A-Za-z0-9.-]+` with an optional `:port`).
    #[error(
        "classify request: host {host:?} is not a plain host name (letters, digits, '.', '-' \
         and an optional :port)"
    )]
    InvalidHost {
        /// The Host as sent.
        host: String,
    },
    /// The request names its operation in two places that disagree, so two readers (the
    /// gateway and AWS, or two AWS front ends) could run different operations.
    #[error("classify request: {service} request names two operations: {first} and {second}")]
    ConflictingOperation {
        /// The IAM service prefix.
        service: String,
        /// One reading, e.g. `X-Amz-Target "AmazonSSM.GetParameter"`.
        first: String,
        /// The other, e.g. `query Action "DeleteParameter"`.
        second: String,
    },
    /// A parameter or header that must appear once appears more often: readers that take the
    /// first and readers that take the last would see different requests.
    #[error("classify request: {service} request repeats {name}")]
    RepeatedParameter {
        /// The IAM service prefix.
        service: String,
        /// What is repeated, e.g. `parameter "Action"`, `header x-amz-target`.
        name: String,
    },
    /// The operation named by `Action` or `X-Amz-Target` is not an operation name.
    #[error("classify request: {service} {source_name} {value:?} does not name an operation")]
    InvalidOperationName {
        /// The IAM service prefix.
        service: String,
        /// Where the name was read: `Action`, `X-Amz-Target`.
        source_name: &'static str,
        /// The value as sent.
        value: String,
    },
    /// A parameter that some readers might take for part of the operation's name.
    #[error("classify request: {service} request carries {name:?}: {why}")]
    UnexpectedParameter {
        /// The IAM service prefix.
        service: String,
        /// The parameter as sent.
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The body cannot be read the way the service reads it, so its parameters are unknown.
    #[error("classify request: {service} request body cannot be read: {reason}")]
    MalformedBody {
        /// The IAM service prefix.
        service: String,
        /// What is wrong, e.g. the JSON parser's error.
        reason: String,
    },
    /// The agent signed for a service other than the one its host names.
    #[error(
        "classify request: signed for service {scope_service:?} but host {host:?} is \
         {host_service:?}"
    )]
    ServiceMismatch {
        /// The Host as sent.
        host: String,
        /// The signing name the host implies.
        host_service: String,
        /// The service in the credential scope.
        scope_service: String,
    },
}

impl RequestError {
    /// The HTTP status and AWS error code to answer this refusal with. All are client errors
    /// (400), which SDKs do not retry.
    pub fn status_and_code(&self) -> (http::StatusCode, &'static str) {
        let code = match self {
            RequestError::MalformedAuthorization { .. }
            | RequestError::RegionMismatch { .. }
            | RequestError::ServiceMismatch { .. } => "AuthorizationHeaderMalformed",
            RequestError::MissingHost
            | RequestError::NotAwsHost { .. }
            | RequestError::InvalidHost { .. }
            | RequestError::UnknownService { .. }
            | RequestError::UnknownRegion { .. }
            | RequestError::ConflictingOperation { .. }
            | RequestError::RepeatedParameter { .. }
            | RequestError::InvalidOperationName { .. }
            | RequestError::UnexpectedParameter { .. }
            | RequestError::MalformedBody { .. } => "InvalidRequest",
        };
        (http::StatusCode::BAD_REQUEST, code)
    }
}

/// Classifies a request from its head and, when read, its whole body.
///
/// The signing name and region come from the agent's credential scope when it has one (that
/// is what AWS checks), else from the host. A scope that contradicts the host (another region
/// than the host names, another service than a known host serves, S3 rules on one side only)
/// is refused: signing it either way would sign something the agent did not ask for.
pub fn classify(head: &Parts, body: Option<&[u8]>) -> Result<AwsRequest, RequestError> {
    let host = single_request_host(head)?;
    if !services::is_host_name(&host) {
        return Err(RequestError::InvalidHost { host });
    }
    let parsed = services::parse_host(&host)
        .ok_or_else(|| RequestError::NotAwsHost { host: host.clone() })?;
    let client_signature = client_signature(head)?;
    let scope = match &client_signature {
        ClientSignature::HeaderV4(scope) => Some(scope),
        ClientSignature::Presigned(scope) => scope.as_ref(),
        _ => None,
    };
    let target = resolve_target(&host, &parsed, scope)?;
    let reads_body = !services::is_s3_signing_name(&target.signing_name);
    if reads_body {
        // Which Content-Type counts decides form or JSON; two leave that to the reader.
        single_header(head, "content-type", &target.iam_prefix)?;
    }
    let body = match body {
        Some(b) if reads_body => Some(decoded_body(head, b, &target.iam_prefix)?),
        _ => None,
    };
    let body = body.as_deref();
    let protocol = detect_protocol(head, body, &target);

    let mut req = AwsRequest {
        service: target.iam_prefix,
        signing_name: target.signing_name,
        region: target.region,
        protocol,
        operation: None,
        action: None,
        resource: None,
        bucket: None,
        key: None,
        params: Params::default(),
        host,
        client_signature,
    };
    match protocol {
        _ if req.is_s3_family() => {
            if services::S3_BUCKET_ENDPOINTS.contains(&parsed.endpoint.as_str()) {
                s3::describe(&mut req, head, parsed.prefix.as_deref())?;
            }
            // S3 Control and Outposts: signed by S3 rules, operation not decoded (None).
        }
        Protocol::Query | Protocol::Ec2Query => describe_query(&mut req, head, body)?,
        Protocol::Json10 | Protocol::Json11 => describe_json(&mut req, head, body)?,
        Protocol::RestJson => describe_rest_json(&mut req, head, body)?,
        Protocol::RestXml => refuse_rpc_names(&req, head, body)?,
        Protocol::Unknown => {}
    }
    Ok(req)
}

/// The protocol to answer in when classification failed: read from the head alone.
pub fn protocol_hint(head: &Parts) -> Protocol {
    if head.headers.contains_key("x-amz-target") {
        return json_version(head).unwrap_or(Protocol::Json11);
    }
    if let Some(json) = json_version(head) {
        return json;
    }
    let host = request_host(head).unwrap_or_default();
    let parsed = services::parse_host(&host);
    let info = parsed
        .as_ref()
        .and_then(|p| services::by_endpoint(&p.endpoint));
    if is_form(head) || query_has_action(head) {
        let ec2 = info.is_some_and(|i| i.protocol == Protocol::Ec2Query);
        return if ec2 {
            Protocol::Ec2Query
        } else {
            Protocol::Query
        };
    }
    info.map_or(Protocol::Unknown, |i| i.protocol)
}

/// The Host the agent sent: the Host header, else the request-target authority (HTTP/2).
pub(crate) fn request_host(head: &Parts) -> Option<String> {
    if let Some(value) = head.headers.get(HOST) {
        return value.to_str().ok().map(str::to_owned);
    }
    head.uri.authority().map(|a| a.as_str().to_owned())
}

/// [`request_host`] for classification: refuses a request that names two hosts.
///
/// Two Host headers, or a Host header and an authority that differ (an absolute-form request
/// line), name two hosts: HTTP says the authority wins, code that reads the header would
/// disagree.
fn single_request_host(head: &Parts) -> Result<String, RequestError> {
    let mut values = head.headers.get_all(HOST).iter();
    let header = values.next();
    let authority = head.uri.authority().map(|a| a.as_str().to_owned());
    let Some(header) = header else {
        return authority.ok_or(RequestError::MissingHost);
    };
    let header = header.to_str().map_err(|_| RequestError::InvalidHost {
        host: String::from_utf8_lossy(header.as_bytes()).into_owned(),
    })?;
    if values.next().is_some() {
        return Err(RequestError::RepeatedParameter {
            service: "aws".to_owned(),
            name: "header host".to_owned(),
        });
    }
    if let Some(authority) = authority.filter(|a| !a.eq_ignore_ascii_case(header)) {
        return Err(RequestError::ConflictingOperation {
            service: "aws".to_owned(),
            first: format!("Host {header:?}"),
            second: format!("request-target authority {authority:?}"),
        });
    }
    Ok(header.to_owned())
}

/// What to sign for, after reconciling the credential scope with the host.
struct Target {
    signing_name: String,
    iam_prefix: String,
    region: String,
    info: Option<&'static ServiceInfo>,
}

fn resolve_target(
    host: &str,
    parsed: &ParsedHost,
    scope: Option<&CredentialScope>,
) -> Result<Target, RequestError> {
    let host_info = services::by_endpoint(&parsed.endpoint);
    let host_signing = host_info.map(|i| i.signing_name.to_owned());

    let signing_name = match (scope, &host_signing) {
        (Some(scope), Some(expected)) => {
            check_scope_service(host, expected, &scope.service)?;
            scope.service.clone()
        }
        (Some(scope), None) => {
            if services::is_s3_signing_name(&scope.service) {
                // S3 rules on an unknown host would sign a path S3 never sees.
                return Err(RequestError::ServiceMismatch {
                    host: host.to_owned(),
                    host_service: parsed.endpoint.clone(),
                    scope_service: scope.service.clone(),
                });
            }
            scope.service.clone()
        }
        (None, Some(name)) => name.clone(),
        (None, None) => {
            return Err(RequestError::UnknownService {
                host: host.to_owned(),
            });
        }
    };

    let region = resolve_region(host, parsed, host_info, scope)?;
    let info = host_info.or_else(|| services::by_signing_name(&signing_name));
    let iam_prefix = match host_info {
        Some(i) if i.signing_name == signing_name => i.iam_prefix.to_owned(),
        _ => info.map_or_else(|| signing_name.clone(), |i| i.iam_prefix.to_owned()),
    };
    Ok(Target {
        signing_name,
        iam_prefix,
        region,
        info,
    })
}

fn check_scope_service(host: &str, expected: &str, scope: &str) -> Result<(), RequestError> {
    if expected == scope {
        return Ok(());
    }
    Err(RequestError::ServiceMismatch {
        host: host.to_owned(),
        host_service: expected.to_owned(),
        scope_service: scope.to_owned(),
    })
}

fn resolve_region(
    host: &str,
    parsed: &ParsedHost,
    info: Option<&ServiceInfo>,
    scope: Option<&CredentialScope>,
) -> Result<String, RequestError> {
    match (scope, &parsed.region) {
        (Some(scope), Some(host_region)) if &scope.region != host_region => {
            Err(RequestError::RegionMismatch {
                host: host.to_owned(),
                host_region: host_region.clone(),
                scope_region: scope.region.clone(),
            })
        }
        // A host without a region (a global endpoint) accepts the scope's region: AWS decides.
        (Some(scope), _) => Ok(scope.region.clone()),
        (None, Some(host_region)) => Ok(host_region.clone()),
        (None, None) => info
            .and_then(|i| i.global_region)
            .map(str::to_owned)
            .ok_or_else(|| RequestError::UnknownRegion {
                host: host.to_owned(),
            }),
    }
}

fn detect_protocol(head: &Parts, body: Option<&[u8]>, target: &Target) -> Protocol {
    if services::is_s3_signing_name(&target.signing_name) {
        return Protocol::RestXml;
    }
    let default = target.info.map(|i| i.protocol);
    if let Some(rest @ (Protocol::RestJson | Protocol::RestXml)) = default {
        // A REST service's operation is its method and path, whatever the request adds; an
        // `Action` or `X-Amz-Target` on top is refused when the request is described.
        return rest;
    }
    if head.headers.contains_key("x-amz-target") {
        let table_json = default.filter(|p| p.is_json_rpc());
        return json_version(head)
            .or(table_json)
            .unwrap_or(Protocol::Json11);
    }
    if is_form(head) || query_has_action(head) || body.is_some_and(form_has_action) {
        return if default == Some(Protocol::Ec2Query) {
            Protocol::Ec2Query
        } else {
            Protocol::Query
        };
    }
    match default {
        // A JSON-RPC service without X-Amz-Target cannot name its operation; keep the
        // protocol for the error shape.
        Some(p) => p,
        None => Protocol::Unknown,
    }
}

/// The media type of the Content-Type header, lower-cased, without its parameters.
fn media_type(head: &Parts) -> Option<String> {
    let ct = head.headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = ct.split(';').next().unwrap_or_default();
    Some(media.trim().to_ascii_lowercase())
}

fn json_version(head: &Parts) -> Option<Protocol> {
    match media_type(head)?.as_str() {
        "application/x-amz-json-1.0" => Some(Protocol::Json10),
        "application/x-amz-json-1.1" => Some(Protocol::Json11),
        _ => None,
    }
}

/// Whether the Content-Type is a URL-encoded form, in any letter case and with any parameters
/// (`Application/X-WWW-Form-Urlencoded; charset=utf-8`): HTTP media types are case-insensitive.
fn is_form(head: &Parts) -> bool {
    media_type(head).is_some_and(|m| m == FORM_MEDIA_TYPE)
}

const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";

fn query_has_action(head: &Parts) -> bool {
    query_pairs(head).any(|(k, _)| k.eq_ignore_ascii_case("Action"))
}

/// Whether `body`, read as a URL-encoded form, names an `Action` (in any letter case).
fn form_has_action(body: &[u8]) -> bool {
    url::form_urlencoded::parse(body).any(|(k, _)| k.eq_ignore_ascii_case("Action"))
}

/// Largest decompressed size of a gzip-encoded API body, in bytes. The gateway caps the body
/// it reads; this caps what that body may inflate to.
const MAX_DECODED_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// The body as the service reads it: gzip-decoded when `Content-Encoding: gzip` (AWS request
/// compression, and moto, decode it), else as sent. Other encodings are refused: their
/// parameters could not be checked.
fn decoded_body<'a>(
    head: &Parts,
    body: &'a [u8],
    service: &str,
) -> Result<Cow<'a, [u8]>, RequestError> {
    let Some(encoding) = single_header(head, "content-encoding", service)? else {
        return Ok(Cow::Borrowed(body));
    };
    let encoding = encoding.trim().to_ascii_lowercase();
    let malformed = |reason: String| RequestError::MalformedBody {
        service: service.to_owned(),
        reason,
    };
    match encoding.as_str() {
        "" | "identity" => Ok(Cow::Borrowed(body)),
        "gzip" | "x-gzip" => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_DECODED_BODY_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| malformed(format!("gzip body does not decode: {e}")))?;
            if out.len() as u64 > MAX_DECODED_BODY_BYTES {
                return Err(malformed(format!(
                    "gzip body inflates beyond {MAX_DECODED_BODY_BYTES} bytes"
                )));
            }
            Ok(Cow::Owned(out))
        }
        other => Err(malformed(format!(
            "content encoding {other:?} is not supported (only gzip)"
        ))),
    }
}

/// The value of a header that must appear at most once, as visible ASCII.
fn single_header<'a>(
    head: &'a Parts,
    name: &'static str,
    service: &str,
) -> Result<Option<&'a str>, RequestError> {
    let mut values = head.headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(RequestError::RepeatedParameter {
            service: service.to_owned(),
            name: format!("header {name}"),
        });
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| RequestError::UnexpectedParameter {
            service: service.to_owned(),
            name: name.to_owned(),
            why: "the header value is not visible ASCII",
        })
}

/// The decoded query string pairs of the request target.
pub(crate) fn query_pairs(head: &Parts) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(head.uri.query().unwrap_or_default().as_bytes())
}

/// Query parameters that carry a signature or its metadata, never policy parameters.
fn is_signing_param(name: &str) -> bool {
    name.starts_with("X-Amz-") || name.starts_with("x-amz-")
}

// --- the agent's signature ----------------------------------------------------------------

fn client_signature(head: &Parts) -> Result<ClientSignature, RequestError> {
    if let Some(sig) = presigned_signature(head) {
        return Ok(sig);
    }
    let Some(value) = head.headers.get(AUTHORIZATION) else {
        return Ok(ClientSignature::Unsigned);
    };
    let value = value.to_str().map_err(|_| malformed("not visible ASCII"))?;
    parse_authorization(value)
}

fn malformed(reason: &str) -> RequestError {
    RequestError::MalformedAuthorization {
        reason: reason.to_owned(),
    }
}

fn presigned_signature(head: &Parts) -> Option<ClientSignature> {
    let mut signed = false;
    let mut scope = None;
    let (mut v2_signature, mut v2_key) = (false, false);
    for (k, v) in query_pairs(head) {
        if k.eq_ignore_ascii_case("X-Amz-Signature") {
            signed = true;
        } else if k.eq_ignore_ascii_case("X-Amz-Credential") {
            scope = parse_scope(&v);
        } else if k == "Signature" {
            v2_signature = true;
        } else if k == "AWSAccessKeyId" {
            v2_key = true;
        }
    }
    // A SigV2 query signature (what botocore's presigned S3 URLs default to) counts too: the
    // agent's signature must never ride along with ours.
    (signed || (v2_signature && v2_key)).then_some(ClientSignature::Presigned(scope))
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request, ...`.
pub fn parse_authorization(value: &str) -> Result<ClientSignature, RequestError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    match scheme {
        "AWS4-HMAC-SHA256" => {
            let credential = auth_field(rest, "Credential")
                .ok_or_else(|| malformed("SigV4 header without Credential="))?;
            let scope = parse_scope(credential).ok_or_else(|| {
                malformed(&format!(
                    "credential {credential:?} is not AKID/date/region/service/aws4_request"
                ))
            })?;
            Ok(ClientSignature::HeaderV4(scope))
        }
        "AWS4-ECDSA-P256-SHA256" => {
            let credential = auth_field(rest, "Credential").unwrap_or_default();
            let access_key = credential.split('/').next().unwrap_or_default().to_owned();
            Ok(ClientSignature::HeaderV4a { access_key })
        }
        _ => Ok(ClientSignature::Other {
            scheme: scheme.to_owned(),
        }),
    }
}

fn auth_field<'a>(rest: &'a str, name: &str) -> Option<&'a str> {
    rest.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim())
    })
}

fn parse_scope(credential: &str) -> Option<CredentialScope> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = parts.as_slice() else {
        return None;
    };
    if [access_key, date, region, service]
        .iter()
        .any(|p| p.is_empty())
    {
        return None;
    }
    Some(CredentialScope {
        access_key: (*access_key).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
    })
}

// --- actions per protocol -----------------------------------------------------------------

fn set_operation(req: &mut AwsRequest, operation: &str) {
    req.action = Some(format!("{}:{operation}", req.service));
    req.operation = Some(operation.to_owned());
}

/// Query protocol: `Action`, `Version` and the parameters from the query string and the form
/// body together.
///
/// Every name must appear once across both: readers differ on which of two values they take
/// (moto takes the first of a form and the last of an untyped body), so a repeat is refused.
/// `Action` and `Version` must be spelt exactly so; another letter case is refused rather than
/// guessed either way.
fn describe_query(
    req: &mut AwsRequest,
    head: &Parts,
    body: Option<&[u8]>,
) -> Result<(), RequestError> {
    let from_body = query_form_body(req, head, body)?;
    let pairs = query_pairs(head)
        .map(|(k, v)| ("query", k, v))
        .chain(url::form_urlencoded::parse(from_body).map(|(k, v)| ("body", k, v)));
    let mut seen = std::collections::HashSet::new();
    let mut action: Option<(&str, String)> = None;
    for (place, name, value) in pairs {
        if let Some((first_place, first)) = &action
            && name == "Action"
            && *first != value
        {
            return Err(RequestError::ConflictingOperation {
                service: req.service.clone(),
                first: format!("{first_place} Action {first:?}"),
                second: format!("{place} Action {value:?}"),
            });
        }
        if !seen.insert(name.clone().into_owned()) {
            return Err(repeated(req, &name));
        }
        match name.as_ref() {
            "Action" => action = Some((place, value.into_owned())),
            "Version" => {}
            n if n.eq_ignore_ascii_case("Action") || n.eq_ignore_ascii_case("Version") => {
                return Err(RequestError::UnexpectedParameter {
                    service: req.service.clone(),
                    name: n.to_owned(),
                    why: "the query protocol spells it with one capital letter; another \
                          spelling is not guessed",
                });
            }
            n if is_signing_param(n) => {}
            _ => req
                .params
                .push(name.into_owned(), ParamValue::Str(value.into_owned())),
        }
    }
    if let Some((_, action)) = action {
        check_operation_name(req, "Action", &action)?;
        set_operation(req, &action);
    }
    req.resource = ["QueueUrl", "TopicArn", "StackName", "RoleName", "UserName"]
        .iter()
        .find_map(|name| req.params.get(name)?.as_str().map(Cow::into_owned));
    Ok(())
}

/// The body of a query-protocol request, to be read as a form.
///
/// A body without Content-Type is read as a form too: moto (and AWS front ends that are lenient
/// the same way) parse it so, and the policy must see what would execute. A non-empty body
/// under any other Content-Type is refused: some reader might still take its parameters.
fn query_form_body<'a>(
    req: &AwsRequest,
    head: &Parts,
    body: Option<&'a [u8]>,
) -> Result<&'a [u8], RequestError> {
    let body = body.unwrap_or_default();
    if body.is_empty() || !head.headers.contains_key(CONTENT_TYPE) || is_form(head) {
        return Ok(body);
    }
    let content_type = String::from_utf8_lossy(
        head.headers
            .get(CONTENT_TYPE)
            .map(http::HeaderValue::as_bytes)
            .unwrap_or_default(),
    )
    .into_owned();
    Err(RequestError::MalformedBody {
        service: req.service.clone(),
        reason: format!(
            "a query-protocol body must be {FORM_MEDIA_TYPE}, not Content-Type {content_type:?}"
        ),
    })
}

fn repeated(req: &AwsRequest, name: &str) -> RequestError {
    RequestError::RepeatedParameter {
        service: req.service.clone(),
        name: format!("parameter {name:?}"),
    }
}

/// Operation names are identifiers; anything else is not trusted as one.
fn is_operation_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn check_operation_name(
    req: &AwsRequest,
    source_name: &'static str,
    value: &str,
) -> Result<(), RequestError> {
    if is_operation_name(value) {
        return Ok(());
    }
    Err(RequestError::InvalidOperationName {
        service: req.service.clone(),
        source_name,
        value: value.to_owned(),
    })
}

/// JSON-RPC: the operation from `X-Amz-Target`, the parameters from the JSON body.
///
/// The operation must be named once and only there: moto dispatches an `Action` from the query
/// string (or from the body read as a form) before the header, and reads parameters from the
/// query string before the body, so any of those next to the header is refused.
fn describe_json(
    req: &mut AwsRequest,
    head: &Parts,
    body: Option<&[u8]>,
) -> Result<(), RequestError> {
    let target = single_header(head, "x-amz-target", &req.service)?;
    // `DynamoDB_20120810.PutItem`, `secretsmanager.GetSecretValue`, `AmazonSSM.GetParameter`.
    let operation = match target {
        Some(t) => {
            // Readers take the text after the last dot; the prefix must be there too.
            let op = t.rsplit_once('.').map_or("", |(_, op)| op);
            if !is_operation_name(op) {
                return Err(RequestError::InvalidOperationName {
                    service: req.service.clone(),
                    source_name: "X-Amz-Target",
                    value: t.to_owned(),
                });
            }
            Some(op)
        }
        None => None,
    };
    let named_by = || format!("X-Amz-Target {:?}", target.unwrap_or_default());
    for (name, value) in query_pairs(head) {
        if is_signing_param(&name) {
            continue;
        }
        if name.eq_ignore_ascii_case("Action") {
            return Err(RequestError::ConflictingOperation {
                service: req.service.clone(),
                first: named_by(),
                second: format!("query Action {value:?}"),
            });
        }
        return Err(RequestError::UnexpectedParameter {
            service: req.service.clone(),
            name: name.into_owned(),
            why: "a JSON request carries its parameters in the body; some readers take query \
                  parameters first",
        });
    }
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        let map = json_object_body(req, body)?;
        refuse_form_reading(req, body, &map, &named_by())?;
        for (k, v) in map {
            flatten_json(&mut req.params, k, v);
        }
    }
    if let Some(op) = operation {
        set_operation(req, op);
    }
    req.resource = [
        "SecretId",
        "TableName",
        "Name",
        "KeyId",
        "QueueUrl",
        "logGroupName",
    ]
    .iter()
    .find_map(|name| req.params.get(name)?.as_str().map(Cow::into_owned));
    Ok(())
}

/// Refuses a JSON body that, read as a URL-encoded form, names an `Action` or one of the JSON
/// body's own top-level parameters: moto reads an untyped body as a form before it reads it as
/// JSON, so `{"Name":"dev","x":"&Name=prod"}` would act on `prod` there.
fn refuse_form_reading(
    req: &AwsRequest,
    body: &[u8],
    json: &serde_json::Map<String, serde_json::Value>,
    named_by: &str,
) -> Result<(), RequestError> {
    for (name, value) in url::form_urlencoded::parse(body) {
        if name.eq_ignore_ascii_case("Action") {
            return Err(RequestError::ConflictingOperation {
                service: req.service.clone(),
                first: named_by.to_owned(),
                second: format!("body (read as a form) Action {value:?}"),
            });
        }
        if json.contains_key(name.as_ref()) {
            return Err(RequestError::UnexpectedParameter {
                service: req.service.clone(),
                name: name.into_owned(),
                why: "the JSON body, read as a form, names this parameter a second time",
            });
        }
    }
    Ok(())
}

/// The JSON body parsed strictly: valid JSON (serde_json's nesting limit included), no object
/// repeating a key. A body the gateway cannot read is refused, not passed with no parameters:
/// the service may read it (Python's parser nests deeper) and act on parameters the policy
/// never saw.
fn json_body(req: &AwsRequest, body: &[u8]) -> Result<serde_json::Value, RequestError> {
    serde_json::from_slice::<UniqueKeys>(body)
        .map(|UniqueKeys(v)| v)
        .map_err(|e| RequestError::MalformedBody {
            service: req.service.clone(),
            reason: format!("not valid JSON: {e}"),
        })
}

/// [`json_body`] that must be an object (every JSON-RPC input is one).
fn json_object_body(
    req: &AwsRequest,
    body: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, RequestError> {
    match json_body(req, body)? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(RequestError::MalformedBody {
            service: req.service.clone(),
            reason: "the JSON body is not an object".to_owned(),
        }),
    }
}

/// A JSON value in which no object repeats a key. Parsers disagree on which of two values
/// they keep (first, last, or an error), so a repeated key is ambiguous.
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(serde_json::Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<UniqueKeys, E> {
        serde_json::Number::from_f64(v)
            .map(|n| UniqueKeys(serde_json::Value::Number(n)))
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(serde_json::Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(serde_json::Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(serde_json::Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(UniqueKeys(serde_json::Value::Array(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        use serde::de::Error;
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(A::Error::custom(format!("object repeats key {key:?}")));
            }
            let UniqueKeys(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(UniqueKeys(serde_json::Value::Object(out)))
    }
}

fn flatten_json(params: &mut Params, name: String, value: serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                flatten_json(params, format!("{name}.{k}"), v);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                flatten_json(params, format!("{name}.{}", i + 1), v);
            }
        }
        Value::String(s) => params.push(name, ParamValue::Str(s)),
        Value::Number(n) => params.push(name, ParamValue::Num(n)),
        Value::Bool(b) => params.push(name, ParamValue::Bool(b)),
        Value::Null => params.push(name, ParamValue::Null),
    }
}

/// The endpoint whose requests are the agent's own API (API Gateway stages): its paths, query
/// and body belong to that API, not to AWS, and name no AWS operation.
const USER_API_SERVICE: &str = "execute-api";

/// REST-JSON: the operation from method and path, the parameters from query and JSON body.
fn describe_rest_json(
    req: &mut AwsRequest,
    head: &Parts,
    body: Option<&[u8]>,
) -> Result<(), RequestError> {
    if req.service == USER_API_SERVICE {
        describe_user_api(req, head, body);
        return Ok(());
    }
    refuse_rpc_names(req, head, body)?;
    let mut seen = std::collections::HashSet::new();
    for (name, value) in query_pairs(head) {
        if !seen.insert(name.clone().into_owned()) {
            return Err(repeated(req, &name));
        }
        if !is_signing_param(&name) {
            req.params
                .push(name.into_owned(), ParamValue::Str(value.into_owned()));
        }
    }
    if req.service == "lambda" {
        describe_lambda(req, head);
    }
    let body = body.filter(|b| !b.is_empty());
    // Any JSON value is a valid Lambda payload; only an object carries named parameters.
    if let Some(serde_json::Value::Object(map)) = body.map(|b| json_body(req, b)).transpose()? {
        for (k, v) in map {
            flatten_json(&mut req.params, k, v);
        }
    }
    Ok(())
}

/// An API Gateway stage: query parameters, and a JSON body's fields when it is one (the body is
/// the agent's own payload, which may be anything).
fn describe_user_api(req: &mut AwsRequest, head: &Parts, body: Option<&[u8]>) {
    for (name, value) in query_pairs(head) {
        if !is_signing_param(&name) {
            req.params
                .push(name.into_owned(), ParamValue::Str(value.into_owned()));
        }
    }
    let json = body.and_then(|b| serde_json::from_slice(b).ok());
    if let Some(serde_json::Value::Object(map)) = json {
        for (k, v) in map {
            flatten_json(&mut req.params, k, v);
        }
    }
}

/// Refuses an RPC-style operation name (`X-Amz-Target`, or `Action` in the query or the body
/// read as a form) on a REST request, whose operation is its method and path: moto (and any
/// lenient front end) would dispatch the RPC name instead.
fn refuse_rpc_names(
    req: &AwsRequest,
    head: &Parts,
    body: Option<&[u8]>,
) -> Result<(), RequestError> {
    let route = || format!("REST route {} {}", head.method, head.uri.path());
    let conflict = |second: String| RequestError::ConflictingOperation {
        service: req.service.clone(),
        first: route(),
        second,
    };
    if let Some(target) = head.headers.get("x-amz-target") {
        let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
        return Err(conflict(format!("X-Amz-Target {target:?}")));
    }
    if let Some((_, v)) = query_pairs(head).find(|(k, _)| k.eq_ignore_ascii_case("Action")) {
        return Err(conflict(format!("query Action {v:?}")));
    }
    let body = body.unwrap_or_default();
    let in_body = url::form_urlencoded::parse(body).find(|(k, _)| k.eq_ignore_ascii_case("Action"));
    if let Some((_, v)) = in_body {
        return Err(conflict(format!("body (read as a form) Action {v:?}")));
    }
    Ok(())
}

/// Lambda's REST routes, best effort: the common function operations.
fn describe_lambda(req: &mut AwsRequest, head: &Parts) {
    let segments: Vec<String> = head
        .uri
        .path()
        .split('/')
        .skip(1)
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = head.method.as_str();
    let (operation, function) = match (method, segs.as_slice()) {
        ("GET", [_, "functions"] | [_, "functions", ""]) => ("ListFunctions", None),
        ("POST", [_, "functions"]) => ("CreateFunction", None),
        ("POST", [_, "functions", f, "invocations"]) => ("InvokeFunction", Some(*f)),
        ("POST", [_, "functions", f, "invoke-async", ..]) => ("InvokeAsync", Some(*f)),
        ("GET", [_, "functions", f]) => ("GetFunction", Some(*f)),
        ("DELETE", [_, "functions", f]) => ("DeleteFunction", Some(*f)),
        ("GET", [_, "functions", f, "configuration"]) => ("GetFunctionConfiguration", Some(*f)),
        ("PUT", [_, "functions", f, "configuration"]) => ("UpdateFunctionConfiguration", Some(*f)),
        ("PUT", [_, "functions", f, "code"]) => ("UpdateFunctionCode", Some(*f)),
        ("POST", [_, "functions", f, "versions"]) => ("PublishVersion", Some(*f)),
        ("GET", [_, "functions", f, "versions"]) => ("ListVersionsByFunction", Some(*f)),
        ("GET", [_, "functions", f, "policy"]) => ("GetPolicy", Some(*f)),
        _ => return,
    };
    set_operation(req, operation);
    if operation == "InvokeFunction" {
        // The API operation is `Invoke`; the IAM action is `lambda:InvokeFunction`.
        req.operation = Some("Invoke".to_owned());
    }
    if let Some(function) = function {
        req.params
            .push("FunctionName", ParamValue::Str(function.to_owned()));
        req.resource = Some(function.to_owned());
    }
}

/// Percent-decodes a path segment (no `+` to space: that is a form rule, not a path rule).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn head(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .expect("test request is well-formed")
            .into_parts()
            .0
    }

    fn auth(region: &str, service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDPLACEHOLDER/20261204/{region}/{service}/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00ff"
        )
    }

    const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

    #[test]
    fn ec2_query_action_and_params_from_form_body() {
        let a = auth("us-east-1", "ec2");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "ec2.us-east-1.amazonaws.com"),
                ("authorization", &a),
                ("content-type", FORM),
            ],
        );
        let body = b"Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MaxCount=50&MinCount=1\
                     &InstanceType=t3.micro";
        let r = classify(&h, Some(body)).expect("classifies");
        assert_eq!(r.action.as_deref(), Some("ec2:RunInstances"));
        assert_eq!(r.protocol, Protocol::Ec2Query);
        assert_eq!(
            (r.service.as_str(), r.signing_name.as_str()),
            ("ec2", "ec2")
        );
        assert_eq!(r.region, "us-east-1");
        assert_eq!(
            r.params.get("MaxCount").and_then(ParamValue::as_f64),
            Some(50.0)
        );
        assert_eq!(
            r.params.get("InstanceType"),
            Some(&ParamValue::Str("t3.micro".into()))
        );
        assert!(r.params.get("Action").is_none() && r.params.get("Version").is_none());
        assert!(r.needs_body());
        // Without the body, the head alone does not know the action yet.
        assert_eq!(classify(&h, None).expect("classifies").action, None);
    }

    #[test]
    fn sts_global_endpoint_and_query_string_action() {
        let h = head(
            "GET",
            "/?Action=GetCallerIdentity&Version=2011-06-15",
            &[("host", "sts.amazonaws.com")],
        );
        let r = classify(&h, None).expect("classifies");
        assert_eq!(r.action.as_deref(), Some("sts:GetCallerIdentity"));
        assert_eq!(r.region, "us-east-1");
        assert_eq!(r.protocol, Protocol::Query);
        assert_eq!(r.client_signature, ClientSignature::Unsigned);
    }

    #[test]
    fn scope_region_wins_on_a_global_host() {
        let a = auth("us-west-2", "sts");
        let h = head(
            "POST",
            "/",
            &[("host", "sts.amazonaws.com"), ("authorization", &a)],
        );
        assert_eq!(classify(&h, None).expect("classifies").region, "us-west-2");
    }

    #[test]
    fn iam_and_sqs_query() {
        let a = auth("us-east-1", "iam");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "iam.amazonaws.com"),
                ("authorization", &a),
                ("content-type", FORM),
            ],
        );
        let r = classify(
            &h,
            Some(b"Action=CreateUser&UserName=bob&Version=2010-05-08"),
        )
        .expect("classifies");
        assert_eq!(r.action.as_deref(), Some("iam:CreateUser"));
        assert_eq!(r.resource.as_deref(), Some("bob"));

        let a = auth("eu-west-1", "sqs");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "sqs.eu-west-1.amazonaws.com"),
                ("authorization", &a),
                ("content-type", FORM),
            ],
        );
        let r = classify(&h, Some(b"Action=SendMessage&QueueUrl=q&MessageBody=hi"))
            .expect("classifies");
        assert_eq!(
            (r.action.as_deref(), r.protocol),
            (Some("sqs:SendMessage"), Protocol::Query)
        );
    }

    #[test]
    fn json_target_names_the_action() {
        let a = auth("us-east-1", "dynamodb");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "dynamodb.us-east-1.amazonaws.com"),
                ("authorization", &a),
                ("x-amz-target", "DynamoDB_20120810.PutItem"),
                ("content-type", "application/x-amz-json-1.0"),
            ],
        );
        let body = br#"{"TableName":"t","Item":{"id":{"S":"1"},"n":{"N":"5"}},"Tags":[1,true]}"#;
        let r = classify(&h, Some(body)).expect("classifies");
        assert_eq!(r.action.as_deref(), Some("dynamodb:PutItem"));
        assert_eq!(r.protocol, Protocol::Json10);
        assert_eq!(r.resource.as_deref(), Some("t"));
        assert_eq!(
            r.params.get("Item.id.S"),
            Some(&ParamValue::Str("1".into()))
        );
        assert_eq!(
            r.params.get("Tags.1").and_then(ParamValue::as_f64),
            Some(1.0)
        );
        assert_eq!(r.params.get("Tags.2"), Some(&ParamValue::Bool(true)));

        let a = auth("us-east-1", "secretsmanager");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "secretsmanager.us-east-1.amazonaws.com"),
                ("authorization", &a),
                ("x-amz-target", "secretsmanager.GetSecretValue"),
                ("content-type", "application/x-amz-json-1.1"),
            ],
        );
        let r = classify(&h, Some(br#"{"SecretId":"db"}"#)).expect("classifies");
        assert_eq!(r.action.as_deref(), Some("secretsmanager:GetSecretValue"));
        assert_eq!(
            (r.protocol, r.resource.as_deref()),
            (Protocol::Json11, Some("db"))
        );
    }

    #[test]
    fn sqs_json_protocol_is_detected_from_the_request() {
        let a = auth("us-east-1", "sqs");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "sqs.us-east-1.amazonaws.com"),
                ("authorization", &a),
                ("x-amz-target", "AmazonSQS.SendMessage"),
                ("content-type", "application/x-amz-json-1.0"),
            ],
        );
        let r = classify(&h, Some(b"{}")).expect("classifies");
        assert_eq!(
            (r.action.as_deref(), r.protocol),
            (Some("sqs:SendMessage"), Protocol::Json10)
        );
    }

    #[test]
    fn cloudwatch_signs_as_monitoring_and_acts_as_cloudwatch() {
        let a = auth("us-east-1", "monitoring");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "monitoring.us-east-1.amazonaws.com"),
                ("authorization", &a),
                ("content-type", FORM),
            ],
        );
        let r = classify(&h, Some(b"Action=PutMetricData")).expect("classifies");
        assert_eq!(r.signing_name, "monitoring");
        assert_eq!(r.action.as_deref(), Some("cloudwatch:PutMetricData"));
    }

    #[test]
    fn lambda_invoke_is_invoke_function() {
        let a = auth("us-west-2", "lambda");
        let h = head(
            "POST",
            concat!(
                "/2015-03-31/functions/",
                "arn%3Aaws%3Alambda%3Aus-west-2%3A1%3Afunction%3Af%3Alive/invocations"
            ),
            &[
                ("host", "lambda.us-west-2.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        let r = classify(&h, Some(b"{}")).expect("classifies");
        assert_eq!(r.action.as_deref(), Some("lambda:InvokeFunction"));
        assert_eq!(r.operation.as_deref(), Some("Invoke"));
        assert_eq!(
            r.resource.as_deref(),
            Some("arn:aws:lambda:us-west-2:1:function:f:live")
        );
        assert_eq!(r.protocol, Protocol::RestJson);
    }

    #[test]
    fn unknown_rest_json_route_has_no_action() {
        let a = auth("us-west-2", "lambda");
        let h = head(
            "PATCH",
            "/2015-03-31/whatever",
            &[
                ("host", "lambda.us-west-2.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        assert_eq!(classify(&h, None).expect("classifies").action, None);
    }

    #[test]
    fn scope_contradicting_host_is_refused() {
        let a = auth("us-west-2", "ec2");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "ec2.us-east-1.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::RegionMismatch { .. })
        ));

        let a = auth("us-east-1", "s3");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "ec2.us-east-1.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::ServiceMismatch { .. })
        ));

        let a = auth("us-east-1", "ec2");
        let h = head(
            "GET",
            "/b/k",
            &[
                ("host", "s3.us-east-1.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::ServiceMismatch { .. })
        ));
    }

    #[test]
    fn unknown_host_with_scope_is_signed_for_the_scope() {
        let a = auth("eu-west-1", "newservice");
        let h = head(
            "POST",
            "/",
            &[
                ("host", "newservice.eu-west-1.amazonaws.com"),
                ("authorization", &a),
            ],
        );
        let r = classify(&h, None).expect("classifies");
        assert_eq!(
            (r.service.as_str(), r.signing_name.as_str()),
            ("newservice", "newservice")
        );
        assert_eq!((r.protocol, r.action.clone()), (Protocol::Unknown, None));
    }

    #[test]
    fn refusals_of_head_problems() {
        let h = head("GET", "/", &[("host", "example.com")]);
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::NotAwsHost { .. })
        ));
        let h = head("GET", "/", &[]);
        assert_eq!(classify(&h, None), Err(RequestError::MissingHost));
        let h = head("GET", "/", &[("host", "newservice.amazonaws.com")]);
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::UnknownService { .. })
        ));
        let h = head("GET", "/", &[("host", "ec2.amazonaws.com")]);
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::UnknownRegion { .. })
        ));
        let h = head(
            "GET",
            "/",
            &[
                ("host", "ec2.us-east-1.amazonaws.com"),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKID/2026/ec2, Signature=x",
                ),
            ],
        );
        assert!(matches!(
            classify(&h, None),
            Err(RequestError::MalformedAuthorization { .. })
        ));
    }

    #[test]
    fn authority_stands_in_for_a_missing_host_header() {
        let h = head(
            "GET",
            "https://sts.amazonaws.com/?Action=GetCallerIdentity",
            &[],
        );
        let r = classify(&h, None).expect("classifies");
        assert_eq!(r.host, "sts.amazonaws.com");
    }

    #[test]
    fn client_signatures_are_told_apart() {
        let h = head(
            "GET",
            "/k?X-Amz-Signature=ab&X-Amz-Credential=AKID%2F20261204%2Fus-east-1%2Fs3%2F\
             aws4_request",
            &[("host", "b.s3.amazonaws.com")],
        );
        let r = classify(&h, None).expect("classifies");
        assert!(matches!(
            r.client_signature,
            ClientSignature::Presigned(Some(_))
        ));
        assert!(r.params.get("X-Amz-Signature").is_none());

        let h = head(
            "GET",
            "/k",
            &[
                ("host", "b.s3.amazonaws.com"),
                (
                    "authorization",
                    "AWS4-ECDSA-P256-SHA256 Credential=AKID/20261204/s3/aws4_request, \
                     SignedHeaders=host, Signature=1",
                ),
            ],
        );
        let r = classify(&h, None).expect("classifies");
        assert!(matches!(
            r.client_signature,
            ClientSignature::HeaderV4a { .. }
        ));
    }

    #[test]
    fn protocol_hint_for_failed_requests() {
        let h = head("POST", "/", &[("x-amz-target", "X.Y"), ("host", "bad")]);
        assert_eq!(protocol_hint(&h), Protocol::Json11);
        let h = head(
            "POST",
            "/",
            &[("host", "ec2.amazonaws.com"), ("content-type", FORM)],
        );
        assert_eq!(protocol_hint(&h), Protocol::Ec2Query);
        let h = head("GET", "/b", &[("host", "s3.amazonaws.com")]);
        assert_eq!(protocol_hint(&h), Protocol::RestXml);
        let h = head("GET", "/", &[("host", "example.com")]);
        assert_eq!(protocol_hint(&h), Protocol::Unknown);
    }

    #[test]
    fn percent_decoding_keeps_plus_and_bad_escapes() {
        assert_eq!(percent_decode("a%20b+c%7Ed%20%C3%A9.txt"), "a b+c~d é.txt");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    proptest::proptest! {
        #[test]
        fn classify_never_panics(
            host in "[a-zA-Z0-9.:-]{0,40}(\\.amazonaws\\.com)?",
            path in "/[a-zA-Z0-9%/?&=.~+*-]{0,40}",
            auth in "[ -~]{0,80}",
            target in "[ -~]{0,30}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut headers = vec![("host", host.as_str()), ("x-amz-target", target.as_str())];
            headers.push(("authorization", auth.as_str()));
            if let Ok(uri) = path.parse::<http::Uri>() {
                let h = head("POST", &uri.to_string(), &headers);
                let _ = classify(&h, Some(&body));
                let _ = protocol_hint(&h);
            }
        }

        #[test]
        fn percent_decode_inverts_encoding(s in "\\PC{0,20}") {
            let encoded: String = s.bytes().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(percent_decode(&encoded), s);
        }
    }
}

#[cfg(test)]
#[path = "request_break_tests.rs"]
mod break_tests;
