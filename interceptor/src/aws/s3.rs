//! S3 operations from method, path and sub-resources; bucket and key from virtual host or path.

use super::request::{AwsRequest, ParamValue, RequestError, percent_decode, query_pairs};
use http::request::Parts;
use std::collections::HashSet;

/// Query keys that choose an S3 operation (sub-resources): every literal query key in the
/// request URIs of S3's API model, plus `uploadId`, which turns an object request into a part
/// or multipart operation.
///
/// Any other key is an ordinary parameter that S3 ignores or reads as an argument
/// (`DELETE /b/k?junk=1` is DeleteObject): it must not stop classification, or a call would
/// dodge rules on its action by adding a key. The cost: a sub-resource AWS adds later is read as
/// the plain operation until it is listed here, except when sent bare (`?newthing`), which is
/// refused.
const SUBRESOURCES: &[&str] = &[
    "abac",
    "accelerate",
    "acl",
    "analytics",
    "annotation",
    "attributes",
    "cors",
    "delete",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "location",
    "logging",
    "metadataAnnotationTable",
    "metadataConfiguration",
    "metadataInventoryTable",
    "metadataJournalTable",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "renameObject",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "session",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versioning",
    "versions",
    "website",
];

/// Query parameters S3's API model knows as arguments (plus `x-id`, `list-type` and
/// `select-type`, which SDKs send to qualify an operation without choosing another). Unknown
/// keys are arguments too; only these may be sent without a value.
const PLAIN_PARAMS: &[&str] = &[
    "prefix",
    "delimiter",
    "marker",
    "max-keys",
    "encoding-type",
    "list-type",
    "continuation-token",
    "fetch-owner",
    "start-after",
    "key-marker",
    "version-id-marker",
    "upload-id-marker",
    "max-uploads",
    "max-buckets",
    "max-directory-buckets",
    "bucket-region",
    "x-id",
    "versionId",
    "partNumber",
    "max-parts",
    "part-number-marker",
    "select-type",
    "id",
    "annotation-prefix",
    "annotationName",
    "max-annotation-results",
    "response-content-type",
    "response-content-language",
    "response-expires",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "optional-object-attributes",
];

