//! Requests whose operation or parameters could be read two ways: each is refused, or read the
//! way the service reads it. One test per defect found by the adversarial e2e suite
//! (tests/e2e/test_break_policy.py, test_break_host.py), plus their near relatives.

use super::tests::head;
use super::*;

fn auth(region: &str, service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=AKIDPLACEHOLDER/20261204/{region}/{service}/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00ff"
    )
}

const EC2: &str = "ec2.us-east-1.amazonaws.com";
const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";
const RUN: &str = "Action=RunInstances&Version=2016-11-15&ImageId=ami-1&MinCount=1&MaxCount=1";

fn ec2(
    method: &str,
    uri: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Result<AwsRequest, RequestError> {
    let a = auth("us-east-1", "ec2");
    let mut headers = vec![("host", EC2), ("authorization", a.as_str())];
    headers.extend_from_slice(extra);
    classify(&head(method, uri, &headers), Some(body))
}

fn ssm(uri: &str, extra: &[(&str, &str)], body: &[u8]) -> Result<AwsRequest, RequestError> {
    let a = auth("us-east-1", "ssm");
    let mut headers = vec![
        ("host", "ssm.us-east-1.amazonaws.com"),
        ("authorization", a.as_str()),
    ];
    if !extra.iter().any(|(k, _)| *k == "content-type") {
        headers.push(("content-type", "application/x-amz-json-1.1"));
    }
    headers.extend_from_slice(extra);
    classify(&head("POST", uri, &headers), Some(body))
}

fn action(r: &Result<AwsRequest, RequestError>) -> Option<&str> {
    r.as_ref().ok()?.action.as_deref()
}

// --- 1. X-Amz-Target next to an Action ------------------------------------------------------

#[test]
fn x_amz_target_with_a_query_action_is_refused() {
    let get = [("x-amz-target", "AmazonSSM.GetParameter")];
    let r = ssm("/?Action=DeleteParameter", &get, br#"{"Name":"p"}"#);
    let Err(RequestError::ConflictingOperation { first, second, .. }) = &r else {
        panic!("not refused as conflicting: {r:?}");
    };
    assert!(first.contains("GetParameter") && second.contains("DeleteParameter"));
    // Any letter case of the key, and other query parameters (read first by some servers).
    assert!(ssm("/?action=DeleteParameter", &get, b"{}").is_err());
    assert!(matches!(
        ssm("/?Name=prod", &get, br#"{"Name":"dev"}"#),
        Err(RequestError::UnexpectedParameter { .. })
    ));
    // The plain call still classifies.
    let r = ssm("/", &get, br#"{"Name":"p"}"#);
    assert_eq!(action(&r), Some("ssm:GetParameter"));
}

#[test]
fn x_amz_target_with_a_form_action_in_the_body_is_refused() {
    let get = [("x-amz-target", "AmazonSSM.GetParameter")];
    // A form body (moto reads it as a form and dispatches its Action).
    let r = ssm(
        "/",
        &[get[0], ("content-type", FORM)],
        b"Action=DeleteParameter&Name=p",
    );
    assert!(
        matches!(r, Err(RequestError::MalformedBody { .. })),
        "{r:?}"
    );
    // A JSON body that, read as a form, names an Action or one of its own parameters again.
    let r = ssm("/", &get, br#"{"Name":"p","x":"&Action=DeleteParameter"}"#);
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );
    let r = ssm("/", &get, br#"{"Name":"dev","x":"&Name=prod&"}"#);
    assert!(
        matches!(r, Err(RequestError::UnexpectedParameter { .. })),
        "{r:?}"
    );
    // An `=` and `&` inside a value that names nothing again is fine.
    let r = ssm("/", &get, br#"{"Name":"p","Value":"https://x/?a=1&b=2"}"#);
    assert_eq!(action(&r), Some("ssm:GetParameter"));
}

#[test]
fn x_amz_target_must_be_one_well_formed_name() {
    let h = head(
        "POST",
        "/",
        &[
            ("host", "ssm.us-east-1.amazonaws.com"),
            ("x-amz-target", "AmazonSSM.GetParameter"),
            ("x-amz-target", "AmazonSSM.DeleteParameter"),
        ],
    );
    assert!(matches!(
        classify(&h, Some(b"{}")),
        Err(RequestError::RepeatedParameter { .. })
    ));
    for bad in [
        "GetParameter",
        "AmazonSSM.",
        "AmazonSSM.Get Parameter",
        "AmazonSSM.Get-It",
    ] {
        let r = ssm("/", &[("x-amz-target", bad)], b"{}");
        assert!(
            matches!(r, Err(RequestError::InvalidOperationName { .. })),
            "{bad}: {r:?}"
        );
    }
}

#[test]
fn rest_services_refuse_rpc_operation_names() {
    let a = auth("us-west-2", "lambda");
    let invoke = "/2015-03-31/functions/f/invocations";
    let lambda = |uri: &str, extra: &[(&str, &str)], body: &[u8]| {
        let mut headers = vec![
            ("host", "lambda.us-west-2.amazonaws.com"),
            ("authorization", &a),
        ];
        headers.extend_from_slice(extra);
        classify(&head("POST", uri, &headers), Some(body))
    };
    let r = lambda(&format!("{invoke}?Action=GetFunction"), &[], b"{}");
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );
    let r = lambda(invoke, &[("x-amz-target", "AWSLambda.GetFunction")], b"{}");
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );
    let r = lambda(invoke, &[("content-type", FORM)], b"Action=GetFunction");
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );
    let r = lambda(invoke, &[], b"{}");
    assert_eq!(action(&r), Some("lambda:InvokeFunction"));
    assert_eq!(r.map(|r| r.protocol).ok(), Some(Protocol::RestJson));

    let h = head(
        "DELETE",
        "/2013-04-01/hostedzone/Z1?Action=ListHostedZones",
        &[("host", "route53.amazonaws.com")],
    );
    assert!(matches!(
        classify(&h, Some(b"")),
        Err(RequestError::ConflictingOperation { .. })
    ));
}

// --- 2. Action or Version given twice -------------------------------------------------------

#[test]
fn a_repeated_action_is_refused_in_body_and_query() {
    let body = format!("{RUN}&Action=DescribeInstances");
    let r = ec2("POST", "/", &[("content-type", FORM)], body.as_bytes());
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );

    let r = ec2("GET", &format!("/?{body}"), &[], b"");
    assert!(
        matches!(r, Err(RequestError::ConflictingOperation { .. })),
        "{r:?}"
    );
    // Already at the head-only pass.
    let h = head("GET", &format!("/?{body}"), &[("host", EC2)]);
    assert!(classify(&h, None).is_err());

    // Two Content-Types: which one decides form or not is up to the reader.
    let two = [("content-type", "text/plain"), ("content-type", FORM)];
    let r = ec2("POST", "/", &two, RUN.as_bytes());
    assert!(
        matches!(r, Err(RequestError::RepeatedParameter { .. })),
        "{r:?}"
    );

    // The same Action twice, and Version twice, are still more than one.
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM)],
        b"Action=DescribeInstances&Action=DescribeInstances",
    );
    assert!(
        matches!(r, Err(RequestError::RepeatedParameter { .. })),
        "{r:?}"
    );
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM)],
        format!("{RUN}&Version=1").as_bytes(),
    );
    assert!(
        matches!(r, Err(RequestError::RepeatedParameter { .. })),
        "{r:?}"
    );
}

