//! Tests of re-signing: the AWS SigV4 test suite, botocore's signatures for the request forms
//! of shared/cases 1-4, and the rules of what is stripped, kept and refused.

use super::*;
use crate::aws::request::{AwsRequest, ClientSignature, Params, Protocol, classify};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4")
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read test data {}: {e}", path.display()))
        .replace("\r\n", "\n")
}

/// Percent-encodes what cannot appear on the wire in a request target (spaces, non-ASCII),
/// as a client would before sending.
fn wire_encode(target: &str) -> String {
    let mut out = String::new();
    for b in target.bytes() {
        if b == b' ' || !b.is_ascii() {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    out
}

/// A request from a test-suite `request.txt`; `None` for obs-folded header lines, which no
/// HTTP/1.1 server hands on.
fn parse_suite_request(text: &str) -> Option<(Parts, Vec<u8>)> {
    let mut lines = text.split('\n');
    let request_line = lines.next()?;
    let mut words = request_line.split(' ');
    let method = words.next()?;
    let rest: Vec<&str> = words.collect();
    // The target may contain raw spaces; the protocol version is the last word.
    let target = rest[..rest.len().saturating_sub(1)].join(" ");
    let mut builder = http::Request::builder()
        .method(method)
        .uri(wire_encode(&target));
    let mut body_lines = Vec::new();
    let mut in_body = false;
    for line in lines {
        if in_body {
            body_lines.push(line);
        } else if line.is_empty() {
            in_body = true;
        } else if line.starts_with(' ') || line.starts_with('\t') {
            return None;
        } else {
            let (name, value) = line.split_once(':')?;
            builder = builder.header(name, value);
        }
    }
    let body = body_lines
        .join("\n")
        .trim_end_matches('\n')
        .as_bytes()
        .to_vec();
    let (parts, ()) = builder.body(()).ok()?.into_parts();
    Some((parts, body))
}

fn header_line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn authorization(parts: &Parts) -> &str {
    parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .expect("signed")
}

fn target(service: &str, signing_name: &str, region: &str, host: &str) -> AwsRequest {
    AwsRequest {
        service: service.to_owned(),
        signing_name: signing_name.to_owned(),
        region: region.to_owned(),
        protocol: Protocol::Unknown,
        operation: None,
        action: None,
        resource: None,
        bucket: None,
        key: None,
        params: Params::default(),
        host: host.to_owned(),
        client_signature: ClientSignature::Unsigned,
    }
}

/// Signs one vector of the AWS suite; `rules` is `None` to use resign()'s own selection.
fn run_suite_vector(name: &str, rules: Option<Rules>) {
    let dir = data_dir().join("v4").join(name);
    let context: serde_json::Value =
        serde_json::from_str(&read(&dir.join("context.json"))).expect("context.json is JSON");
    let (mut parts, body) =
        parse_suite_request(&read(&dir.join("request.txt"))).expect("request.txt parses");
    let expected = read(&dir.join("header-signed-request.txt"));

    let c = &context["credentials"];
    let creds = Credentials::new(
        c["access_key_id"].as_str().expect("access key"),
        c["secret_access_key"].as_str().expect("secret"),
        c["token"].as_str().map(str::to_owned),
        None,
        "test",
    );
    let time = humantime::parse_rfc3339(context["timestamp"].as_str().expect("timestamp"))
        .expect("timestamp is RFC 3339");
    let service = context["service"].as_str().expect("service");
    let region = context["region"].as_str().expect("region");
    if context["sign_body"].as_bool() == Some(true) {
        // The agent declared its body hash; the gateway keeps the header, recomputed.
        let hash = hex::encode(Sha256::digest(&body));
        parts
            .headers
            .insert(CONTENT_SHA256, HeaderValue::from_str(&hash).expect("hex"));
    }
    // The agent's placeholder signature must not survive.
    parts.headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=PLACEHOLDER/x, Signature=bad"),
    );

    let host = request_host(&parts).expect("vectors have a Host");
    let req = target(service, service, region, &host);
    let payload = Payload::Bytes(&body);
    let result = match rules {
        None => resign(&mut parts, &req, payload, &creds, time),
        Some(rules) => sign_with_rules(&mut parts, &req, rules, payload, &creds, time),
    };
    result.unwrap_or_else(|e| panic!("{name}: {e}"));

    let want = header_line(&expected, "Authorization").expect("expected Authorization");
    assert_eq!(authorization(&parts), want, "{name}: Authorization");
    for h in ["X-Amz-Date", "X-Amz-Security-Token", "x-amz-content-sha256"] {
        let got = parts.headers.get(h).and_then(|v| v.to_str().ok());
        assert_eq!(got, header_line(&expected, h), "{name}: {h}");
    }
}

/// Vectors that sign with the rules of every service but S3 (double encoding, normalised).
const NORMALIZED_VECTORS: &[&str] = &[
    "double-encode-path",
    "double-url-encode",
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-header-value-trim",
    "get-relative-normalized",
    "get-relative-relative-normalized",
    "get-slash-dot-slash-normalized",
    "get-slash-normalized",
    "get-slash-pointless-dot-normalized",
    "get-slashes-normalized",
    "get-unreserved",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
];

/// Vectors signed without path normalisation, S3's path rule.
const UNNORMALIZED_VECTORS: &[&str] = &[
    "get-relative-relative-unnormalized",
    "get-relative-unnormalized",
    "get-slash-dot-slash-unnormalized",
    "get-slash-pointless-dot-unnormalized",
    "get-slash-unnormalized",
    "get-slashes-unnormalized",
    "get-space-unnormalized",
];

#[test]
fn aws_suite_space_vector_with_single_encoding() {
    // The CRT suite signs this one with the path encoded once (the aws-sigv4 crate skips it
    // for that reason); it still checks normalisation of an encoded path.
    let rules = Rules {
        encode_path_twice: false,
        normalize_path: true,
        always_content_sha256: false,
    };
    run_suite_vector("get-space-normalized", Some(rules));
}

// Left out, with the reason:
// - get-header-value-multiline: an obs-folded header, which HTTP/1.1 servers reject.
// - get-utf8: the vector's path is raw UTF-8 (never on the wire) in its decoded form.
// - post-sts-header-after: adds the session token after signing, a mode never used here.

#[test]
fn aws_suite_vectors_through_resign() {
    for name in NORMALIZED_VECTORS {
        run_suite_vector(name, None);
    }
}

#[test]
fn aws_suite_unnormalized_vectors_with_the_s3_path_rule() {
    // The S3 path rule (as sent, no normalisation) without S3's x-amz-content-sha256 header,
    // which these vectors do not sign.
    let rules = Rules {
        encode_path_twice: false,
        normalize_path: false,
        always_content_sha256: false,
    };
    for name in UNNORMALIZED_VECTORS {
        run_suite_vector(name, Some(rules));
    }
}

// --- the classic AWS SigV4 suite as shipped in botocore's sdist (1.44.8) ------------------

/// The classic suite's fixed identity, as botocore's `tests/unit/auth/test_sigv4.py` signs it.
const CLASSIC_ACCESS_KEY: &str = "AKIDEXAMPLE";
const CLASSIC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const CLASSIC_REGION: &str = "us-east-1";
const CLASSIC_SERVICE: &str = "service";

/// Cases signed with resign()'s own selection for a service other than S3.
const CLASSIC_THROUGH_RESIGN: &[&str] = &[
    "get-header-key-duplicate",
    "get-header-value-order",
    "get-header-value-trim",
    "get-unreserved",
    "get-vanilla",
    "get-vanilla-empty-query-key",
    "get-vanilla-query",
    "get-vanilla-query-order-encoded",
    "get-vanilla-query-order-key",
    "get-vanilla-query-order-key-case",
    "get-vanilla-query-order-value",
    "get-vanilla-query-unreserved",
    "get-vanilla-utf8-query",
    "get-vanilla-with-session-token",
    "normalize-path/get-relative",
    "normalize-path/get-relative-relative",
    "normalize-path/get-slash",
    "normalize-path/get-slash-dot-slash",
    "normalize-path/get-slash-pointless-dot",
    "normalize-path/get-slashes",
    "normalize-path/get-special-character",
    "post-header-key-case",
    "post-header-key-sort",
    "post-header-value-case",
    "post-sts-token/post-sts-header-before",
    "post-vanilla",
    "post-vanilla-empty-query-value",
    "post-vanilla-query",
    "post-x-www-form-urlencoded",
    "post-x-www-form-urlencoded-parameters",
];

/// Cases whose path the suite writes decoded (a raw space, raw UTF-8) and signs encoded once:
/// the client sends it percent-encoded, and only single encoding gives the suite's canonical
/// path, a combination (normalised, encoded once) resign never picks.
const CLASSIC_SINGLE_ENCODED: &[&str] = &["get-utf8", "normalize-path/get-space"];

/// Cases left out, with the reason.
const CLASSIC_SKIPPED: &[(&str, &str)] = &[
    (
        "get-header-value-multiline",
        "an obs-folded header, which HTTP/1.1 servers reject",
    ),
    (
        "post-sts-token/post-sts-header-after",
        "adds the session token after signing, a mode never used here",
    ),
];

/// `20150830T123600Z` as a time.
fn parse_amz_date(value: &str) -> SystemTime {
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &value[0..4],
        &value[4..6],
        &value[6..8],
        &value[9..11],
        &value[11..13],
        &value[13..15]
    );
    humantime::parse_rfc3339(&rfc3339).unwrap_or_else(|e| panic!("X-Amz-Date {value}: {e}"))
}

