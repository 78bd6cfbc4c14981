//! The table of AWS services the gateway knows by host name, and the parsing of AWS host names.
//!
//! A host such as `bucket.s3.dualstack.us-west-2.amazonaws.com` is read right to left: the DNS
//! suffix of the partition, then qualifiers (region, `dualstack`, `fips`), then the endpoint
//! prefix that names the service, then anything service-specific (an S3 bucket, an API id).

use super::request::Protocol;

/// What the gateway knows about one service, found by its endpoint prefix in the host name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    /// The host label naming the service, e.g. `monitoring` for CloudWatch.
    pub endpoint: &'static str,
    /// The service name in the SigV4 credential scope, e.g. `monitoring`.
    pub signing_name: &'static str,
    /// The prefix of IAM actions, e.g. `cloudwatch`.
    pub iam_prefix: &'static str,
    /// The protocol the service speaks when the request itself gives no clue.
    pub protocol: Protocol,
    /// The region of the service's global endpoint (a host without a region label).
    pub global_region: Option<&'static str>,
}

const fn svc(
    endpoint: &'static str,
    signing_name: &'static str,
    iam_prefix: &'static str,
    protocol: Protocol,
) -> ServiceInfo {
    ServiceInfo {
        endpoint,
        signing_name,
        iam_prefix,
        protocol,
        global_region: None,
    }
}

const fn global(
    endpoint: &'static str,
    iam_prefix: &'static str,
    protocol: Protocol,
    region: &'static str,
) -> ServiceInfo {
    ServiceInfo {
        endpoint,
        signing_name: iam_prefix,
        iam_prefix,
        protocol,
        global_region: Some(region),
    }
}

use Protocol::{Ec2Query, Json10, Json11, Query, RestJson, RestXml};

/// Known services by endpoint prefix. Services missing here still work when the client's
/// credential scope names them; they only lose the protocol default.
const SERVICES: &[ServiceInfo] = &[
    svc("ec2", "ec2", "ec2", Ec2Query),
    global("sts", "sts", Query, "us-east-1"),
    global("iam", "iam", Query, "us-east-1"),
    svc("sqs", "sqs", "sqs", Json10),
    svc("sns", "sns", "sns", Query),
    svc("autoscaling", "autoscaling", "autoscaling", Query),
    svc("cloudformation", "cloudformation", "cloudformation", Query),
    svc(
        "elasticloadbalancing",
        "elasticloadbalancing",
        "elasticloadbalancing",
        Query,
    ),
    svc("rds", "rds", "rds", Query),
    svc("elasticache", "elasticache", "elasticache", Query),
    svc("redshift", "redshift", "redshift", Query),
    svc("monitoring", "monitoring", "cloudwatch", Query),
    svc("email", "ses", "ses", Query),
    svc("secretsmanager", "secretsmanager", "secretsmanager", Json11),
    svc("dynamodb", "dynamodb", "dynamodb", Json10),
    svc("ssm", "ssm", "ssm", Json11),
    svc("logs", "logs", "logs", Json11),
    svc("kms", "kms", "kms", Json11),
    svc("ecr", "ecr", "ecr", Json11),
    svc("events", "events", "events", Json11),
    svc("kinesis", "kinesis", "kinesis", Json11),
    svc("firehose", "firehose", "firehose", Json11),
    svc("states", "states", "states", Json10),
    svc("ecs", "ecs", "ecs", Json11),
    svc("codebuild", "codebuild", "codebuild", Json11),
    svc("cloudtrail", "cloudtrail", "cloudtrail", Json11),
    svc("acm", "acm", "acm", Json11),
    svc("config", "config", "config", Json11),
    svc("glue", "glue", "glue", Json11),
    svc("athena", "athena", "athena", Json11),
    svc("sagemaker", "sagemaker", "sagemaker", Json11),
    global("organizations", "organizations", Json11, "us-east-1"),
    svc("lambda", "lambda", "lambda", RestJson),
    svc("apigateway", "apigateway", "apigateway", RestJson),
    svc("execute-api", "execute-api", "execute-api", RestJson),
    svc("eks", "eks", "eks", RestJson),
    svc("batch", "batch", "batch", RestJson),
    svc("bedrock", "bedrock", "bedrock", RestJson),
    svc("bedrock-runtime", "bedrock", "bedrock", RestJson),
    global("route53", "route53", RestXml, "us-east-1"),
    global("cloudfront", "cloudfront", RestXml, "us-east-1"),
    global("s3", "s3", RestXml, "us-east-1"),
    svc("s3-control", "s3", "s3", RestXml),
    svc("s3-accesspoint", "s3", "s3", RestXml),
    svc(
        "s3-object-lambda",
        "s3-object-lambda",
        "s3-object-lambda",
        RestXml,
    ),
    svc("s3-outposts", "s3-outposts", "s3-outposts", RestXml),
    svc("s3express", "s3express", "s3express", RestXml),
    svc("s3express-control", "s3express", "s3express", RestXml),
];

/// Endpoints whose host prefix (left of the endpoint label) is a bucket or access point.
pub(crate) const S3_BUCKET_ENDPOINTS: &[&str] =
    &["s3", "s3express", "s3-accesspoint", "s3-object-lambda"];

