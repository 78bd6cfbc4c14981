//! Masking: secret fields of an AWS answer replaced before the agent (or a recording) sees them.
//!
//! The gateway asks a [`Masker`] (built from the policy's `[[mask]]` entries plus the
//! [`DEFAULT_RESPONSE_MASKS`] table, which always applies) for the fields of a call's action.
//! `None` means nothing to mask: the answer streams through byte for byte. Otherwise the
//! gateway buffers the answer and calls [`mask_response`].
//!
//! # Field syntax
//!
//! - A bare name (`SecretString`) matches a JSON member or XML element of that name anywhere.
//! - A dotted path (`Credentials.SecretAccessKey`, `Item.password.S`) matches when the names
//!   leading to the value end with those components. JSON array levels are transparent
//!   (`SecretValues.SecretString`, `SecretValues[].SecretString` and `SecretValues[0].x` all
//!   name every element's member); in XML every element is a component, `member` and `item`
//!   wrappers included, so a bare name is the portable choice.
//! - Names compare ASCII case-insensitively: a policy spelling `secretstring` must not leak the
//!   secret, and masking a same-named field by mistake costs nothing but a visible marker.
//! - Namespace prefixes of XML elements are ignored (`<a:SessionToken>` is `SessionToken`).
//!
//! # What a masked value becomes
//!
//! - A JSON string becomes [`MARKER`], except under a blob name ([`BLOB_NAMES`]: base64 data
//!   such as `SecretBinary`, or DynamoDB's `B`/`BS`) where it becomes the base64 of the marker,
//!   so SDKs that decode the blob do not fail, and under DynamoDB's `N`/`NS`, where it becomes
//!   `"0"`, so a masked number attribute still parses as a number.
//! - A JSON number becomes `0`, keeping the type an SDK expects; booleans and nulls are kept
//!   (they carry at most one bit and replacing them would break typed parsers).
//! - A masked object or array keeps its shape; every string and number inside is masked by the
//!   rules above (so masking DynamoDB's `password` attribute masks its `{"S": ...}` value).
//! - XML text (and CDATA) inside a masked element becomes the escaped marker, or the base64
//!   marker under a blob name; element structure and attributes are kept.
//! - Everything else in the body is copied byte for byte: key order, spacing, number spelling.
//!
//! The conditional default for SSM (`Value` only when the sibling `Type` is `SecureString`) is
//! implemented for JSON, the only protocol SSM speaks.
//!
//! # Integrity headers
//!
//! When the body changed: `x-amz-crc32` (DynamoDB) is recomputed over the bytes sent, when it
//! was present; every `x-amz-checksum-*` header (and `Content-MD5`) is removed since it
//! describes the original body; `Content-Length` is set and `Transfer-Encoding` dropped. A
//! gzip answer is decompressed, masked and sent back uncompressed with `Content-Encoding`
//! removed: botocore checks `x-amz-crc32` over the bytes on the wire, which are then the
//! uncompressed body the new CRC is computed over. When nothing changed, the original bytes go
//! out and no header is touched.
//!
//! # Failing closed
//!
//! A body of a masked action that cannot be masked (not JSON or XML, malformed, an unknown
//! `Content-Encoding`, too large once decompressed) is a [`MaskError`]: the gateway must then
//! refuse the answer rather than pass a secret it could not hide.

use std::{io::Read as _, ops::Range};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use crate::policy::Mask;

/// What a masked text value is replaced with.
pub const MARKER: &str = "<masked by interceptor>";

/// What [`mask_json_or_xml_text`] records instead of a body it could not mask.
pub const WITHHELD: &str = "<body withheld by interceptor: it could not be masked>";

/// A gzip answer larger than this once decompressed is refused, not masked (a gzip bomb would
/// otherwise exhaust the daemon's memory).
pub const MAX_DECOMPRESSED_BYTES: u64 = 64 * 1024 * 1024;

/// Names whose values are base64 blobs that clients decode: masked with the base64 of the
/// marker. Compared case-insensitively, except DynamoDB's one-letter type tags (exact).
pub const BLOB_NAMES: &[&str] = &[
    "SecretBinary",
    "Plaintext",
    "PrivateKeyPlaintext",
    "authorizationToken",
];

/// DynamoDB attribute-value tags holding base64 (`B`, `BS`) and numbers as strings (`N`, `NS`).
const DYNAMODB_BLOB_TAGS: &[&str] = &["B", "BS"];
const DYNAMODB_NUMBER_TAGS: &[&str] = &["N", "NS"];