/// Signs one case of the classic suite; `rules` is `None` for resign()'s own selection.
/// Returns what differs from the suite's canonical request, string to sign and Authorization.
fn run_classic_case(name: &str, rules: Option<Rules>) -> Vec<String> {
    let dir = data_dir().join("botocore-aws4-testsuite").join(name);
    let base = name.rsplit('/').next().expect("split yields one item");
    let file = |ext: &str| read(&dir.join(format!("{base}.{ext}")));
    let raw = file("req");
    let want_creq = file("creq");
    let parse = || parse_suite_request(&raw).unwrap_or_else(|| panic!("{name}: .req parses"));
    let (mut parts, body) = parse();

    // Like botocore, the session token is the one the canonical request shows.
    let token = header_line(&want_creq, "x-amz-security-token").map(str::to_owned);
    let creds = Credentials::new(CLASSIC_ACCESS_KEY, CLASSIC_SECRET, token, None, "test");
    let date_time = header_line(&raw, "X-Amz-Date").expect("every case has X-Amz-Date");
    let time = parse_amz_date(date_time);
    let host = request_host(&parts).expect("every case has a Host");
    let req = target(CLASSIC_SERVICE, CLASSIC_SERVICE, CLASSIC_REGION, &host);
    let rules_used = rules.unwrap_or_else(|| Rules::for_request(&req));

    // The canonical request and string to sign as sign_head builds them: the agent's signing
    // headers dropped, the signer's own added.
    let (mut head, _) = parse();
    for h in AGENT_SIGNING_HEADERS {
        head.headers.remove(*h);
    }
    let mut added = vec![("x-amz-date", date_time)];
    if let Some(token) = creds.session_token() {
        added.push(("x-amz-security-token", token));
    }
    let hash = payload_hash(&req, rules_used, Payload::Bytes(&body), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let canonical = canonical_request(&head, rules_used, &added, &hash);
    let scope = credential_scope(&date_time[..8], CLASSIC_REGION, CLASSIC_SERVICE);
    let sts = string_to_sign(date_time, &scope, &canonical);

    let payload = Payload::Bytes(&body);
    let result = match rules {
        None => resign(&mut parts, &req, payload, &creds, time),
        Some(rules) => sign_with_rules(&mut parts, &req, rules, payload, &creds, time),
    };
    if let Err(e) = result {
        return vec![format!("{name}: signing failed: {e}")];
    }

    let checks = [
        ("canonical request", canonical.text().to_owned(), want_creq),
        ("string to sign", sts, file("sts")),
        (
            "Authorization",
            authorization(&parts).to_owned(),
            file("authz"),
        ),
    ];
    checks
        .into_iter()
        .filter(|(_, got, want)| got != want)
        .map(|(what, got, want)| format!("{name}: {what}\n  got:  {got:?}\n  want: {want:?}"))
        .collect()
}

fn assert_classic_cases(names: &[&str], rules: Option<Rules>) {
    let failures: Vec<String> = names
        .iter()
        .flat_map(|name| run_classic_case(name, rules))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn classic_suite_through_resign() {
    assert_classic_cases(CLASSIC_THROUGH_RESIGN, None);
}

#[test]
fn classic_suite_decoded_paths_with_single_encoding() {
    let rules = Rules {
        encode_path_twice: false,
        normalize_path: true,
        always_content_sha256: false,
    };
    assert_classic_cases(CLASSIC_SINGLE_ENCODED, Some(rules));
}

#[test]
fn classic_suite_every_case_is_run_or_skipped_with_a_reason() {
    fn cases(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if !path.is_dir() {
                continue;
            }
            let name = path
                .file_name()
                .expect("entry has a name")
                .to_string_lossy();
            let case = format!("{prefix}{name}");
            if path.join(format!("{name}.req")).exists() {
                out.push(case);
            } else {
                cases(&path, &format!("{case}/"), out);
            }
        }
    }
    let mut found = Vec::new();
    cases(&data_dir().join("botocore-aws4-testsuite"), "", &mut found);
    found.sort();
    let mut listed: Vec<String> = CLASSIC_THROUGH_RESIGN
        .iter()
        .chain(CLASSIC_SINGLE_ENCODED)
        .chain(CLASSIC_SKIPPED.iter().map(|(name, _)| name))
        .map(|s| (*s).to_owned())
        .collect();
    listed.sort();
    assert_eq!(found, listed);
    assert_eq!(found.len(), 34);
}

// --- botocore's signatures for the shared/cases request forms -----------------------------

fn session_creds() -> Credentials {
    Credentials::new(
        "ASIASESSIONKEYEXAMPLE",
        "sessionSecret/Example+Key",
        Some("SESSION/TOKEN+example==".to_owned()),
        None,
        "test",
    )
}

fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-12-04T10:15:00Z").expect("fixed time")
}