#[test]
fn query_action_and_body_action_must_not_both_appear() {
    let r = ec2(
        "POST",
        "/?Action=DescribeInstances",
        &[("content-type", FORM)],
        RUN.as_bytes(),
    );
    let Err(RequestError::ConflictingOperation { first, second, .. }) = &r else {
        panic!("not refused: {r:?}");
    };
    assert!(
        first.contains("query") && second.contains("body"),
        "{first} / {second}"
    );
    let r = ec2(
        "POST",
        "/?Action=RunInstances",
        &[("content-type", FORM)],
        RUN.as_bytes(),
    );
    assert!(
        matches!(r, Err(RequestError::RepeatedParameter { .. })),
        "{r:?}"
    );
}

#[test]
fn any_repeated_query_parameter_or_odd_action_spelling_is_refused() {
    let body = format!("{RUN}&InstanceType=t3.micro&InstanceType=p4d.24xlarge");
    let r = ec2("POST", "/", &[("content-type", FORM)], body.as_bytes());
    assert!(
        matches!(r, Err(RequestError::RepeatedParameter { .. })),
        "{r:?}"
    );
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM)],
        b"action=RunInstances",
    );
    assert!(
        matches!(r, Err(RequestError::UnexpectedParameter { .. })),
        "{r:?}"
    );
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM)],
        b"Action=Run%20Instances",
    );
    assert!(
        matches!(r, Err(RequestError::InvalidOperationName { .. })),
        "{r:?}"
    );
}

// --- 3. Form bodies whatever the Content-Type spelling, or none ----------------------------