/// A field of the default tables.
#[derive(Debug, Clone, Copy)]
pub enum DefaultField {
    /// A field in the syntax of a policy `[[mask]]` (bare name or dotted path).
    Named(&'static str),
    /// SSM: the `Value` of an object whose `Type` is `SecureString`.
    SecureStringValue,
}

use DefaultField::{Named, SecureStringValue};

/// Answer fields masked for these actions whatever the policy says: `(actions, fields)`.
///
/// Kept small and exact: each entry names a secret the service really returns.
pub const DEFAULT_RESPONSE_MASKS: &[(&[&str], &[DefaultField])] = &[
    (
        &[
            "secretsmanager:GetSecretValue",
            "secretsmanager:BatchGetSecretValue",
        ],
        &[Named("SecretString"), Named("SecretBinary")],
    ),
    (
        &[
            "ssm:GetParameter",
            "ssm:GetParameters",
            "ssm:GetParametersByPath",
            "ssm:GetParameterHistory",
        ],
        &[SecureStringValue],
    ),
    (
        &[
            "sts:AssumeRole",
            "sts:AssumeRoleWithWebIdentity",
            "sts:AssumeRoleWithSAML",
            "sts:AssumeRoot",
            "sts:GetSessionToken",
            "sts:GetFederationToken",
        ],
        &[Named("SecretAccessKey"), Named("SessionToken")],
    ),
    (&["iam:CreateAccessKey"], &[Named("SecretAccessKey")]),
    (
        &[
            "iam:CreateServiceSpecificCredential",
            "iam:ResetServiceSpecificCredential",
        ],
        &[Named("ServicePassword")],
    ),
    // EC2's XML names the PEM private key in lower camel case.
    (&["ec2:CreateKeyPair"], &[Named("keyMaterial")]),
    (
        &["ecr:GetAuthorizationToken"],
        &[Named("authorizationToken")],
    ),
    (
        &[
            "redshift:GetClusterCredentials",
            "redshift:GetClusterCredentialsWithIAM",
        ],
        &[Named("DbPassword")],
    ),
    (
        &["kms:Decrypt", "kms:GenerateDataKey"],
        &[Named("Plaintext")],
    ),
    (
        &["kms:GenerateDataKeyPair"],
        &[Named("PrivateKeyPlaintext")],
    ),
    (
        &["cognito-identity:GetCredentialsForIdentity"],
        &[Named("SecretKey"), Named("SessionToken")],
    ),
];

/// Request fields kept out of recordings for these actions (never applied to what is
/// forwarded): secrets an agent sends.
pub const DEFAULT_REQUEST_MASKS: &[(&[&str], &[DefaultField])] = &[
    (
        &[
            "secretsmanager:CreateSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:UpdateSecret",
        ],
        &[Named("SecretString"), Named("SecretBinary")],
    ),
    // PutParameter may omit Type when it overwrites a SecureString: mask every Value.
    (&["ssm:PutParameter"], &[Named("Value")]),
    (
        &["iam:CreateLoginProfile", "iam:UpdateLoginProfile"],
        &[Named("Password")],
    ),
    (
        &["iam:ChangePassword"],
        &[Named("OldPassword"), Named("NewPassword")],
    ),
    (
        &[
            "rds:CreateDBInstance",
            "rds:ModifyDBInstance",
            "rds:CreateDBCluster",
            "rds:ModifyDBCluster",
            "redshift:CreateCluster",
            "redshift:ModifyCluster",
        ],
        &[Named("MasterUserPassword")],
    ),
    (&["kms:Encrypt"], &[Named("Plaintext")]),
    (
        &["sts:AssumeRoleWithWebIdentity"],
        &[Named("WebIdentityToken")],
    ),
    (&["sts:AssumeRoleWithSAML"], &[Named("SAMLAssertion")]),
];

/// Why an answer could not be masked. The gateway then refuses it (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The body of a masked action does not parse as JSON.
    #[error("cannot mask answer: body is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The body of a masked action is not well-formed XML.
    #[error("cannot mask answer: body is not well-formed XML at byte {offset}: {reason}")]
    Xml { offset: usize, reason: &'static str },
    /// Neither the content type nor the first byte says JSON or XML.
    #[error("cannot mask answer: content type {content_type:?} is neither JSON nor XML")]
    UnknownFormat { content_type: String },
    /// A `Content-Encoding` other than gzip or identity.
    #[error("cannot mask answer: content-encoding {encoding:?} is not supported (only gzip)")]
    UnsupportedEncoding { encoding: String },
    /// The gzip stream is corrupt or truncated.
    #[error("cannot mask answer: gzip body does not decompress: {0}")]
    Gzip(#[source] std::io::Error),
    /// The decompressed body is larger than [`MAX_DECOMPRESSED_BYTES`].
    #[error("cannot mask answer: decompressed body exceeds {limit} bytes")]
    TooLarge { limit: u64 },
}

/// The masks of the policy plus the defaults, asked once per call.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    policy: Vec<Mask>,
}

impl Masker {
    /// A masker for the policy's `[[mask]]` entries; the default tables always apply too.
    pub fn new(policy_masks: &[Mask]) -> Self {
        Self {
            policy: policy_masks.to_vec(),
        }
    }

    /// The answer fields to mask for `action` (`service:Action`, None when unclassified), or
    /// None when there are none and the answer may stream through untouched.
    pub fn fields_for(&self, action: Option<&str>) -> Option<MaskFields> {
        self.collect(action, DEFAULT_RESPONSE_MASKS)
    }

    /// The request fields to keep out of recordings for `action`: the policy's mask fields
    /// (a secret named for the answer is hidden in the request too) plus
    /// [`DEFAULT_REQUEST_MASKS`]. For [`mask_json_or_xml_text`]; never for forwarded bytes.
    pub fn request_fields_for(&self, action: Option<&str>) -> Option<MaskFields> {
        self.collect(action, DEFAULT_REQUEST_MASKS)
    }

    fn collect(
        &self,
        action: Option<&str>,
        defaults: &[(&[&str], &[DefaultField])],
    ) -> Option<MaskFields> {
        let mut fields = MaskFields::default();
        for mask in &self.policy {
            if mask.actions.iter().any(|pattern| pattern.matches(action)) {
                mask.fields.iter().for_each(|field| fields.add_named(field));
            }
        }
        if let Some(action) = action {
            for (actions, defaults) in defaults {
                if actions.iter().any(|a| a.eq_ignore_ascii_case(action)) {
                    defaults.iter().for_each(|field| fields.add(*field));
                }
            }
        }
        (!fields.is_empty()).then_some(fields)
    }
}

/// The fields to mask in one body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaskFields {
    /// Each field's path components; a bare name is a path of one.
    paths: Vec<Vec<String>>,
    /// The SSM SecureString rule applies.
    secure_string_values: bool,
}

impl MaskFields {
    /// Fields in the `[[mask]]` syntax (see the module documentation).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Self {
        let mut fields = Self::default();
        names
            .iter()
            .for_each(|name| fields.add_named(name.as_ref()));
        fields
    }

    /// Adds SSM's conditional rule: `Value` when the sibling `Type` is `SecureString`.
    pub fn with_secure_string_values(mut self) -> Self {
        self.secure_string_values = true;
        self
    }

    /// True when nothing would be masked.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.secure_string_values
    }

    /// Whether a flattened parameter name (`SecretString`, `Parameters.member.1.Value`,
    /// `Item.password.S`) names a masked field; numeric and `member` components are skipped,
    /// as list levels are. For masking classified parameters in recordings.
    pub fn masks_name(&self, flattened: &str) -> bool {
        let path: Vec<&str> = flattened
            .split('.')
            .filter(|part| !part.is_empty() && !is_list_component(part))
            .collect();
        self.matches(&path)
    }

    fn add(&mut self, field: DefaultField) {
        match field {
            Named(name) => self.add_named(name),
            SecureStringValue => self.secure_string_values = true,
        }
    }

    fn add_named(&mut self, field: &str) {
        let path = parse_field(field);
        if !path.is_empty() && !self.paths.contains(&path) {
            self.paths.push(path);
        }
    }

    /// Whether the value reached through `path` (innermost name last) is masked.
    fn matches<S: AsRef<str>>(&self, path: &[S]) -> bool {
        self.paths.iter().any(|field| {
            path.len() >= field.len()
                && path[path.len() - field.len()..]
                    .iter()
                    .zip(field)
                    .all(|(have, want)| have.as_ref().eq_ignore_ascii_case(want))
        })
    }
}