struct BotocoreVector {
    name: String,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
    authorization: String,
}

fn botocore_vectors() -> Vec<BotocoreVector> {
    let text = read(&data_dir().join("botocore/vectors.txt"));
    let mut out = Vec::new();
    for block in text.split("== ").filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let name = lines.next().expect("name").to_owned();
        let (method, url) = lines
            .next()
            .and_then(|l| l.split_once(' '))
            .expect("request");
        let mut v = BotocoreVector {
            name,
            method: method.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: String::new(),
            authorization: String::new(),
        };
        for line in lines {
            if let Some(body) = line.strip_prefix("-- body: ") {
                v.body = body.to_owned();
            } else if let Some(auth) = line.strip_prefix("-- authorization: ") {
                v.authorization = auth.to_owned();
            } else if let Some((k, val)) = line.split_once(": ") {
                v.headers.push((k.to_owned(), val.to_owned()));
            }
        }
        out.push(v);
    }
    out
}

/// The agent's request: botocore's headers plus a placeholder signature and noise a proxy
/// hop may change.
fn agent_request(v: &BotocoreVector, target_override: Option<&str>) -> Parts {
    let uri: http::Uri = v.url.parse().expect("vector URL");
    let authority = uri.authority().expect("absolute URL");
    // botocore's Host drops the default port unless the request set one.
    let default_host = authority.host().to_owned();
    let target = target_override
        .unwrap_or_else(|| uri.path_and_query().map_or("/", |pq| pq.as_str()))
        .to_owned();
    let mut b = http::Request::builder()
        .method(v.method.as_str())
        .uri(target);
    if !v
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("host"))
    {
        b = b.header("host", default_host);
    }
    for (k, val) in &v.headers {
        b = b.header(k.as_str(), val.as_str());
    }
    let scope_service = v.authorization.split('/').nth(3).expect("scope service");
    let scope_region = v.authorization.split('/').nth(2).expect("scope region");
    let placeholder = format!(
        "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20261204/{scope_region}/{scope_service}/\
         aws4_request, SignedHeaders=host;x-amz-date, Signature=0000"
    );
    b = b
        .header("authorization", placeholder)
        .header("x-amz-date", "20261204T101400Z")
        .header("x-amz-security-token", "PLACEHOLDER-TOKEN")
        .header("user-agent", "aws-cli/2 placeholder")
        .header("expect", "100-continue");
    b.body(()).expect("vector request builds").into_parts().0
}