/// DNS suffixes of the AWS partitions. Longest first, so `.amazonaws.com.cn` wins over
/// `.amazonaws.com`.
const AWS_SUFFIXES: &[&str] = &[
    ".amazonaws.com.cn",
    ".amazonaws.com",
    ".amazonaws.eu",
    ".api.amazonwebservices.com.cn",
    ".api.aws",
    ".c2s.ic.gov",
    ".sc2s.sgov.gov",
    ".cloud.adc-e.uk",
    ".csp.hci.ic.gov",
];

/// Signing names whose requests follow S3's canonicalisation: the path is signed as sent
/// (encoded once, never normalised) and `x-amz-content-sha256` is always sent.
const S3_SIGNING_NAMES: &[&str] = &["s3", "s3-object-lambda", "s3-outposts", "s3express"];

/// Whether a signing name follows S3's signing rules.
pub(crate) fn is_s3_signing_name(name: &str) -> bool {
    S3_SIGNING_NAMES.contains(&name)
}

/// The service entry for an endpoint prefix, if known.
pub(crate) fn by_endpoint(endpoint: &str) -> Option<&'static ServiceInfo> {
    SERVICES.iter().find(|s| s.endpoint == endpoint)
}

/// The service entry for a credential-scope signing name, if known.
pub(crate) fn by_signing_name(name: &str) -> Option<&'static ServiceInfo> {
    SERVICES.iter().find(|s| s.signing_name == name)
}

/// An AWS host name taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedHost {
    /// The endpoint prefix, e.g. `ec2`, `s3`, `execute-api` (`-fips` removed).
    pub endpoint: String,
    /// The region named by the host, if it names one.
    pub region: Option<String>,
    /// Labels left of the endpoint prefix, joined by dots: an S3 bucket, an API id, `streams`.
    pub prefix: Option<String>,
}

/// Whether `host` is a plain host name with an optional port: `[A-Za-z0-9.-]+(:[0-9]{1,5})?`.
///
/// Everything that names an AWS host passes; anything else (`/`, `?`, `@`, `%`, spaces, IPv6
/// brackets) could make a URI built from the host point somewhere else than the name the
/// policy saw, so it is never taken for an AWS host.
pub(crate) fn is_host_name(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    name_ok && port_ok
}

/// Removes the port from a `host[:port]` and lower-cases it; `None` unless [`is_host_name`].
pub(crate) fn host_without_port(host: &str) -> Option<String> {
    if !is_host_name(host) {
        return None;
    }
    let bare = host.split_once(':').map_or(host, |(name, _)| name);
    Some(bare.trim_end_matches('.').to_ascii_lowercase())
}

/// The part of `host` before its AWS partition suffix, if it has one.
fn strip_aws_suffix(host: &str) -> Option<&str> {
    AWS_SUFFIXES
        .iter()
        .find_map(|suffix| host.strip_suffix(suffix))
        .filter(|rest| !rest.is_empty())
}

/// Whether `host` (an SNI or a Host header, with or without port) is an AWS service host.
///
/// The gateway terminates TLS only for these; anything else is passed through or refused.
pub fn is_aws_host(host: &str) -> bool {
    host_without_port(host).is_some_and(|h| strip_aws_suffix(&h).is_some())
}

/// Whether a label looks like an AWS region: `us-east-1`, `eu-central-2`, `us-gov-west-1`,
/// `cn-north-1`, `us-isob-east-1`.
pub(crate) fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    let Some((last, head)) = parts.split_last() else {
        return false;
    };
    head.len() >= 2
        && !last.is_empty()
        && last.bytes().all(|b| b.is_ascii_digit())
        && head
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Takes an AWS host name apart; `None` if it is not one (or not a plain host name).
pub(crate) fn parse_host(host: &str) -> Option<ParsedHost> {
    let host = host_without_port(host)?;
    let rest = strip_aws_suffix(&host)?;
    let mut labels: Vec<&str> = rest.split('.').collect();

    let mut region = None;
    // Qualifiers sit right of the endpoint prefix.
    while let Some(&last) = labels.last() {
        if is_region(last) && region.is_none() {
            region = Some(last.to_owned());
        } else if !matches!(last, "dualstack" | "fips" | "vpce") {
            break;
        }
        labels.pop();
    }
    let label = labels.pop()?;
    let (endpoint, label_region) = split_endpoint_label(label);
    let region = region.or(label_region);
    let prefix = (!labels.is_empty()).then(|| labels.join("."));
    Some(ParsedHost {
        endpoint,
        region,
        prefix,
    })
}