#[test]
fn form_content_type_is_matched_without_regard_to_case() {
    for ct in [
        "Application/X-WWW-Form-Urlencoded",
        "APPLICATION/X-WWW-FORM-URLENCODED; Charset=UTF-8",
        " application/x-www-form-urlencoded ;charset=utf-8",
    ] {
        let r = ec2("POST", "/", &[("content-type", ct)], RUN.as_bytes());
        assert_eq!(action(&r), Some("ec2:RunInstances"), "{ct}: {r:?}");
    }
    // The SQS form (query protocol) is told from its JSON protocol the same way.
    let a = auth("us-east-1", "sqs");
    let h = head(
        "POST",
        "/",
        &[
            ("host", "sqs.us-east-1.amazonaws.com"),
            ("authorization", &a),
            ("content-type", "Application/X-WWW-Form-Urlencoded"),
        ],
    );
    let r = classify(&h, Some(b"Action=DeleteQueue&QueueUrl=q"));
    assert_eq!(action(&r), Some("sqs:DeleteQueue"));
}

#[test]
fn a_query_protocol_body_without_content_type_is_read_as_a_form() {
    let r = ec2("POST", "/", &[], RUN.as_bytes());
    assert_eq!(action(&r), Some("ec2:RunInstances"));
    let r = r.expect("classifies");
    assert_eq!(
        r.params.get("MaxCount").and_then(ParamValue::as_f64),
        Some(1.0)
    );

    // STS and IAM (query protocol by their host) too.
    let h = head("POST", "/", &[("host", "iam.amazonaws.com")]);
    let r = classify(&h, Some(b"Action=DeleteUser&UserName=bob"));
    assert_eq!(action(&r), Some("iam:DeleteUser"));
    // A JSON-protocol service whose untyped body is a form with an Action is read as query.
    let h = head("POST", "/", &[("host", "sqs.us-east-1.amazonaws.com")]);
    let r = classify(&h, Some(b"Action=DeleteQueue&QueueUrl=q"));
    assert_eq!(action(&r), Some("sqs:DeleteQueue"));
}

#[test]
fn a_query_protocol_body_under_another_content_type_is_refused() {
    for ct in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/json",
    ] {
        let r = ec2("POST", "/", &[("content-type", ct)], RUN.as_bytes());
        assert!(
            matches!(r, Err(RequestError::MalformedBody { .. })),
            "{ct}: {r:?}"
        );
    }
    // Empty bodies under any type are fine: the query string carries the call.
    let r = ec2(
        "POST",
        "/?Action=DescribeInstances",
        &[("content-type", "text/plain")],
        b"",
    );
    assert_eq!(action(&r), Some("ec2:DescribeInstances"));
}

#[test]
fn a_gzip_body_is_classified_decoded() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(RUN.as_bytes()).expect("writes to memory");
    let body = gz.finish().expect("writes to memory");
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM), ("content-encoding", "gzip")],
        &body,
    );
    assert_eq!(action(&r), Some("ec2:RunInstances"));
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM), ("content-encoding", "br")],
        &body,
    );
    assert!(
        matches!(r, Err(RequestError::MalformedBody { .. })),
        "{r:?}"
    );
    let r = ec2(
        "POST",
        "/",
        &[("content-type", FORM), ("content-encoding", "gzip")],
        RUN.as_bytes(),
    );
    assert!(
        matches!(r, Err(RequestError::MalformedBody { .. })),
        "{r:?}"
    );
}

// --- 4. JSON bodies that do not parse -------------------------------------------------------

fn dynamodb(body: &[u8]) -> Result<AwsRequest, RequestError> {
    let a = auth("us-east-1", "dynamodb");
    let h = head(
        "POST",
        "/",
        &[
            ("host", "dynamodb.us-east-1.amazonaws.com"),
            ("authorization", &a),
            ("x-amz-target", "DynamoDB_20120810.DeleteTable"),
            ("content-type", "application/x-amz-json-1.0"),
        ],
    );
    classify(&h, Some(body))
}