fn resign_vector(v: &BotocoreVector, target_override: Option<&str>) -> Parts {
    let mut parts = agent_request(v, target_override);
    let body = v.body.as_bytes();
    let req = classify(&parts, Some(body)).unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let payload = if req.streams_body() {
        Payload::ClientDeclared
    } else {
        Payload::Bytes(body)
    };
    resign(&mut parts, &req, payload, &session_creds(), now())
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    parts
}

fn vector(name: &str) -> BotocoreVector {
    botocore_vectors()
        .into_iter()
        .find(|v| v.name == name)
        .expect("vector exists")
}

#[test]
fn botocore_signatures_are_reproduced() {
    let vectors = botocore_vectors();
    assert!(vectors.len() >= 6);
    for v in &vectors {
        let parts = resign_vector(v, None);
        assert_eq!(authorization(&parts), v.authorization, "{}", v.name);
    }
}

#[test]
fn s3_key_is_encoded_once() {
    // Case 1: `a b+c~d é.txt` is sent as a%20b%2Bc~d%20%C3%A9.txt and signed exactly so.
    let v = vector("s3-key-encoded-once");
    let parts = resign_vector(&v, None);
    assert_eq!(authorization(&parts), v.authorization);
    assert_eq!(parts.uri.path(), "/b/a%20b%2Bc~d%20%C3%A9.txt");
    let canonical = "PUT\n/b/a%20b%2Bc~d%20%C3%A9.txt\n\ncontent-length:5\n\
                     content-type:text/plain\nhost:s3.us-east-1.amazonaws.com\n\
                     x-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:20261204T101500Z\n\
                     x-amz-security-token:SESSION/TOKEN+example==\n\n\
                     content-length;content-type;host;x-amz-content-sha256;x-amz-date;\
                     x-amz-security-token\nUNSIGNED-PAYLOAD";
    assert_eq!(
        signature_of(&parts),
        expected_signature(canonical, "us-east-1", "s3")
    );
}

#[test]
fn lambda_arn_path_is_encoded_twice() {
    // Case 2: the `%3A` of the ARN is `%253A` in the canonical request.
    let v = vector("lambda-arn-double-encoded");
    let parts = resign_vector(&v, None);
    assert_eq!(authorization(&parts), v.authorization);
    let canonical = "POST\n/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A\
                     123456789012%253Afunction%253Amy-fn%253Alive/invocations\n\n\
                     content-length:2\ncontent-type:application/json\n\
                     host:lambda.us-west-2.amazonaws.com\nx-amz-date:20261204T101500Z\n\
                     x-amz-security-token:SESSION/TOKEN+example==\n\n\
                     content-length;content-type;host;x-amz-date;x-amz-security-token\n\
                     44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    assert_eq!(
        signature_of(&parts),
        expected_signature(canonical, "us-west-2", "lambda")
    );
}

#[test]
fn raw_query_is_canonicalised_like_the_encoded_one() {
    // Case 3: `x*` becomes %2A, `acl` becomes `acl=`, sorted by name then value.
    let v = vector("s3-query-canonical");
    let parts = resign_vector(&v, Some("/?prefix=x*&Marker=a%2Fb&list-type=2&acl"));
    assert_eq!(authorization(&parts), v.authorization);
    // What is sent stays as the agent sent it.
    assert_eq!(
        parts.uri.query(),
        Some("prefix=x*&Marker=a%2Fb&list-type=2&acl")
    );

    let v = vector("s3-query-repeated");
    let parts = resign_vector(&v, Some("/?b=1&a=2&a=1&prefix=with%20space"));
    assert_eq!(authorization(&parts), v.authorization);
}

#[test]
fn host_is_signed_as_sent_with_its_port() {
    // Case 4: `Host: s3.us-east-1.amazonaws.com:443` is signed and sent byte for byte.
    let v = vector("s3-host-with-port");
    let parts = resign_vector(&v, None);
    assert_eq!(authorization(&parts), v.authorization);
    assert_eq!(parts.headers["host"], "s3.us-east-1.amazonaws.com:443");
}

/// The signature computed independently from a canonical request written out by hand.
fn expected_signature(canonical: &str, region: &str, service: &str) -> String {
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n20261204T101500Z\n20261204/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = aws_sigv4::sign::v4::generate_signing_key(
        "sessionSecret/Example+Key",
        now(),
        region,
        service,
    );
    aws_sigv4::sign::v4::calculate_signature(key, string_to_sign.as_bytes())
}

fn signature_of(parts: &Parts) -> &str {
    authorization(parts)
        .rsplit("Signature=")
        .next()
        .expect("a signature")
}

// --- what is stripped, kept and refused ---------------------------------------------------

fn s3_parts(headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method("PUT").uri("/b/k").header(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20261204/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=deadbeef",
    );
    b = b.header("host", "s3.us-east-1.amazonaws.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("test request builds").into_parts().0
}

fn resign_s3(parts: &mut Parts) -> Result<(), SignError> {
    let req = classify(parts, None).expect("classifies");
    resign(
        parts,
        &req,
        Payload::ClientDeclared,
        &session_creds(),
        now(),
    )
}

fn signed_headers(parts: &Parts) -> Vec<String> {
    let auth = authorization(parts);
    let list = auth
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|s| s.split(',').next());
    list.expect("SignedHeaders")
        .split(';')
        .map(str::to_owned)
        .collect()
}