/// Splits legacy dashed labels: `s3-us-west-2`, `s3-external-1`, `ec2-fips`, `s3-fips`.
fn split_endpoint_label(label: &str) -> (String, Option<String>) {
    let label = label.strip_suffix("-fips").unwrap_or(label);
    if label == "s3-external-1" {
        return ("s3".to_owned(), Some("us-east-1".to_owned()));
    }
    if let Some(rest) = label.strip_prefix("s3-") {
        if is_region(rest) {
            return ("s3".to_owned(), Some(rest.to_owned()));
        }
        if rest == "accelerate" {
            return ("s3".to_owned(), None);
        }
        if rest.starts_with("fips-") && is_region(&rest[5..]) {
            return ("s3".to_owned(), Some(rest[5..].to_owned()));
        }
    }
    if label.starts_with("s3express-") && label != "s3express-control" {
        // Zonal S3 Express endpoints: bucket--usw2-az1--x-s3.s3express-usw2-az1.region...
        return ("s3express".to_owned(), None);
    }
    (label.to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(host: &str) -> (String, Option<String>, Option<String>) {
        let p = parse_host(host).expect("an AWS host");
        (p.endpoint, p.region, p.prefix)
    }

    fn t(e: &str, r: Option<&str>, p: Option<&str>) -> (String, Option<String>, Option<String>) {
        (e.to_owned(), r.map(str::to_owned), p.map(str::to_owned))
    }

    #[test]
    fn aws_hosts_are_recognised() {
        for host in [
            "ec2.us-east-1.amazonaws.com",
            "sts.amazonaws.com",
            "s3.amazonaws.com:443",
            "bucket.s3.us-west-2.amazonaws.com",
            "ec2.cn-north-1.amazonaws.com.cn",
            "dynamodb.us-east-1.api.aws",
            "STS.AmazonAWS.com.",
        ] {
            assert!(is_aws_host(host), "{host}");
        }
        for host in [
            "amazonaws.com",
            "example.com",
            "amazonaws.com.evil.org",
            "api.aws",
            "",
        ] {
            assert!(!is_aws_host(host), "{host}");
        }
    }

    #[test]
    fn only_plain_host_names_are_hosts() {
        for host in [
            "ec2.us-east-1.amazonaws.com",
            "S3.AmazonAWS.com.:443",
            "a-b.c:1",
        ] {
            assert!(is_host_name(host), "{host}");
        }
        for host in [
            "",
            ":443",
            "127.0.0.5/x.ec2.us-east-1.amazonaws.com",
            "127.0.0.5?.ec2.us-east-1.amazonaws.com",
            "u@ec2.us-east-1.amazonaws.com",
            "ec2.us-east-1.amazonaws.com:",
            "ec2.us-east-1.amazonaws.com:123456",
            "ec2.us-east-1.amazonaws.com:44a",
            "ec2.us-east-1.amazonaws.com:1:2",
            "[::1]:443",
            " ec2.us-east-1.amazonaws.com",
            "ec2_x.us-east-1.amazonaws.com",
        ] {
            assert!(!is_host_name(host), "{host}");
            assert!(parse_host(host).is_none(), "{host}");
        }
    }

    #[test]
    fn hosts_are_taken_apart() {
        assert_eq!(
            parsed("ec2.us-east-1.amazonaws.com"),
            t("ec2", Some("us-east-1"), None)
        );
        assert_eq!(parsed("sts.amazonaws.com"), t("sts", None, None));
        assert_eq!(parsed("s3.amazonaws.com"), t("s3", None, None));
        assert_eq!(
            parsed("my.bucket.s3.us-west-2.amazonaws.com"),
            t("s3", Some("us-west-2"), Some("my.bucket"))
        );
        assert_eq!(
            parsed("b.s3.dualstack.eu-west-1.amazonaws.com"),
            t("s3", Some("eu-west-1"), Some("b"))
        );
        assert_eq!(
            parsed("b.s3-us-west-2.amazonaws.com"),
            t("s3", Some("us-west-2"), Some("b"))
        );
        assert_eq!(
            parsed("b.s3-accelerate.amazonaws.com"),
            t("s3", None, Some("b"))
        );
        assert_eq!(
            parsed("ec2-fips.us-east-1.amazonaws.com"),
            t("ec2", Some("us-east-1"), None)
        );
        assert_eq!(
            parsed("abc123.execute-api.us-east-1.amazonaws.com"),
            t("execute-api", Some("us-east-1"), Some("abc123"))
        );
        assert_eq!(
            parsed("streams.dynamodb.us-east-1.amazonaws.com"),
            t("dynamodb", Some("us-east-1"), Some("streams"))
        );
        assert_eq!(
            parsed("api.ecr.us-east-1.amazonaws.com"),
            t("ecr", Some("us-east-1"), Some("api"))
        );
        assert_eq!(
            parsed("dynamodb.us-east-1.api.aws:443"),
            t("dynamodb", Some("us-east-1"), None)
        );
        assert_eq!(
            parsed("iam.cn-north-1.amazonaws.com.cn"),
            t("iam", Some("cn-north-1"), None)
        );
    }

    #[test]
    fn regions_are_recognised() {
        for r in [
            "us-east-1",
            "us-gov-west-1",
            "cn-north-1",
            "us-isob-east-1",
            "ap-southeast-2",
        ] {
            assert!(is_region(r), "{r}");
        }
        for r in [
            "s3",
            "dualstack",
            "us-east",
            "east-1",
            "s3-external-1x",
            "1-2",
        ] {
            assert!(!is_region(r), "{r}");
        }
    }
}