/// `SecretValues[].SecretString` -> [SecretValues, SecretString]; empty components dropped.
fn parse_field(field: &str) -> Vec<String> {
    field
        .split('.')
        .map(|part| part.split('[').next().unwrap_or_default().trim())
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

fn is_list_component(part: &str) -> bool {
    part == "member" || part.bytes().all(|b| b.is_ascii_digit())
}

/// The result of [`mask_response`].
#[derive(Debug, Clone)]
pub struct MaskOutcome {
    /// False when no field matched: `body` is then the original bytes, headers untouched.
    pub changed: bool,
    /// The body to send to the agent.
    pub body: Bytes,
}

/// Masks an answer body and fixes its integrity headers (see the module documentation).
///
/// `headers` are the answer's headers; they change only when the body does.
pub fn mask_response(
    fields: &MaskFields,
    headers: &mut HeaderMap,
    body: Bytes,
) -> Result<MaskOutcome, MaskError> {
    let unchanged = |body| {
        Ok(MaskOutcome {
            changed: false,
            body,
        })
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return unchanged(body);
    }
    let gzipped = match header_text(headers, header::CONTENT_ENCODING) {
        None => false,
        Some(enc) if enc.eq_ignore_ascii_case("identity") || enc.is_empty() => false,
        Some(enc) if enc.eq_ignore_ascii_case("gzip") || enc.eq_ignore_ascii_case("x-gzip") => true,
        Some(enc) => return Err(MaskError::UnsupportedEncoding { encoding: enc }),
    };
    let plain = if gzipped {
        gunzip(&body)?
    } else {
        body.clone()
    };
    let content_type = header_text(headers, header::CONTENT_TYPE);
    let format = Format::detect(content_type.as_deref(), &plain, false)?;
    let Some(masked) = mask_body(fields, format, &plain)? else {
        return unchanged(body);
    };

    fix_integrity_headers(headers, &masked, gzipped);
    Ok(MaskOutcome {
        changed: true,
        body: masked,
    })
}

/// Masks a body for a recording (a request body, say secretsmanager:CreateSecret's
/// SecretString). JSON, XML and form-encoded (query protocol) bodies are masked; a body that
/// cannot be parsed comes back as [`WITHHELD`], never as itself. Never use this on bytes that
/// are forwarded: the result may not be what the peer expects.
pub fn mask_json_or_xml_text(
    fields: &MaskFields,
    content_type: Option<&str>,
    bytes: &[u8],
) -> Bytes {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Bytes::copy_from_slice(bytes);
    }
    let masked = Format::detect(content_type, bytes, true)
        .and_then(|format| mask_body(fields, format, bytes));
    match masked {
        Ok(Some(masked)) => masked,
        Ok(None) => Bytes::copy_from_slice(bytes),
        Err(_) => Bytes::from_static(WITHHELD.as_bytes()),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let value = headers.get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).trim().to_owned())
}

fn gunzip(body: &[u8]) -> Result<Bytes, MaskError> {
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(MaskError::Gzip)?;
    if plain.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(MaskError::TooLarge {
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    Ok(plain.into())
}

fn fix_integrity_headers(headers: &mut HeaderMap, body: &[u8], was_gzipped: bool) {
    if headers.contains_key("x-amz-crc32") {
        let crc = crc32fast::hash(body);
        headers.insert("x-amz-crc32", HeaderValue::from(crc));
    }
    let stale: Vec<header::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-amz-checksum-"))
        .cloned()
        .collect();
    for name in stale {
        headers.remove(name);
    }
    headers.remove("content-md5");
    if was_gzipped {
        headers.remove(header::CONTENT_ENCODING);
    }
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Xml,
    Form,
}

impl Format {
    /// By content type, else by the first byte. Form bodies only for recordings of requests.
    fn detect(
        content_type: Option<&str>,
        body: &[u8],
        allow_form: bool,
    ) -> Result<Self, MaskError> {
        let ct = content_type.unwrap_or_default().to_ascii_lowercase();
        if ct.contains("json") {
            return Ok(Format::Json);
        }
        if ct.contains("xml") {
            return Ok(Format::Xml);
        }
        if allow_form && ct.contains("x-www-form-urlencoded") {
            return Ok(Format::Form);
        }
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{' | b'[') => Ok(Format::Json),
            Some(b'<') => Ok(Format::Xml),
            // A bare JSON scalar holds no names, but it is still JSON, not an unknown format.
            _ if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() => Ok(Format::Json),
            _ => Err(MaskError::UnknownFormat { content_type: ct }),
        }
    }
}

/// The masked body, or None when no field matched.
fn mask_body(fields: &MaskFields, format: Format, body: &[u8]) -> Result<Option<Bytes>, MaskError> {
    let edits = match format {
        Format::Json => json_edits(fields, body)?,
        Format::Xml => xml_edits(fields, body)?,
        Format::Form => form_edits(fields, body),
    };
    Ok((!edits.is_empty()).then(|| apply(body, edits)))
}

/// One replacement of a byte range of the body.
#[derive(Debug)]
struct Edit {
    range: Range<usize>,
    with: String,
}

/// Builds the new body; edits never overlap (each value is masked once, by construction).
fn apply(body: &[u8], mut edits: Vec<Edit>) -> Bytes {
    edits.sort_by_key(|edit| edit.range.start);
    let mut out = Vec::with_capacity(body.len() + edits.len() * MARKER.len());
    let mut copied = 0;
    for edit in edits {
        debug_assert!(edit.range.start >= copied, "mask edits overlap");
        out.extend_from_slice(&body[copied..edit.range.start]);
        out.extend_from_slice(edit.with.as_bytes());
        copied = edit.range.end;
    }
    out.extend_from_slice(&body[copied..]);
    out.into()
}

/// How a masked value is spelled, chosen by the name that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spelling {
    Text,
    Base64,
    Number,
}

impl Spelling {
    fn for_name(name: Option<&str>) -> Self {
        let Some(name) = name else {
            return Spelling::Text;
        };
        if DYNAMODB_NUMBER_TAGS.contains(&name) {
            Spelling::Number
        } else if DYNAMODB_BLOB_TAGS.contains(&name)
            || BLOB_NAMES
                .iter()
                .any(|blob| blob.eq_ignore_ascii_case(name))
        {
            Spelling::Base64
        } else {
            Spelling::Text
        }
    }

    /// The replacement text, before the format's quoting or escaping.
    fn value(self) -> String {
        match self {
            Spelling::Text => MARKER.to_owned(),
            Spelling::Base64 => base64::engine::general_purpose::STANDARD.encode(MARKER),
            Spelling::Number => "0".to_owned(),
        }
    }
}

// --- JSON -------------------------------------------------------------------------------------

/// The edits masking a JSON body, which is checked first with serde_json: the walker below then
/// only meets valid JSON, nested no deeper than serde_json's recursion limit (128).
fn json_edits(fields: &MaskFields, body: &[u8]) -> Result<Vec<Edit>, MaskError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(MaskError::Json)?;
    let mut walker = JsonWalker {
        src: body,
        pos: 0,
        fields,
        edits: Vec::new(),
    };
    walker.value(&mut Vec::new(), false);
    Ok(walker.edits)
}

/// What a JSON value was, for the SSM rule that looks at siblings.
enum Scanned {
    Str(Range<usize>),
    Other,
}

struct JsonWalker<'a> {
    src: &'a [u8],
    pos: usize,
    fields: &'a MaskFields,
    edits: Vec<Edit>,
}