#[test]
fn placeholder_signature_and_token_are_replaced() {
    let mut parts = s3_parts(&[
        ("x-amz-security-token", "PLACEHOLDER-TOKEN"),
        ("x-amz-date", "20200101T000000Z"),
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ]);
    resign_s3(&mut parts).expect("signs");
    let auth = authorization(&parts);
    assert!(
        !auth.contains("AKIAPLACEHOLDER") && !auth.contains("deadbeef"),
        "{auth}"
    );
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=ASIASESSIONKEYEXAMPLE/20261204/"));
    assert_eq!(
        parts.headers["x-amz-security-token"],
        "SESSION/TOKEN+example=="
    );
    assert!(parts.headers["x-amz-security-token"].is_sensitive());
    assert_eq!(parts.headers["x-amz-date"], "20261204T101500Z");
    assert_eq!(parts.headers.get_all("authorization").iter().count(), 1);
    assert_eq!(
        parts.headers.get_all("x-amz-security-token").iter().count(),
        1
    );
}

#[test]
fn hop_headers_are_not_signed_and_content_headers_are() {
    let mut parts = s3_parts(&[
        ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
        ("content-type", "text/plain"),
        ("content-md5", "XrY7u+Ae7tCTyyK7j1rNww=="),
        ("content-length", "11"),
        ("user-agent", "aws-cli"),
        ("expect", "100-continue"),
        ("connection", "keep-alive"),
        ("x-amzn-trace-id", "Root=1"),
        ("x-amz-meta-note", "hello   spaced   value"),
    ]);
    resign_s3(&mut parts).expect("signs");
    let signed = signed_headers(&parts);
    for h in [
        "content-type",
        "content-md5",
        "content-length",
        "host",
        "x-amz-meta-note",
    ] {
        assert!(
            signed.contains(&h.to_owned()),
            "{h} should be signed: {signed:?}"
        );
    }
    for h in ["user-agent", "expect", "connection", "x-amzn-trace-id"] {
        assert!(
            !signed.contains(&h.to_owned()),
            "{h} must not be signed: {signed:?}"
        );
    }
    // Spaces are collapsed only in what is signed; the bytes sent are the agent's.
    assert_eq!(parts.headers["x-amz-meta-note"], "hello   spaced   value");
}

#[test]
fn s3_payload_markers_are_kept() {
    for value in [
        "UNSIGNED-PAYLOAD",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    ] {
        let mut parts = s3_parts(&[
            ("x-amz-content-sha256", value),
            ("content-encoding", "aws-chunked"),
            ("x-amz-trailer", "x-amz-checksum-crc32"),
            ("x-amz-decoded-content-length", "7"),
        ]);
        resign_s3(&mut parts).expect("signs");
        assert_eq!(parts.headers[CONTENT_SHA256], value);
        let signed = signed_headers(&parts);
        for h in [
            "content-encoding",
            "x-amz-trailer",
            "x-amz-decoded-content-length",
        ] {
            assert!(signed.contains(&h.to_owned()), "{h}: {signed:?}");
        }
    }
}

#[test]
fn s3_without_declared_hash_is_unsigned_payload() {
    let mut parts = s3_parts(&[]);
    resign_s3(&mut parts).expect("signs");
    assert_eq!(parts.headers[CONTENT_SHA256], "UNSIGNED-PAYLOAD");
}

#[test]
fn chunk_signed_uploads_are_refused() {
    for value in [
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    ] {
        let mut parts = s3_parts(&[("x-amz-content-sha256", value)]);
        let err = resign_s3(&mut parts).expect_err("refused");
        assert!(
            matches!(err, SignError::SignedStreaming { .. }),
            "{value}: {err}"
        );
        assert!(err.to_string().contains(value));
        // Nothing of the agent's was replaced by a signature of ours.
        assert!(authorization(&parts).contains("deadbeef"));
    }
}

#[test]
fn presigned_and_sigv4a_are_refused() {
    let mut parts = s3_parts(&[]);
    parts.uri = "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab"
        .parse()
        .expect("uri");
    assert!(matches!(resign_s3(&mut parts), Err(SignError::Presigned)));

    let mut parts = s3_parts(&[]);
    parts.headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static(
            "AWS4-ECDSA-P256-SHA256 Credential=AKID/20261204/s3/aws4_request, \
             SignedHeaders=host;x-amz-region-set, Signature=3045",
        ),
    );
    parts
        .headers
        .insert("x-amz-region-set", HeaderValue::from_static("*"));
    assert!(matches!(resign_s3(&mut parts), Err(SignError::SigV4a)));
}

#[test]
fn bad_declared_hash_is_refused() {
    let mut parts = s3_parts(&[("x-amz-content-sha256", "not-a-hash")]);
    assert!(matches!(
        resign_s3(&mut parts),
        Err(SignError::BadContentSha256 { .. })
    ));
}

fn ec2_parts(extra: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "ec2.us-east-1.amazonaws.com")
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(()).expect("test request builds").into_parts().0
}