/// Request headers worth a policy parameter name.
const HEADER_PARAMS: &[(&str, &str)] = &[
    ("x-amz-acl", "ACL"),
    ("x-amz-copy-source", "CopySource"),
    ("x-amz-storage-class", "StorageClass"),
    ("x-amz-server-side-encryption", "ServerSideEncryption"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Service,
    Bucket,
    Object,
}

/// Fills bucket, key, operation, action, resource and parameters of an S3 request.
/// `host_bucket` is the bucket named by a virtual-hosted-style host.
///
/// Refused: a known query key given twice (readers differ on which value counts), two
/// sub-resources (two operations), and an unknown key sent bare (it may be a sub-resource not
/// listed here).
pub(crate) fn describe(
    req: &mut AwsRequest,
    head: &Parts,
    host_bucket: Option<&str>,
) -> Result<(), RequestError> {
    let (bucket, key) = bucket_and_key(head.uri.path(), host_bucket);
    let mut subresource: Option<String> = None;
    let mut version = false;
    let mut seen = HashSet::new();
    for (name, value) in query_pairs(head) {
        let known = SUBRESOURCES.contains(&name.as_ref()) || PLAIN_PARAMS.contains(&name.as_ref());
        // A key S3 reads must be given once; a key it ignores may repeat.
        if known && !seen.insert(name.clone().into_owned()) {
            return Err(RequestError::RepeatedParameter {
                service: req.service.clone(),
                name: format!("query key {name:?}"),
            });
        }
        if name.starts_with("X-Amz-") || name.starts_with("x-amz-") {
            continue;
        }
        if name == "versionId" {
            version = true;
        }
        if SUBRESOURCES.contains(&name.as_ref()) {
            if let Some(first) = &subresource {
                return Err(RequestError::ConflictingOperation {
                    service: req.service.clone(),
                    first: format!("sub-resource {first:?}"),
                    second: format!("sub-resource {name:?}"),
                });
            }
            subresource = Some(name.clone().into_owned());
        } else if value.is_empty() && !PLAIN_PARAMS.contains(&name.as_ref()) {
            return Err(RequestError::UnexpectedParameter {
                service: req.service.clone(),
                name: name.into_owned(),
                why: "a bare query key the gateway does not know may be an S3 sub-resource \
                      that chooses another operation",
            });
        }
        req.params
            .0
            .push((name.into_owned(), ParamValue::Str(value.into_owned())));
    }
    for (header, param) in HEADER_PARAMS {
        if let Some(v) = head.headers.get(*header).and_then(|v| v.to_str().ok()) {
            req.params
                .0
                .push(((*param).to_owned(), ParamValue::Str(v.to_owned())));
        }
    }

    let level = match (&bucket, &key) {
        (None, _) => Level::Service,
        (Some(_), None) => Level::Bucket,
        (Some(_), Some(_)) => Level::Object,
    };
    let copy = head.headers.contains_key("x-amz-copy-source");
    let sub = subresource.as_deref();
    let found = operation(head.method.as_str(), level, sub, version, copy);
    if let Some((operation, action)) = found {
        req.operation = Some(operation.to_owned());
        req.action = Some(format!("{}:{action}", req.service));
    }

    let partition = partition(&req.region);
    req.resource = match (&bucket, &key) {
        (Some(b), Some(k)) => Some(format!("arn:{partition}:s3:::{b}/{k}")),
        (Some(b), None) => Some(format!("arn:{partition}:s3:::{b}")),
        _ => None,
    };
    let named = [("Bucket", &bucket), ("Key", &key)];
    for (name, value) in named.into_iter().rev() {
        if let Some(v) = value {
            req.params
                .0
                .insert(0, (name.to_owned(), ParamValue::Str(v.clone())));
        }
    }
    req.bucket = bucket;
    req.key = key;
    Ok(())
}

/// The AWS partition of a region, for ARNs.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

/// Splits the encoded request path into bucket and decoded key.
fn bucket_and_key(path: &str, host_bucket: Option<&str>) -> (Option<String>, Option<String>) {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (bucket, key) = match host_bucket {
        Some(b) => (Some(b.to_owned()), rest),
        None => match rest.split_once('/') {
            Some((b, k)) => (Some(percent_decode(b)), k),
            None => (Some(percent_decode(rest)), ""),
        },
    };
    let bucket = bucket.filter(|b| !b.is_empty());
    // The key keeps every byte after the bucket's slash, `//` and `..` included.
    let key = (bucket.is_some() && !key.is_empty()).then(|| percent_decode(key));
    (bucket, key)
}

/// (API operation, IAM action) for a method, level and sub-resource.
fn operation(
    method: &str,
    level: Level,
    sub: Option<&str>,
    version: bool,
    copy: bool,
) -> Option<(&'static str, &'static str)> {
    match level {
        Level::Service => {
            (method == "GET" && sub.is_none()).then_some(("ListBuckets", "ListAllMyBuckets"))
        }
        Level::Bucket => bucket_operation(method, sub),
        Level::Object => object_operation(method, sub, version, copy),
    }
}

fn bucket_operation(method: &str, sub: Option<&str>) -> Option<(&'static str, &'static str)> {
    let op = match (method, sub) {
        ("GET", None) => ("ListObjects", "ListBucket"),
        ("HEAD", None) => ("HeadBucket", "ListBucket"),
        ("PUT", None) => ("CreateBucket", "CreateBucket"),
        ("DELETE", None) => ("DeleteBucket", "DeleteBucket"),
        ("POST", Some("delete")) => ("DeleteObjects", "DeleteObject"),
        ("GET", Some("uploads")) => ("ListMultipartUploads", "ListBucketMultipartUploads"),
        ("GET", Some("versions")) => ("ListObjectVersions", "ListBucketVersions"),
        ("GET", Some("location")) => ("GetBucketLocation", "GetBucketLocation"),
        ("GET", Some("policyStatus")) => ("GetBucketPolicyStatus", "GetBucketPolicyStatus"),
        ("GET", Some(s)) => return bucket_config("Get", s),
        ("PUT", Some(s)) => return bucket_config("Put", s),
        ("DELETE", Some(s)) => return bucket_config("Delete", s),
        _ => return None,
    };
    Some(op)
}

/// Bucket configuration sub-resources: (sub-resource, Get op, Put op, Delete op, IAM get,
/// IAM put, IAM delete). IAM names several of these differently from the API.
const BUCKET_CONFIGS: &[(&str, [&str; 6])] = &[
    (
        "acl",
        [
            "GetBucketAcl",
            "PutBucketAcl",
            "",
            "GetBucketAcl",
            "PutBucketAcl",
            "",
        ],
    ),
    (
        "policy",
        [
            "GetBucketPolicy",
            "PutBucketPolicy",
            "DeleteBucketPolicy",
            "GetBucketPolicy",
            "PutBucketPolicy",
            "DeleteBucketPolicy",
        ],
    ),
    (
        "versioning",
        [
            "GetBucketVersioning",
            "PutBucketVersioning",
            "",
            "GetBucketVersioning",
            "PutBucketVersioning",
            "",
        ],
    ),
    (
        "tagging",
        [
            "GetBucketTagging",
            "PutBucketTagging",
            "DeleteBucketTagging",
            "GetBucketTagging",
            "PutBucketTagging",
            "PutBucketTagging",
        ],
    ),
    (
        "cors",
        [
            "GetBucketCors",
            "PutBucketCors",
            "DeleteBucketCors",
            "GetBucketCORS",
            "PutBucketCORS",
            "PutBucketCORS",
        ],
    ),
    (
        "lifecycle",
        [
            "GetBucketLifecycleConfiguration",
            "PutBucketLifecycleConfiguration",
            "DeleteBucketLifecycle",
            "GetLifecycleConfiguration",
            "PutLifecycleConfiguration",
            "PutLifecycleConfiguration",
        ],
    ),
    (
        "website",
        [
            "GetBucketWebsite",
            "PutBucketWebsite",
            "DeleteBucketWebsite",
            "GetBucketWebsite",
            "PutBucketWebsite",
            "DeleteBucketWebsite",
        ],
    ),
    (
        "encryption",
        [
            "GetBucketEncryption",
            "PutBucketEncryption",
            "DeleteBucketEncryption",
            "GetEncryptionConfiguration",
            "PutEncryptionConfiguration",
            "PutEncryptionConfiguration",
        ],
    ),
    (
        "notification",
        [
            "GetBucketNotificationConfiguration",
            "PutBucketNotificationConfiguration",
            "",
            "GetBucketNotification",
            "PutBucketNotification",
            "",
        ],
    ),
    (
        "logging",
        [
            "GetBucketLogging",
            "PutBucketLogging",
            "",
            "GetBucketLogging",
            "PutBucketLogging",
            "",
        ],
    ),
    (
        "object-lock",
        [
            "GetObjectLockConfiguration",
            "PutObjectLockConfiguration",
            "",
            "GetBucketObjectLockConfiguration",
            "PutBucketObjectLockConfiguration",
            "",
        ],
    ),
    (
        "publicAccessBlock",
        [
            "GetPublicAccessBlock",
            "PutPublicAccessBlock",
            "DeletePublicAccessBlock",
            "GetBucketPublicAccessBlock",
            "PutBucketPublicAccessBlock",
            "PutBucketPublicAccessBlock",
        ],
    ),
    (
        "ownershipControls",
        [
            "GetBucketOwnershipControls",
            "PutBucketOwnershipControls",
            "DeleteBucketOwnershipControls",
            "GetBucketOwnershipControls",
            "PutBucketOwnershipControls",
            "PutBucketOwnershipControls",
        ],
    ),
    (
        "replication",
        [
            "GetBucketReplication",
            "PutBucketReplication",
            "DeleteBucketReplication",
            "GetReplicationConfiguration",
            "PutReplicationConfiguration",
            "PutReplicationConfiguration",
        ],
    ),
    (
        "requestPayment",
        [
            "GetBucketRequestPayment",
            "PutBucketRequestPayment",
            "",
            "GetBucketRequestPayment",
            "PutBucketRequestPayment",
            "",
        ],
    ),
    (
        "accelerate",
        [
            "GetBucketAccelerateConfiguration",
            "PutBucketAccelerateConfiguration",
            "",
            "GetAccelerateConfiguration",
            "PutAccelerateConfiguration",
            "",
        ],
    ),
];

fn bucket_config(verb: &str, sub: &str) -> Option<(&'static str, &'static str)> {
    let (_, names) = BUCKET_CONFIGS.iter().find(|(s, _)| *s == sub)?;
    let (op, iam) = match verb {
        "Get" => (names[0], names[3]),
        "Put" => (names[1], names[4]),
        _ => (names[2], names[5]),
    };
    (!op.is_empty()).then_some((op, iam))
}

fn object_operation(
    method: &str,
    sub: Option<&str>,
    version: bool,
    copy: bool,
) -> Option<(&'static str, &'static str)> {
    let pick = |plain: (&'static str, &'static str), versioned: &'static str| {
        if version { (plain.0, versioned) } else { plain }
    };
    let op = match (method, sub) {
        ("GET", None) => pick(("GetObject", "GetObject"), "GetObjectVersion"),
        ("HEAD", None) => pick(("HeadObject", "GetObject"), "GetObjectVersion"),
        ("PUT", None) if copy => ("CopyObject", "PutObject"),
        ("PUT", None) => ("PutObject", "PutObject"),
        ("DELETE", None) => pick(("DeleteObject", "DeleteObject"), "DeleteObjectVersion"),
        ("GET", Some("acl")) => pick(("GetObjectAcl", "GetObjectAcl"), "GetObjectVersionAcl"),
        ("PUT", Some("acl")) => pick(("PutObjectAcl", "PutObjectAcl"), "PutObjectVersionAcl"),
        ("GET", Some("tagging")) => pick(
            ("GetObjectTagging", "GetObjectTagging"),
            "GetObjectVersionTagging",
        ),
        ("PUT", Some("tagging")) => pick(
            ("PutObjectTagging", "PutObjectTagging"),
            "PutObjectVersionTagging",
        ),
        ("DELETE", Some("tagging")) => pick(
            ("DeleteObjectTagging", "DeleteObjectTagging"),
            "DeleteObjectVersionTagging",
        ),
        ("GET", Some("attributes")) => ("GetObjectAttributes", "GetObjectAttributes"),
        ("GET", Some("retention")) => ("GetObjectRetention", "GetObjectRetention"),
        ("PUT", Some("retention")) => ("PutObjectRetention", "PutObjectRetention"),
        ("GET", Some("legal-hold")) => ("GetObjectLegalHold", "GetObjectLegalHold"),
        ("PUT", Some("legal-hold")) => ("PutObjectLegalHold", "PutObjectLegalHold"),
        ("GET", Some("torrent")) => ("GetObjectTorrent", "GetObjectTorrent"),
        ("GET", Some("uploadId")) => ("ListParts", "ListMultipartUploadParts"),
        ("PUT", Some("uploadId")) if copy => ("UploadPartCopy", "PutObject"),
        ("PUT", Some("uploadId")) => ("UploadPart", "PutObject"),
        ("POST", Some("uploads")) => ("CreateMultipartUpload", "PutObject"),
        ("POST", Some("uploadId")) => ("CompleteMultipartUpload", "PutObject"),
        ("DELETE", Some("uploadId")) => ("AbortMultipartUpload", "AbortMultipartUpload"),
        ("POST", Some("restore")) => ("RestoreObject", "RestoreObject"),
        ("POST", Some("select")) => ("SelectObjectContent", "GetObject"),
        _ => return None,
    };
    Some(op)
}