impl JsonWalker<'_> {
    fn peek(&self) -> u8 {
        self.src.get(self.pos).copied().unwrap_or(0)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    /// Walks one value; `path` holds the member names leading to it, `masked` whether an
    /// enclosing value is masked already.
    fn value(&mut self, path: &mut Vec<String>, masked: bool) -> Scanned {
        self.skip_ws();
        let start = self.pos;
        match self.peek() {
            b'{' => self.object(path, masked),
            b'[' => self.array(path, masked),
            b'"' => {
                let range = self.string();
                if masked {
                    self.mask_leaf(range.clone(), Spelling::for_name(last(path)), true);
                }
                return Scanned::Str(range);
            }
            b'-' | b'0'..=b'9' => {
                while matches!(self.peek(), b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    self.pos += 1;
                }
                if masked {
                    self.mask_leaf(start..self.pos, Spelling::Number, false);
                }
            }
            // true, false, null: kept; skip the letters.
            _ => {
                while self.peek().is_ascii_alphabetic() {
                    self.pos += 1;
                }
            }
        }
        Scanned::Other
    }

    fn object(&mut self, path: &mut Vec<String>, masked: bool) {
        self.pos += 1;
        let mut secure_type = false;
        let mut value_string = None;
        loop {
            self.skip_ws();
            match self.peek() {
                b'}' => {
                    self.pos += 1;
                    break;
                }
                b',' => {
                    self.pos += 1;
                    continue;
                }
                b'"' => {}
                // Unreachable for JSON serde_json accepted; stop rather than loop forever.
                _ => return,
            }
            let key = self.key();
            self.skip_ws();
            self.pos += 1; // the ':' serde_json guaranteed
            path.push(key);
            let member_masked = masked || self.fields.matches(path);
            let scanned = self.value(path, member_masked);
            let key = path.pop().unwrap_or_default();
            if let Scanned::Str(range) = scanned {
                if key == "Type" && self.decode(range.clone()) == "SecureString" {
                    secure_type = true;
                } else if key == "Value" && !member_masked {
                    value_string = Some(range);
                }
            }
        }
        if self.fields.secure_string_values
            && secure_type
            && let Some(range) = value_string
        {
            self.mask_leaf(range, Spelling::Text, true);
        }
    }

    fn array(&mut self, path: &mut Vec<String>, masked: bool) {
        self.pos += 1;
        loop {
            self.skip_ws();
            match self.peek() {
                b']' | 0 => {
                    self.pos += 1;
                    return;
                }
                b',' => self.pos += 1,
                _ => {
                    self.value(path, masked);
                }
            }
        }
    }

    /// The range of a string token, quotes included.
    fn string(&mut self) -> Range<usize> {
        let start = self.pos;
        self.pos += 1;
        while self.pos < self.src.len() {
            match self.src[self.pos] {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    break;
                }
                _ => self.pos += 1,
            }
        }
        start..self.pos.min(self.src.len())
    }

    fn key(&mut self) -> String {
        let range = self.string();
        self.decode(range)
    }

    /// The text of a string token; escapes resolved.
    fn decode(&self, range: Range<usize>) -> String {
        // serde_json accepted the whole body, so every string token in it decodes.
        serde_json::from_slice::<String>(&self.src[range]).unwrap_or_default()
    }

    fn mask_leaf(&mut self, range: Range<usize>, spelling: Spelling, quoted: bool) {
        let value = spelling.value();
        let with = if quoted {
            serde_json::Value::String(value).to_string()
        } else {
            value
        };
        if self.src[range.clone()] != *with.as_bytes() {
            self.edits.push(Edit { range, with });
        }
    }
}

fn last(path: &[String]) -> Option<&str> {
    path.last().map(String::as_str)
}

// --- XML --------------------------------------------------------------------------------------

/// One open element.
struct Open {
    /// The qualified name, to check the end tag against.
    qname: String,
    masked: bool,
}

/// The edits masking an XML body: the text of every masked element (and of its descendants).
fn xml_edits(fields: &MaskFields, src: &[u8]) -> Result<Vec<Edit>, MaskError> {
    let mut scan = XmlScan {
        src,
        pos: 0,
        stack: Vec::new(),
        path: Vec::new(),
        run: None,
    };
    let mut edits = Vec::new();
    let mut saw_root = false;
    while scan.pos < src.len() {
        if src[scan.pos] != b'<' {
            let end = find(src, scan.pos, b"<").unwrap_or(src.len());
            let content = !src[scan.pos..end].iter().all(u8::is_ascii_whitespace);
            scan.extend_run(end, content);
            continue;
        }
        let rest = &src[scan.pos..];
        if rest.starts_with(b"<![CDATA[") {
            let end = scan.until(b"]]>", "unterminated CDATA section")?;
            scan.extend_run(end, end - scan.pos > b"<![CDATA[]]>".len());
        } else if rest.starts_with(b"<!--") {
            let end = scan.until(b"-->", "unterminated comment")?;
            scan.extend_run(end, false);
        } else if rest.starts_with(b"<?") || rest.starts_with(b"<!") {
            scan.flush(&mut edits);
            let end = scan.until(b">", "unterminated declaration")?;
            if src[scan.pos..end].contains(&b'[') {
                return Err(scan.error("document type with an internal subset"));
            }
            scan.pos = end;
        } else if rest.starts_with(b"</") {
            scan.flush(&mut edits);
            scan.end_tag()?;
        } else {
            scan.flush(&mut edits);
            scan.start_tag(fields)?;
            saw_root = true;
        }
    }
    scan.flush(&mut edits);
    if !scan.stack.is_empty() {
        return Err(scan.error("element not closed at the end of the body"));
    }
    if !saw_root {
        return Err(scan.error("no element"));
    }
    Ok(edits)
}