#[test]
fn non_s3_body_hash_is_computed_and_declared_hash_recomputed() {
    let body = b"Action=DescribeInstances&Version=2016-11-15";
    let mut parts = ec2_parts(&[]);
    let req = classify(&parts, Some(body)).expect("classifies");
    resign(
        &mut parts,
        &req,
        Payload::Bytes(body),
        &session_creds(),
        now(),
    )
    .expect("signs");
    assert!(!parts.headers.contains_key(CONTENT_SHA256));

    let mut parts = ec2_parts(&[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]);
    resign(
        &mut parts,
        &req,
        Payload::Bytes(body),
        &session_creds(),
        now(),
    )
    .expect("signs");
    assert_eq!(
        parts.headers[CONTENT_SHA256],
        hex::encode(Sha256::digest(body))
    );
}

#[test]
fn non_s3_unread_body_is_refused() {
    let mut parts = ec2_parts(&[]);
    let req = classify(&parts, None).expect("classifies");
    let err = resign(
        &mut parts,
        &req,
        Payload::ClientDeclared,
        &session_creds(),
        now(),
    );
    assert!(matches!(err, Err(SignError::BodyNeeded { .. })));
}

#[test]
fn missing_host_header_is_taken_from_the_authority() {
    let (mut parts, ()) = http::Request::builder()
        .method("GET")
        .uri("https://sts.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15")
        .body(())
        .expect("builds")
        .into_parts();
    let req = classify(&parts, Some(b"")).expect("classifies");
    resign(
        &mut parts,
        &req,
        Payload::Bytes(b""),
        &session_creds(),
        now(),
    )
    .expect("signs");
    assert_eq!(parts.headers["host"], "sts.amazonaws.com");
    assert!(signed_headers(&parts).contains(&"host".to_owned()));
}

#[test]
fn credentials_without_session_token_send_none() {
    let creds = Credentials::new("AKIDLONGTERM", "secret", None, None, "test");
    let mut parts = s3_parts(&[("x-amz-security-token", "PLACEHOLDER-TOKEN")]);
    let req = classify(&parts, None).expect("classifies");
    resign(&mut parts, &req, Payload::ClientDeclared, &creds, now()).expect("signs");
    assert!(!parts.headers.contains_key("x-amz-security-token"));
}

#[test]
fn signing_is_fast_enough_to_not_matter() {
    // A smoke bound, not a benchmark: 1000 re-signings well under a second in debug builds.
    let v = vector("ec2-query-form");
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        resign_vector(&v, None);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

// --- cost ---------------------------------------------------------------------------------

/// A typical STS GetCallerIdentity call as botocore sends it, with the agent's placeholder
/// signature.
fn sts_get_caller_identity() -> Parts {
    http::Request::builder()
        .method("POST")
        .uri("/")
        .header("host", "sts.us-east-1.amazonaws.com")
        .header("accept-encoding", "identity")
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .header(
            "user-agent",
            "aws-cli/2.22.0 md/Botocore#1.35.0 ua/2.0 os/linux",
        )
        .header("x-amz-date", "20261204T101400Z")
        .header("x-amz-security-token", "PLACEHOLDER-TOKEN")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20261204/us-east-1/sts/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=0000",
        )
        .header("content-length", "43")
        .body(())
        .expect("test request builds")
        .into_parts()
        .0
}

const STS_BODY: &[u8] = b"Action=GetCallerIdentity&Version=2011-06-15";

/// One measured call, never inlined so that callgrind can count it alone
/// (`--toggle-collect='*resign_once*'`).
#[inline(never)]
fn resign_once(parts: &mut Parts, req: &AwsRequest, creds: &Credentials, time: SystemTime) {
    resign(parts, req, Payload::Bytes(STS_BODY), creds, time).expect("signs");
}