#[test]
fn a_json_body_that_does_not_parse_is_refused() {
    let nested = format!(
        r#"{{"TableName":"prod-t","Pad":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let r = dynamodb(nested.as_bytes());
    let Err(RequestError::MalformedBody { service, reason }) = &r else {
        panic!("not refused: {r:?}");
    };
    assert_eq!(service, "dynamodb");
    assert!(reason.contains("recursion limit"), "{reason}");
    for bad in [
        &br#"{"TableName":"prod-t""#[..],
        b"not json",
        br#"["TableName"]"#,
    ] {
        let r = dynamodb(bad);
        assert!(
            matches!(r, Err(RequestError::MalformedBody { .. })),
            "{r:?}"
        );
    }
    // A key given twice: parsers differ on which value wins.
    let r = dynamodb(br#"{"TableName":"dev-t","TableName":"prod-t"}"#);
    assert!(
        matches!(r, Err(RequestError::MalformedBody { .. })),
        "{r:?}"
    );
    // Empty and well-formed bodies classify, parameters read.
    assert_eq!(action(&dynamodb(b"")), Some("dynamodb:DeleteTable"));
    let r = dynamodb(br#"{"TableName":"prod-t","N":[1.5,-2,null]}"#).expect("classifies");
    assert_eq!(
        r.params.get("TableName"),
        Some(&ParamValue::Str("prod-t".into()))
    );
    assert_eq!(r.params.get("N.2").and_then(ParamValue::as_f64), Some(-2.0));
}

#[test]
fn a_rest_json_body_that_does_not_parse_is_refused() {
    let a = auth("us-west-2", "lambda");
    let h = head(
        "PUT",
        "/2015-03-31/functions/f/configuration",
        &[
            ("host", "lambda.us-west-2.amazonaws.com"),
            ("authorization", &a),
        ],
    );
    let r = classify(&h, Some(br#"{"Role":"r""#));
    assert!(
        matches!(r, Err(RequestError::MalformedBody { .. })),
        "{r:?}"
    );
    let r = classify(&h, Some(br#"{"Role":"r"}"#));
    assert_eq!(action(&r), Some("lambda:UpdateFunctionConfiguration"));
    // An API Gateway stage's body is the agent's own payload: anything goes.
    let h = head(
        "POST",
        "/prod/x",
        &[("host", "abc.execute-api.us-east-1.amazonaws.com")],
    );
    assert!(classify(&h, Some(b"a=1&Action=Anything")).is_ok());
}

// --- 6. Hosts -------------------------------------------------------------------------------

#[test]
fn hosts_with_characters_outside_a_host_name_are_refused() {
    for host in [
        "127.0.0.5/x.ec2.us-east-1.amazonaws.com",
        "127.0.0.5?.ec2.us-east-1.amazonaws.com",
        "127.0.0.5#.ec2.us-east-1.amazonaws.com",
        "evil@ec2.us-east-1.amazonaws.com",
        "ec2.us-east-1.amazonaws.com:443/x",
        "ec2.us-east-1.amazonaws.com:",
        "ec2.us-east-1.amazonaws.com:99999x",
        "[::1].ec2.us-east-1.amazonaws.com",
        "ec2.us-east-1.amazonaws.com\\x",
        "ec2%2Eus-east-1.amazonaws.com",
    ] {
        let h = head("GET", "/?Action=DescribeRegions", &[("host", host)]);
        let r = classify(&h, None);
        assert!(
            matches!(r, Err(RequestError::InvalidHost { .. })),
            "{host}: {r:?}"
        );
        assert!(!is_aws_host(host), "{host}");
    }
    let h = head(
        "GET",
        "/?Action=DescribeRegions",
        &[("host", "ec2.us-east-1.amazonaws.com:443")],
    );
    assert_eq!(action(&classify(&h, None)), Some("ec2:DescribeRegions"));
}

#[test]
fn a_request_naming_two_hosts_is_refused() {
    let h = head(
        "GET",
        "/?Action=DescribeRegions",
        &[("host", EC2), ("host", "127.0.0.5")],
    );
    assert!(matches!(
        classify(&h, None),
        Err(RequestError::RepeatedParameter { .. })
    ));
    let h = head(
        "GET",
        "https://127.0.0.5/?Action=DescribeRegions",
        &[("host", EC2)],
    );
    assert!(matches!(
        classify(&h, None),
        Err(RequestError::ConflictingOperation { .. })
    ));
    // The same host in both places is one host.
    let h = head(
        "GET",
        &format!("https://{EC2}/?Action=DescribeRegions"),
        &[("host", EC2)],
    );
    assert_eq!(action(&classify(&h, None)), Some("ec2:DescribeRegions"));
}

#[test]
fn refusals_are_client_errors_naming_the_value() {
    let r = ssm(
        "/?Action=DeleteParameter",
        &[("x-amz-target", "AmazonSSM.GetParameter")],
        b"{}",
    );
    let err = r.expect_err("refused");
    assert_eq!(
        err.status_and_code(),
        (http::StatusCode::BAD_REQUEST, "InvalidRequest")
    );
    let text = err.to_string();
    assert!(
        text.contains("DeleteParameter") && text.contains("ssm"),
        "{text}"
    );
}

#[test]
fn a_sigv2_presigned_url_is_recognised_as_presigned() {
    let (parts, _) = http::Request::get(
        "/photo.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=%2FFIn%2BVMUfVVcLdBoQaLwvUA%2FxUU%3D&Expires=1796407048",
    )
    .header("host", "amzn-s3-demo-bucket.s3.amazonaws.com")
    .body(())
    .unwrap()
    .into_parts();
    let request = classify(&parts, None).unwrap();
    assert!(matches!(request.client_signature, ClientSignature::Presigned(_)));
}