struct XmlScan<'a> {
    src: &'a [u8],
    pos: usize,
    stack: Vec<Open>,
    /// Local names of the open elements, for path matching.
    path: Vec<String>,
    /// The run of text, CDATA and comments since the last tag: (start, has content).
    run: Option<(usize, bool)>,
}

impl XmlScan<'_> {
    fn error(&self, reason: &'static str) -> MaskError {
        MaskError::Xml {
            offset: self.pos,
            reason,
        }
    }

    /// The end of the construct at `pos` that closes with `close`.
    fn until(&self, close: &[u8], reason: &'static str) -> Result<usize, MaskError> {
        find(self.src, self.pos + 1, close)
            .map(|at| at + close.len())
            .ok_or_else(|| self.error(reason))
    }

    fn extend_run(&mut self, end: usize, content: bool) {
        let (start, had) = self.run.unwrap_or((self.pos, false));
        self.run = Some((start, had || content));
        self.pos = end;
    }

    /// Masks the pending run of text when the innermost open element is masked.
    fn flush(&mut self, edits: &mut Vec<Edit>) {
        let Some((start, content)) = self.run.take() else {
            return;
        };
        let masked = self.stack.last().is_some_and(|open| open.masked);
        if !(content && masked) {
            return;
        }
        let spelling = match Spelling::for_name(self.path.last().map(String::as_str)) {
            Spelling::Base64 => Spelling::Base64,
            // XML has no types: every other masked text is the marker.
            Spelling::Text | Spelling::Number => Spelling::Text,
        };
        let with = escape_xml(&spelling.value());
        if self.src[start..self.pos] != *with.as_bytes() {
            edits.push(Edit {
                range: start..self.pos,
                with,
            });
        }
    }

    fn start_tag(&mut self, fields: &MaskFields) -> Result<(), MaskError> {
        let name_start = self.pos + 1;
        let name_end = self.src[name_start..]
            .iter()
            .position(|b| b.is_ascii_whitespace() || matches!(b, b'/' | b'>'))
            .map_or(self.src.len(), |n| name_start + n);
        if name_end == name_start {
            return Err(self.error("element without a name"));
        }
        let end = self.tag_end()?;
        let self_closing = self.src[end - 2] == b'/';
        let qname = String::from_utf8_lossy(&self.src[name_start..name_end]).into_owned();
        self.pos = end;
        if self_closing {
            return Ok(());
        }
        self.path.push(local_name(&qname).to_owned());
        let masked =
            self.stack.last().is_some_and(|open| open.masked) || fields.matches(&self.path);
        self.stack.push(Open { qname, masked });
        Ok(())
    }

    /// The position after the `>` closing the tag at `pos`, skipping quoted attribute values.
    fn tag_end(&self) -> Result<usize, MaskError> {
        let mut quote = None;
        for (at, &b) in self.src.iter().enumerate().skip(self.pos + 1) {
            match (quote, b) {
                (Some(q), _) if b == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'<') => return Err(self.error("'<' inside a tag")),
                (None, b'>') => return Ok(at + 1),
                (None, _) => {}
            }
        }
        Err(self.error("unterminated tag"))
    }

    fn end_tag(&mut self) -> Result<(), MaskError> {
        let end = self.until(b">", "unterminated end tag")?;
        let name = String::from_utf8_lossy(&self.src[self.pos + 2..end - 1])
            .trim()
            .to_owned();
        let open = self
            .stack
            .pop()
            .ok_or_else(|| self.error("end tag without a start tag"))?;
        if open.qname != name {
            return Err(self.error("end tag does not match the open element"));
        }
        self.path.pop();
        self.pos = end;
        Ok(())
    }
}

fn local_name(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| from + at)
}

// --- form (query-protocol requests, recordings only) -----------------------------------------