/// Time per resign() of [`sts_get_caller_identity`], request construction subtracted.
/// `cargo test --release -p interceptor --lib resign_cost -- --ignored --nocapture`;
/// `RESIGN_BENCH_ITERS` sets the number of calls (callgrind: a small fixed batch, counted with
/// `--toggle-collect='*resign_once*'`).
#[test]
#[ignore = "a measurement, not a check"]
fn resign_cost() {
    let iters: u32 = std::env::var("RESIGN_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let template = sts_get_caller_identity();
    let req = classify(&template, Some(STS_BODY)).expect("classifies");
    let creds = session_creds();
    let time = now();

    let start = std::time::Instant::now();
    for _ in 0..iters {
        std::hint::black_box(sts_get_caller_identity());
    }
    let build = start.elapsed();

    let start = std::time::Instant::now();
    for _ in 0..iters {
        let mut parts = sts_get_caller_identity();
        resign_once(&mut parts, &req, &creds, time);
        std::hint::black_box(parts);
    }
    let total = start.elapsed();
    let per_call = total.saturating_sub(build).as_nanos() / u128::from(iters);
    println!(
        "resign(): {per_call} ns/op over {iters} calls (request construction: {} ns/op)",
        build.as_nanos() / u128::from(iters)
    );
}

// --- the aws-sigv4 crate as the oracle ----------------------------------------------------

/// The re-signer as it was before issue 6: canonical request, key and signature by the
/// `aws-sigv4` crate with the same settings. Our signer must produce what this produces.
mod oracle {
    use super::super::*;
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
        SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
    };
    use aws_smithy_runtime_api::client::identity::Identity;

    pub(super) fn sign_with_rules(
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

    /// The seed signature and signing key of a chunk-signed upload.
    pub(super) fn resign_chunked(
        parts: &mut Parts,
        req: &AwsRequest,
        creds: &Credentials,
        now: SystemTime,
    ) -> Result<(String, Vec<u8>), SignError> {
        refuse_unsupported(parts)?;
        let variant = chunk_signed(parts).ok_or(SignError::NotChunkSigned)?;
        let rules = Rules::for_request(req);
        let body = SignableBody::Precomputed(variant.marker().to_owned());
        let seed = sign_head(parts, req, rules, body, true, creds, now)?;
        let key = aws_sigv4::sign::v4::generate_signing_key(
            creds.secret_access_key(),
            now,
            &req.region,
            &req.signing_name,
        );
        Ok((seed, key.as_ref().to_vec()))
    }

    fn signable_body<'a>(
        req: &AwsRequest,
        rules: Rules,
        payload: Payload<'a>,
        declared: Option<&str>,
    ) -> Result<SignableBody<'a>, SignError> {
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

    fn header_pairs(parts: &Parts) -> Result<Vec<(&str, &str)>, SignError> {
        parts
            .headers
            .iter()
            .map(|(name, value)| {
                let value = std::str::from_utf8(value.as_bytes()).map_err(|_| {
                    SignError::HeaderNotUtf8 {
                        name: name.to_string(),
                    }
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
}

/// A random request as an agent might send it, to be signed by both signers.
#[derive(Clone, Debug)]
struct RandomRequest {
    method: &'static str,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
    rules: Rules,
    signing_name: &'static str,
    region: &'static str,
    token: Option<String>,
    secret: String,
    seconds: u64,
}

impl RandomRequest {
    /// The head, or `None` when the random target or a header is not valid HTTP.
    fn parts(&self) -> Option<Parts> {
        let mut b = http::Request::builder()
            .method(self.method)
            .uri(self.target.as_str());
        for (name, value) in &self.headers {
            b = b.header(*name, HeaderValue::from_bytes(value).ok()?);
        }
        b.body(()).ok().map(|r| r.into_parts().0)
    }

    fn creds(&self) -> Credentials {
        Credentials::new(
            "ASIARANDOMEXAMPLE",
            self.secret.as_str(),
            self.token.clone(),
            None,
            "test",
        )
    }

    fn time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.seconds)
    }

    fn payload(&self) -> Payload<'_> {
        self.body
            .as_deref()
            .map_or(Payload::ClientDeclared, Payload::Bytes)
    }
}

/// Everything a signer left in the head: each header in order, with its sensitivity.
fn head_state(parts: &Parts) -> Vec<(String, Vec<u8>, bool)> {
    parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec(), v.is_sensitive()))
        .collect()
}

mod strategies {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Path segments: dot segments, encoded bytes, reserved characters, empty (`//`).
    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            select(vec![
                "", ".", "..", "a", "%2F", "%20", "%C3%A9", "%25", "a%3Ab", "~x", "..a", "a.", "*",
                "+", "=", "@", ":", "!", "$", "'", "(", ";", ",",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9._~:@!$&'()*+,;=%-]{0,6}",
        ]
    }

    /// Query pairs: raw `+` and `*`, escapes (some invalid, some not UTF-8), names without
    /// `=`, empty pairs, repeated names.
    fn query_part() -> impl Strategy<Value = String> {
        prop_oneof![
            select(vec![
                "",
                "a",
                "a=",
                "=b",
                "a=1",
                "a=2",
                "A=1",
                "b=x*",
                "p=%2F",
                "p=%2f",
                "s=%20",
                "s=+",
                "s=a+b",
                "u=%C3%A9",
                "bad=%FF",
                "bad=%zz",
                "pct=%",
                "x-id=ABC",
                "list-type=2",
                "acl",
                "prefix=with%20space",
                "k=a=b",
                "é=%E2%82%AC",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z0-9._~*+/:@!$'(),;%-]{0,5}(=[a-zA-Z0-9._~*+/:@!$'(),;=%-]{0,5})?",
        ]
    }

    fn target() -> impl Strategy<Value = String> {
        let path = proptest::collection::vec(segment(), 0..5).prop_map(|s| s.join("/"));
        let query = proptest::option::of(
            proptest::collection::vec(query_part(), 0..5).prop_map(|q| q.join("&")),
        );
        let origin = select(vec![
            "",
            "https://s3.us-east-1.amazonaws.com",
            "https://sts.amazonaws.com:443",
            "http://10.0.0.1:8080",
        ]);
        (origin, path, query).prop_map(|(origin, path, query)| {
            let mut t = format!("{origin}/{path}");
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
    }

    fn header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
        let name = select(vec![
            "host",
            "content-type",
            "content-length",
            "content-md5",
            "x-amz-meta-note",
            "x-amz-meta-a",
            "x-custom",
            "x-amz-target",
            "accept",
            "range",
            "user-agent",
            "expect",
            "connection",
            "x-amzn-trace-id",
            "transfer-encoding",
            "keep-alive",
            "authorization",
            "x-amz-date",
            "x-amz-security-token",
            "x-amz-content-sha256",
            "x-amz-decoded-content-length",
        ]);
        let value = prop_oneof![
            8 => "[ \ta-zA-Z0-9,;:=/+.*-]{0,12}".prop_map(String::into_bytes),
            1 => select(vec!["  a   b  ", "\ta b\t", " ", "é", "x é y", "UNSIGNED-PAYLOAD"])
                .prop_map(|s| s.as_bytes().to_vec()),
            1 => Just(vec![b'a', 0xFF, b'b']),
        ];
        (name, value)
    }

    pub(super) fn request() -> impl Strategy<Value = RandomRequest> {
        let head = (
            select(vec!["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"]),
            target(),
            proptest::collection::vec(header(), 0..7),
            proptest::option::weighted(0.75, proptest::collection::vec(any::<u8>(), 0..80)),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        );
        let identity = (
            select(vec![
                "s3",
                "sts",
                "ec2",
                "lambda",
                "execute-api",
                "s3-outposts",
            ]),
            select(vec![
                "us-east-1",
                "eu-west-3",
                "ap-southeast-2",
                "cn-north-1",
            ]),
            proptest::option::of(prop_oneof![
                9 => "[A-Za-z0-9/+=]{1,40}",
                1 => select(vec!["bad\u{e9}token", "bad\ntoken", " spaced  token "])
                    .prop_map(str::to_owned),
            ]),
            "[A-Za-z0-9/+]{0,40}",
            0u64..4_102_444_800,
        );
        let host = proptest::option::weighted(
            0.8,
            select(vec![
                "s3.us-east-1.amazonaws.com",
                "sts.amazonaws.com:443",
                "h\u{e9}st",
            ]),
        );
        (head, identity, host).prop_map(|(head, identity, host)| {
            let (method, target, mut headers, body, (twice, normalize, sha)) = head;
            if let Some(host) = host {
                headers.insert(0, ("host", host.as_bytes().to_vec()));
            }
            let (signing_name, region, token, secret, seconds) = identity;
            RandomRequest {
                method,
                target,
                headers,
                body,
                rules: Rules {
                    encode_path_twice: twice,
                    normalize_path: normalize,
                    always_content_sha256: sha,
                },
                signing_name,
                region,
                token,
                secret,
                seconds,
            }
        })
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(3000))]