#[cfg(test)]
mod tests {
    use crate::aws::request::{AwsRequest, RequestError, classify};

    fn s3(method: &str, host: &str, uri: &str, extra: &[(&str, &str)]) -> AwsRequest {
        let mut b = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", host)
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20261204/us-west-2/s3/aws4_request, \
             SignedHeaders=host, Signature=00",
            );
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        let (head, ()) = b
            .body(())
            .expect("test request is well-formed")
            .into_parts();
        classify(&head, None).expect("an S3 request classifies")
    }

    fn action(method: &str, uri: &str) -> Option<String> {
        s3(method, "s3.us-west-2.amazonaws.com", uri, &[]).action
    }

    #[test]
    fn service_and_bucket_operations() {
        let r = s3("GET", "s3.us-west-2.amazonaws.com", "/", &[]);
        assert_eq!(r.action.as_deref(), Some("s3:ListAllMyBuckets"));
        assert_eq!(r.operation.as_deref(), Some("ListBuckets"));
        assert!(r.streams_body() && !r.needs_body());

        let r = s3(
            "GET",
            "s3.us-west-2.amazonaws.com",
            "/b?list-type=2&prefix=x",
            &[],
        );
        assert_eq!(r.action.as_deref(), Some("s3:ListBucket"));
        assert_eq!(r.bucket.as_deref(), Some("b"));
        assert_eq!(r.resource.as_deref(), Some("arn:aws:s3:::b"));
        assert_eq!(
            r.params.get("prefix").and_then(|v| v.as_str()).as_deref(),
            Some("x")
        );

        assert_eq!(action("PUT", "/b").as_deref(), Some("s3:CreateBucket"));
        assert_eq!(action("HEAD", "/b").as_deref(), Some("s3:ListBucket"));
        assert_eq!(action("DELETE", "/b").as_deref(), Some("s3:DeleteBucket"));
        assert_eq!(action("GET", "/b?acl").as_deref(), Some("s3:GetBucketAcl"));
        assert_eq!(
            action("DELETE", "/b?cors").as_deref(),
            Some("s3:PutBucketCORS")
        );
        assert_eq!(
            action("POST", "/b?delete").as_deref(),
            Some("s3:DeleteObject")
        );
        assert_eq!(
            action("GET", "/b?uploads").as_deref(),
            Some("s3:ListBucketMultipartUploads")
        );
    }

    #[test]
    fn object_operations() {
        assert_eq!(action("PUT", "/b/k").as_deref(), Some("s3:PutObject"));
        assert_eq!(action("GET", "/b/k").as_deref(), Some("s3:GetObject"));
        assert_eq!(action("HEAD", "/b/k").as_deref(), Some("s3:GetObject"));
        assert_eq!(action("DELETE", "/b/k").as_deref(), Some("s3:DeleteObject"));
        assert_eq!(
            action("DELETE", "/b/k?versionId=3").as_deref(),
            Some("s3:DeleteObjectVersion")
        );
        assert_eq!(
            action("POST", "/b/k?uploads").as_deref(),
            Some("s3:PutObject")
        );
        assert_eq!(
            action("PUT", "/b/k?partNumber=1&uploadId=u").as_deref(),
            Some("s3:PutObject")
        );
        assert_eq!(
            action("DELETE", "/b/k?uploadId=u").as_deref(),
            Some("s3:AbortMultipartUpload")
        );
        assert_eq!(
            action("GET", "/b/k?x-id=GetObject").as_deref(),
            Some("s3:GetObject")
        );
        let r = s3(
            "PUT",
            "s3.us-west-2.amazonaws.com",
            "/b/k",
            &[("x-amz-copy-source", "o/k")],
        );
        assert_eq!(r.operation.as_deref(), Some("CopyObject"));
    }

    fn refusal(method: &str, uri: &str) -> RequestError {
        let (head, ()) = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "s3.us-west-2.amazonaws.com")
            .body(())
            .expect("test request is well-formed")
            .into_parts();
        classify(&head, None).expect_err("the S3 request is refused")
    }

    #[test]
    fn unknown_subresources_are_not_guessed() {
        // Known sub-resources without a decoded operation, and unknown methods: no action.
        assert_eq!(action("DELETE", "/b?analytics&id=x"), None);
        assert_eq!(action("PATCH", "/b/k"), None);
        // A bare unknown key may be a sub-resource: refused, not read as the plain operation.
        assert!(matches!(
            refusal("GET", "/b?brand-new-thing"),
            RequestError::UnexpectedParameter { .. }
        ));
        // Two sub-resources name two operations.
        assert!(matches!(
            refusal("GET", "/b/k?acl&tagging"),
            RequestError::ConflictingOperation { .. }
        ));
    }

    #[test]
    fn unknown_query_keys_with_values_are_plain_parameters() {
        // `DELETE /b/k?junk=1` is DeleteObject to S3: it must be to the policy too.
        assert_eq!(
            action("DELETE", "/b/k?junk=1").as_deref(),
            Some("s3:DeleteObject")
        );
        assert_eq!(
            action("DELETE", "/b/k?versionId=3&junk=1").as_deref(),
            Some("s3:DeleteObjectVersion")
        );
        assert_eq!(
            action("GET", "/b/k?junk=1").as_deref(),
            Some("s3:GetObject")
        );
        assert_eq!(
            action("HEAD", "/b/k?junk=1").as_deref(),
            Some("s3:GetObject")
        );
        assert_eq!(
            action("PUT", "/b/k?junk=1").as_deref(),
            Some("s3:PutObject")
        );
        assert_eq!(
            action("POST", "/b/k?uploads&junk=1").as_deref(),
            Some("s3:PutObject")
        );
        assert_eq!(
            action("PUT", "/b?policy&junk=1").as_deref(),
            Some("s3:PutBucketPolicy")
        );
        assert_eq!(
            action("DELETE", "/b?junk=1").as_deref(),
            Some("s3:DeleteBucket")
        );
        assert_eq!(action("GET", "/b?junk=1").as_deref(), Some("s3:ListBucket"));
        assert_eq!(
            action("GET", "/?junk=1").as_deref(),
            Some("s3:ListAllMyBuckets")
        );
        let r = s3("DELETE", "s3.us-west-2.amazonaws.com", "/b/k?junk=1", &[]);
        assert_eq!(
            r.params.get("junk").and_then(|v| v.as_str()).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn known_query_keys_given_twice_are_refused() {
        assert!(matches!(
            refusal("DELETE", "/b/k?versionId=1&versionId=2"),
            RequestError::RepeatedParameter { .. }
        ));
        assert!(matches!(
            refusal("PUT", "/b/k?uploadId=a&partNumber=1&uploadId=b"),
            RequestError::RepeatedParameter { .. }
        ));
        // A key S3 ignores may repeat (the SigV4 vectors sign such a query).
        assert_eq!(
            action("GET", "/b?a=2&a=1&prefix=x").as_deref(),
            Some("s3:ListBucket")
        );
    }

    #[test]
    fn virtual_host_bucket_and_decoded_key() {
        let r = s3(
            "PUT",
            "my.bucket.s3.us-west-2.amazonaws.com",
            "/dir/a%20b%2Bc~d%20%C3%A9.txt",
            &[],
        );
        assert_eq!(r.bucket.as_deref(), Some("my.bucket"));
        assert_eq!(r.key.as_deref(), Some("dir/a b+c~d é.txt"));
        assert_eq!(
            r.resource.as_deref(),
            Some("arn:aws:s3:::my.bucket/dir/a b+c~d é.txt")
        );
        assert_eq!(r.params.0[0].0, "Bucket");
        assert_eq!(r.params.0[1].0, "Key");
    }

    #[test]
    fn path_style_keeps_odd_keys() {
        let r = s3("GET", "s3.us-west-2.amazonaws.com", "/b//x/../y", &[]);
        assert_eq!(r.key.as_deref(), Some("/x/../y"));
        let r = s3("GET", "s3.us-west-2.amazonaws.com", "/b/", &[]);
        assert_eq!((r.key, r.action.as_deref()), (None, Some("s3:ListBucket")));
    }
}