/// Masks the values of `name=value` pairs whose name (list levels skipped) is a masked field.
fn form_edits(fields: &MaskFields, body: &[u8]) -> Vec<Edit> {
    let marker: String = url::form_urlencoded::byte_serialize(MARKER.as_bytes()).collect();
    let mut edits = Vec::new();
    let mut start = 0;
    for pair in body.split(|&b| b == b'&') {
        let end = start + pair.len();
        if let Some(eq) = pair.iter().position(|&b| b == b'=') {
            let name: String = url::form_urlencoded::parse(&pair[..eq])
                .next()
                .map(|(name, _)| name.into_owned())
                .unwrap_or_default();
            let value = start + eq + 1..end;
            if fields.masks_name(&name) && body[value.clone()] != *marker.as_bytes() {
                edits.push(Edit {
                    range: value,
                    with: marker.clone(),
                });
            }
        }
        start = end + 1;
    }
    edits
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::policy::Policy;

    const SECRET: &str = "hunter2-very-secret";

    fn defaults(action: &str) -> MaskFields {
        Masker::default()
            .fields_for(Some(action))
            .expect("the action has default masks")
    }

    fn policy_masker(masks: &str) -> Masker {
        let policy = Policy::parse(masks, "test").expect("test policy parses");
        Masker::new(&policy.masks)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                *name,
                HeaderValue::from_str(value).expect("test header value"),
            );
        }
        map
    }

    fn header<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
        map.get(name).map(|v| v.to_str().expect("ascii header"))
    }

    fn json_of(body: &[u8]) -> Value {
        serde_json::from_slice(body).expect("masked body is valid JSON")
    }

    fn text(body: &[u8]) -> &str {
        std::str::from_utf8(body).expect("utf-8 body")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("gzip to memory");
        encoder.finish().expect("gzip to memory")
    }

    fn base64_marker() -> String {
        base64::engine::general_purpose::STANDARD.encode(MARKER)
    }

    #[test]
    fn get_secret_value_masks_the_secret_and_stays_valid_json() {
        let body = format!(
            r#"{{"ARN":"arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
"CreatedDate":1.523477145713E9,"Name":"db","SecretString":"{SECRET}",
"VersionId":"EXAMPLE1-90ab-cdef-fedc-ba987SECRET1","VersionStages":["AWSCURRENT"]}}"#
        );
        let mut map = headers(&[
            ("content-type", "application/x-amz-json-1.1"),
            ("content-length", &body.len().to_string()),
        ]);
        let out = mask_response(
            &defaults("secretsmanager:GetSecretValue"),
            &mut map,
            body.into(),
        )
        .expect("masks");

        assert!(out.changed);
        assert!(!text(&out.body).contains(SECRET));
        let value = json_of(&out.body);
        assert_eq!(value["SecretString"], MARKER);
        assert_eq!(value["Name"], "db");
        assert_eq!(value["VersionStages"], json!(["AWSCURRENT"]));
        // Untouched parts keep their spelling, number included.
        assert!(text(&out.body).contains("1.523477145713E9"));
        assert_eq!(
            header(&map, "content-length"),
            Some(out.body.len().to_string().as_str())
        );
    }

    #[test]
    fn secret_binary_becomes_base64_of_the_marker() {
        let body = r#"{"Name":"cert","SecretBinary":"c2VjcmV0IGJ5dGVz"}"#;
        let out = mask_response(
            &defaults("secretsmanager:GetSecretValue"),
            &mut HeaderMap::new(),
            body.into(),
        )
        .expect("masks");
        let value = json_of(&out.body);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value["SecretBinary"].as_str().expect("a string"))
            .expect("still base64");
        assert_eq!(decoded, MARKER.as_bytes());
    }

    #[test]
    fn batch_get_secret_value_masks_every_entry() {
        let body = json!({"SecretValues": [
            {"Name": "a", "SecretString": SECRET},
            {"Name": "b", "SecretBinary": "AAEC"},
        ], "Errors": []})
        .to_string();
        let fields = defaults("secretsmanager:BatchGetSecretValue");
        let out = mask_response(&fields, &mut HeaderMap::new(), body.into()).expect("masks");
        let value = json_of(&out.body);
        assert_eq!(value["SecretValues"][0]["SecretString"], MARKER);
        assert_eq!(value["SecretValues"][1]["SecretBinary"], base64_marker());
        assert_eq!(value["SecretValues"][1]["Name"], "b");
    }

    fn dynamodb_item() -> String {
        json!({"Item": {
            "user": {"S": "alice"},
            "password": {"S": SECRET},
            "age": {"N": "42"},
        }})
        .to_string()
    }

    #[test]
    fn dynamodb_item_masked_by_path_gets_a_matching_crc32() {
        let masker = policy_masker(
            "[[mask]]\nactions = [\"dynamodb:GetItem\"]\nfields = [\"Item.password.S\"]\n",
        );
        let fields = masker
            .fields_for(Some("dynamodb:GetItem"))
            .expect("policy mask applies");
        let body = dynamodb_item();
        let mut map = headers(&[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-crc32", &crc32fast::hash(body.as_bytes()).to_string()),
        ]);
        let out = mask_response(&fields, &mut map, body.into()).expect("masks");

        let value = json_of(&out.body);
        assert_eq!(value["Item"]["password"]["S"], MARKER);
        assert_eq!(value["Item"]["user"]["S"], "alice");
        assert_eq!(value["Item"]["age"]["N"], "42");
        assert_eq!(
            header(&map, "x-amz-crc32"),
            Some(crc32fast::hash(&out.body).to_string().as_str())
        );
    }

    #[test]
    fn dynamodb_attribute_masked_by_name_keeps_its_type() {
        let masker = policy_masker(
            "[[mask]]\nactions = [\"dynamodb:*\"]\nfields = [\"password\", \"pin\", \"key\"]\n",
        );
        let fields = masker
            .fields_for(Some("dynamodb:Query"))
            .expect("policy mask applies");
        let body = json!({"Items": [{
            "password": {"S": SECRET},
            "pin": {"N": "1234"},
            "key": {"B": "c2VjcmV0"},
            "name": {"S": "kept"},
        }], "Count": 1})
        .to_string();
        let out = mask_response(&fields, &mut HeaderMap::new(), body.into()).expect("masks");
        let item = &json_of(&out.body)["Items"][0];
        assert_eq!(item["password"]["S"], MARKER);
        assert_eq!(item["pin"]["N"], "0");
        assert_eq!(item["key"]["B"], base64_marker());
        assert_eq!(item["name"]["S"], "kept");
    }

    #[test]
    fn gzip_dynamodb_answer_is_sent_back_plain_with_its_crc32() {
        let fields = MaskFields::from_names(&["password"]);
        let compressed = gzip(dynamodb_item().as_bytes());
        let mut map = headers(&[
            ("content-type", "application/x-amz-json-1.0"),
            ("content-encoding", "gzip"),
            ("content-length", &compressed.len().to_string()),
            ("x-amz-crc32", &crc32fast::hash(&compressed).to_string()),
        ]);
        let out = mask_response(&fields, &mut map, compressed.into()).expect("masks");

        assert!(out.changed);
        assert_eq!(json_of(&out.body)["Item"]["password"]["S"], MARKER);
        assert_eq!(header(&map, "content-encoding"), None);
        assert_eq!(
            header(&map, "content-length"),
            Some(out.body.len().to_string().as_str())
        );
        assert_eq!(
            header(&map, "x-amz-crc32"),
            Some(crc32fast::hash(&out.body).to_string().as_str())
        );
    }

    #[test]
    fn gzip_answer_with_nothing_to_mask_passes_untouched() {
        let fields = MaskFields::from_names(&["nothing-here"]);
        let compressed = Bytes::from(gzip(dynamodb_item().as_bytes()));
        let mut map = headers(&[("content-encoding", "gzip"), ("x-amz-crc32", "12345")]);
        let before = map.clone();
        let out = mask_response(&fields, &mut map, compressed.clone()).expect("scans");
        assert!(!out.changed);
        assert_eq!(out.body, compressed);
        assert_eq!(map, before);
    }

    #[test]
    fn sts_assume_role_xml_hides_secret_key_and_token() {
        let body = include_str!("../../tests/data/mask/sts_assume_role.xml");
        let mut map = headers(&[("content-type", "text/xml"), ("content-length", "1")]);
        let out = mask_response(&defaults("sts:AssumeRole"), &mut map, body.into()).expect("masks");

        let masked = text(&out.body);
        assert!(!masked.contains("wJalrXUtnFEMI"));
        assert!(!masked.contains("EXAMPLETOKEN"));
        assert!(
            masked.contains("<SecretAccessKey>&lt;masked by interceptor&gt;</SecretAccessKey>")
        );
        assert!(masked.contains("<SessionToken>&lt;masked by interceptor&gt;</SessionToken>"));
        assert!(masked.contains("<AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>"));
        assert!(masked.contains("<Expiration>2026-01-01T00:00:00Z</Expiration>"));
        assert_eq!(
            header(&map, "content-length"),
            Some(out.body.len().to_string().as_str())
        );
    }

    #[test]
    fn ec2_create_key_pair_xml_hides_the_private_key() {
        let body = include_str!("../../tests/data/mask/ec2_create_key_pair.xml");
        let out = mask_response(
            &defaults("ec2:CreateKeyPair"),
            &mut headers(&[("content-type", "text/xml;charset=UTF-8")]),
            body.into(),
        )
        .expect("masks");
        let masked = text(&out.body);
        assert!(!masked.contains("PRIVATE KEY"));
        assert!(masked.contains("<keyMaterial>&lt;masked by interceptor&gt;</keyMaterial>"));
        assert!(masked.contains("<keyName>my-key-pair</keyName>"));
        assert!(masked.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    }

    #[test]
    fn xml_namespace_prefixes_cdata_and_masked_parents() {
        let fields = MaskFields::from_names(&["Credentials"]);
        let body = "<a:R xmlns:a=\"urn:x\"><a:Credentials><a:Key>k1</a:Key>\
                    <a:Token><![CDATA[t<1>]]></a:Token></a:Credentials><a:Id>i</a:Id></a:R>";
        let out = mask_response(&fields, &mut HeaderMap::new(), body.into()).expect("masks");
        let masked = text(&out.body);
        let marker = "&lt;masked by interceptor&gt;";
        assert_eq!(
            masked,
            format!(
                "<a:R xmlns:a=\"urn:x\"><a:Credentials><a:Key>{marker}</a:Key>\
                 <a:Token>{marker}</a:Token></a:Credentials><a:Id>i</a:Id></a:R>"
            )
        );
    }

    #[test]
    fn ssm_masks_secure_string_values_only() {
        let body = json!({"Parameters": [
            {"Name": "/db/password", "Type": "SecureString", "Value": SECRET, "Version": 3},
            {"Name": "/db/host", "Type": "String", "Value": "db.internal", "Version": 1},
            {"Name": "/db/ports", "Type": "StringList", "Value": "5432,5433"},
        ], "InvalidParameters": []})
        .to_string();
        let out = mask_response(
            &defaults("ssm:GetParameters"),
            &mut HeaderMap::new(),
            body.into(),
        )
        .expect("masks");
        let params = &json_of(&out.body)["Parameters"];
        assert_eq!(params[0]["Value"], MARKER);
        assert_eq!(params[0]["Version"], 3);
        assert_eq!(params[1]["Value"], "db.internal");
        assert_eq!(params[2]["Value"], "5432,5433");
    }

    #[test]
    fn ssm_get_parameter_value_before_type_is_masked() {
        let body =
            format!(r#"{{"Parameter":{{"Value":"{SECRET}","Name":"p","Type":"SecureString"}}}}"#);
        let out = mask_response(
            &defaults("ssm:GetParameter"),
            &mut HeaderMap::new(),
            body.into(),
        )
        .expect("masks");
        assert_eq!(json_of(&out.body)["Parameter"]["Value"], MARKER);
    }

    #[test]
    fn actions_without_masks_stream_untouched() {
        let masker = policy_masker(
            "[[mask]]\nactions = [\"secretsmanager:GetSecretValue\"]\nfields = [\"x\"]\n",
        );
        assert!(masker.fields_for(Some("ec2:DescribeInstances")).is_none());
        assert!(masker.fields_for(None).is_none());
        assert!(masker.fields_for(Some("s3:GetObject")).is_none());
    }

    #[test]
    fn unmasked_answer_keeps_exact_bytes_and_headers() {
        let body = Bytes::from_static(b"{ \"Name\" : \"db\",\n  \"Size\": 1.50 }");
        let mut map = headers(&[
            ("content-type", "application/x-amz-json-1.1"),
            ("content-length", "999"),
            ("x-amz-crc32", "1"),
            ("x-amz-checksum-crc32", "AAAAAA=="),
        ]);
        let before = map.clone();
        let out = mask_response(
            &defaults("secretsmanager:GetSecretValue"),
            &mut map,
            body.clone(),
        )
        .expect("scans");
        assert!(!out.changed);
        assert_eq!(out.body, body);
        assert_eq!(map, before);
    }

    #[test]
    fn checksum_headers_are_removed_when_the_body_changes() {
        let body = format!(r#"{{"SecretString":"{SECRET}"}}"#);
        let mut map = headers(&[
            ("x-amz-checksum-crc32", "AAAAAA=="),
            ("x-amz-checksum-type", "FULL_OBJECT"),
            ("content-md5", "AAAAAAAAAAAAAAAAAAAAAA=="),
            ("transfer-encoding", "chunked"),
            ("x-amzn-requestid", "kept"),
        ]);
        mask_response(
            &defaults("secretsmanager:GetSecretValue"),
            &mut map,
            body.into(),
        )
        .expect("masks");
        assert_eq!(header(&map, "x-amz-checksum-crc32"), None);
        assert_eq!(header(&map, "x-amz-checksum-type"), None);
        assert_eq!(header(&map, "content-md5"), None);
        assert_eq!(header(&map, "transfer-encoding"), None);
        assert_eq!(header(&map, "x-amzn-requestid"), Some("kept"));
        // No crc32 was sent, so none is invented.
        assert_eq!(header(&map, "x-amz-crc32"), None);
    }

    #[test]
    fn bodies_that_cannot_be_masked_are_errors() {
        let fields = defaults("secretsmanager:GetSecretValue");
        let json = headers(&[("content-type", "application/x-amz-json-1.1")]);
        let cases: Vec<(HeaderMap, &[u8])> = vec![
            (json.clone(), br#"{"SecretString":"hunter2""#),
            (
                headers(&[("content-type", "text/xml")]),
                b"<A><SecretString>x</A>",
            ),
            (HeaderMap::new(), b"SecretString=hunter2"),
            (headers(&[("content-encoding", "br")]), b"{}"),
            (headers(&[("content-encoding", "gzip")]), b"not gzip"),
        ];
        for (mut map, body) in cases {
            let result = mask_response(&fields, &mut map, Bytes::copy_from_slice(body));
            assert!(result.is_err(), "{:?} must fail closed", text(body));
        }
        let err = mask_response(&fields, &mut json.clone(), Bytes::from_static(b"{\"a\":"))
            .expect_err("truncated JSON");
        assert!(matches!(err, MaskError::Json(_)));
        assert!(
            err.to_string()
                .starts_with("cannot mask answer: body is not valid JSON")
        );
    }

    #[test]
    fn policy_fields_are_case_insensitive_and_add_to_defaults() {
        let masker = policy_masker(
            "[[mask]]\nactions = [\"secretsmanager:Get*\"]\n\
             fields = [\"secretstring\", \"Name\"]\n",
        );
        let fields = masker
            .fields_for(Some("secretsmanager:GetSecretValue"))
            .expect("masks");
        let body =
            json!({"Name": "db", "SecretString": SECRET, "SecretBinary": "AAEC"}).to_string();
        let out = mask_response(&fields, &mut HeaderMap::new(), body.into()).expect("masks");
        let value = json_of(&out.body);
        assert_eq!(value["Name"], MARKER);
        assert_eq!(value["SecretString"], MARKER);
        assert_eq!(value["SecretBinary"], base64_marker());
    }

    #[test]
    fn star_mask_covers_unclassified_calls() {
        let masker = policy_masker("[[mask]]\nactions = [\"*\"]\nfields = [\"token\"]\n");
        assert!(masker.fields_for(None).is_some());
    }

    #[test]
    fn masking_twice_changes_nothing_the_second_time() {
        let fields = defaults("secretsmanager:BatchGetSecretValue");
        let body = json!({"SecretValues": [{"SecretString": SECRET, "SecretBinary": "AA=="}]});
        let first =
            mask_response(&fields, &mut HeaderMap::new(), body.to_string().into()).expect("masks");
        let second =
            mask_response(&fields, &mut HeaderMap::new(), first.body.clone()).expect("masks");
        assert!(first.changed);
        assert!(!second.changed);
    }

    #[test]
    fn recording_helper_masks_request_bodies() {
        let masker = Masker::default();
        let create = masker
            .request_fields_for(Some("secretsmanager:CreateSecret"))
            .expect("CreateSecret has request masks");
        let body = json!({"Name": "db", "SecretString": SECRET}).to_string();
        let masked =
            mask_json_or_xml_text(&create, Some("application/x-amz-json-1.1"), body.as_bytes());
        assert_eq!(json_of(&masked)["SecretString"], MARKER);

        let login = masker
            .request_fields_for(Some("iam:CreateLoginProfile"))
            .expect("masks");
        let form =
            format!("Action=CreateLoginProfile&UserName=bob&Password={SECRET}&Version=2010-05-08");
        let masked = mask_json_or_xml_text(
            &login,
            Some("application/x-www-form-urlencoded; charset=utf-8"),
            form.as_bytes(),
        );
        assert_eq!(
            text(&masked),
            "Action=CreateLoginProfile&UserName=bob&Password=%3Cmasked+by+interceptor%3E\
             &Version=2010-05-08"
        );

        let cut = &body.as_bytes()[..body.len() / 2];
        assert_eq!(
            mask_json_or_xml_text(&create, None, cut),
            WITHHELD.as_bytes()
        );
    }

    #[test]
    fn flattened_parameter_names_match_fields() {
        let fields = MaskFields::from_names(&["Parameter.Value", "SecretString"]);
        assert!(fields.masks_name("SecretString"));
        assert!(fields.masks_name("Parameter.Value"));
        assert!(fields.masks_name("List.member.1.Parameter.Value"));
        assert!(!fields.masks_name("Value"));
        assert!(!fields.masks_name("Name"));
    }

    #[test]
    fn default_table_matches_actions_case_insensitively() {
        assert!(
            Masker::default()
                .fields_for(Some("STS:assumerole"))
                .is_some()
        );
        assert!(
            Masker::default()
                .fields_for(Some("iam:CreateLoginProfile"))
                .is_none()
        );
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let key = prop::sample::select(vec![
            "secret",
            "Type",
            "Value",
            "N",
            "B",
            "S",
            "name",
            "Item",
            "\u{e9}\\\"",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![Just("SecureString".to_owned()), any::<String>()].prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Every string and number under a `secret` member is masked.
    fn assert_hidden(value: &Value, under_secret: bool) {
        match value {
            Value::String(s) if under_secret => {
                assert!(
                    s == MARKER || *s == base64_marker() || s == "0",
                    "leaked {s:?}"
                );
            }
            Value::Number(n) if under_secret => assert_eq!(n.as_i64(), Some(0)),
            Value::Array(items) => items.iter().for_each(|v| assert_hidden(v, under_secret)),
            Value::Object(members) => members
                .iter()
                .for_each(|(k, v)| assert_hidden(v, under_secret || k == "secret")),
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn masking_json_yields_valid_json_and_hides_the_field(
            value in arbitrary_json(),
            pretty in any::<bool>(),
        ) {
            let body = if pretty {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            }
            .expect("serialises");
            let fields = MaskFields::from_names(&["secret", "Item.S"]).with_secure_string_values();
            let mut map = headers(&[("x-amz-crc32", "0")]);
            let out = mask_response(&fields, &mut map, body.clone().into())
                .expect("valid JSON masks");
            let masked: Value = serde_json::from_slice(&out.body).expect("output is valid JSON");
            assert_hidden(&masked, false);
            if out.changed {
                let crc = crc32fast::hash(&out.body).to_string();
                prop_assert_eq!(header(&map, "x-amz-crc32"), Some(crc.as_str()));
            } else {
                prop_assert_eq!(&out.body[..], body.as_bytes());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
            let fields = MaskFields::from_names(&["a", "b.c"]).with_secure_string_values();
            let types = ["application/json", "text/xml", "application/x-www-form-urlencoded"];
            for content_type in types {
                let mut map = headers(&[("content-type", content_type)]);
                let _ = mask_response(&fields, &mut map, Bytes::from(body.clone()));
                let _ = mask_json_or_xml_text(&fields, Some(content_type), &body);
            }
        }

        #[test]
        fn xml_like_bytes_never_panic(body in "[<>/a-c!?\\[\\]CDAT\" =-]{0,80}") {
            let fields = MaskFields::from_names(&["a", "b.c"]);
            let _ = mask_response(&fields, &mut HeaderMap::new(), Bytes::from(body));
        }
    }
}