    #[test]
    fn signer_matches_aws_sigv4(r in strategies::request()) {
        let Some(mut ours) = r.parts() else {
            return Ok(());
        };
        let Some(mut theirs) = r.parts() else {
            return Ok(());
        };
        let host = request_host(&ours).unwrap_or_default();
        let req = target(r.signing_name, r.signing_name, r.region, &host);
        let (creds, time) = (r.creds(), r.time());

        let got = sign_with_rules(&mut ours, &req, r.rules, r.payload(), &creds, time);
        let want = oracle::sign_with_rules(&mut theirs, &req, r.rules, r.payload(), &creds, time);
        proptest::prop_assert_eq!(
            got.as_ref().map_err(ToString::to_string),
            want.as_ref().map_err(ToString::to_string)
        );
        proptest::prop_assert_eq!(head_state(&ours), head_state(&theirs));
        proptest::prop_assert_eq!(&ours.uri, &theirs.uri);
    }

    #[test]
    fn chunk_signer_seed_and_key_match_aws_sigv4(
        r in strategies::request(),
        trailer in proptest::bool::ANY,
    ) {
        let variant = if trailer { Variant::PayloadTrailer } else { Variant::Payload };
        let Some(mut ours) = r.parts() else {
            return Ok(());
        };
        let Some(mut theirs) = r.parts() else {
            return Ok(());
        };
        for parts in [&mut ours, &mut theirs] {
            let marker = HeaderValue::from_static(variant.marker());
            parts.headers.insert(CONTENT_SHA256, marker);
        }
        let host = request_host(&ours).unwrap_or_default();
        let req = target(r.signing_name, r.signing_name, r.region, &host);
        let (creds, time) = (r.creds(), r.time());

        let got = resign_chunked(&mut ours, &req, &creds, time);
        let want = oracle::resign_chunked(&mut theirs, &req, &creds, time);
        proptest::prop_assert_eq!(head_state(&ours), head_state(&theirs));
        match (got, want) {
            (Ok(mut signer), Ok((seed, key))) => {
                proptest::prop_assert_eq!(signer.previous(), seed.as_str());
                // The same key continues the chain: the next chunk's signature agrees.
                let date_time = ours.headers["x-amz-date"].to_str().expect("ASCII").to_owned();
                let scope = format!(
                    "{}/{}/{}/aws4_request", &date_time[..8], r.region, r.signing_name
                );
                let mut expected = ChunkSigner::new(variant, &key, date_time, scope, seed);
                let data = Sha256::digest(b"chunk");
                proptest::prop_assert_eq!(
                    signer.sign_chunk(&data).to_owned(),
                    expected.sign_chunk(&data).to_owned()
                );
            }
            (got, want) => proptest::prop_assert_eq!(
                got.map(drop).map_err(|e| e.to_string()),
                want.map(drop).map_err(|e| e.to_string())
            ),
        }
    }
}

#[test]
fn resign_derives_the_signing_key_once_per_scope() {
    let derivations = || signing_key::DERIVATIONS.with(std::cell::Cell::get);
    // Credentials no other test uses, so the process-wide cache has nothing of them yet.
    let creds = Credentials::new("ASIAONCEPERSCOPE", "once/per+scope", None, None, "test");
    let sign = |region: &str| {
        let mut parts = sts_get_caller_identity();
        let req = target("sts", "sts", region, "sts.amazonaws.com");
        resign(&mut parts, &req, Payload::Bytes(STS_BODY), &creds, now()).expect("signs");
        authorization(&parts).to_owned()
    };

    let before = derivations();
    let first = sign("us-east-1");
    assert_eq!(derivations() - before, 1);
    let second = sign("us-east-1");
    assert_eq!(derivations() - before, 1, "the second call reuses the key");
    assert_eq!(first, second);
    sign("eu-west-1");
    assert_eq!(derivations() - before, 2, "another region has its own key");
}
