//! AWS-shaped error answers an agent's SDK parses like the service's own.
//!
//! Each protocol puts the code and message where the SDK parsers look (botocore's
//! `parsers.py`, the JS SDK's protocol deserialisers), so the AWS CLI prints
//! `An error occurred (AccessDenied) when calling the RunInstances operation: <message>`.
//! A 403 with an AccessDenied code is not retried by any SDK retry policy.

use super::request::Protocol;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

/// Builds the error answer for `protocol`.
///
/// - Query: `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`
/// - EC2: `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>`
/// - JSON 1.0/1.1: `{"__type": code, "message": ..}` with `x-amzn-errortype`
/// - REST-JSON: the same JSON body, `application/json`, with `x-amzn-errortype`
/// - REST-XML (S3) and unknown services: `<Error><Code/><Message/><RequestId/></Error>`
///
/// The request id goes in the body where the protocol has it and in the service's request id
/// header (`x-amzn-RequestId`, or `x-amz-request-id` for S3). A HEAD request's answer carries
/// no body on the wire (the HTTP server drops it); SDKs then read the status alone.
pub fn error_response(
    protocol: Protocol,
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<Bytes> {
    let (content_type, body) = match protocol {
        Protocol::Query => ("text/xml", query_body(status, code, message, request_id)),
        Protocol::Ec2Query => (
            "text/xml;charset=UTF-8",
            ec2_body(code, message, request_id),
        ),
        Protocol::Json10 => ("application/x-amz-json-1.0", json_body(code, message)),
        Protocol::Json11 => ("application/x-amz-json-1.1", json_body(code, message)),
        Protocol::RestJson => ("application/json", json_body(code, message)),
        Protocol::RestXml | Protocol::Unknown => {
            ("application/xml", rest_xml_body(code, message, request_id))
        }
    };

    let body = Bytes::from(body);
    let length = HeaderValue::from(response_len(&body));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, length);
    let id = header_value(request_id);
    match protocol {
        Protocol::RestXml => {
            headers.insert("x-amz-request-id", id.clone());
            headers.insert("x-amz-id-2", id);
        }
        Protocol::Unknown => {
            headers.insert("x-amz-request-id", id.clone());
            headers.insert("x-amzn-requestid", id);
        }
        _ => {
            headers.insert("x-amzn-requestid", id);
        }
    }
    if matches!(
        protocol,
        Protocol::Json10 | Protocol::Json11 | Protocol::RestJson
    ) {
        headers.insert("x-amzn-errortype", header_value(code));
    }
    response
}

/// A 403 denial with the code each protocol's SDKs expect for "access denied":
/// `AccessDeniedException` for the JSON protocols, `AccessDenied` for the XML ones.
pub fn access_denied(protocol: Protocol, message: &str, request_id: &str) -> Response<Bytes> {
    let code = match protocol {
        Protocol::Json10 | Protocol::Json11 | Protocol::RestJson => "AccessDeniedException",
        _ => "AccessDenied",
    };
    error_response(protocol, StatusCode::FORBIDDEN, code, message, request_id)
}

/// A fresh request id for answers the gateway makes itself (UUID v4 shape, like AWS's).
pub fn new_request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

fn response_len(body: &Bytes) -> u64 {
    // usize always fits u64 on the targets we build for.
    u64::try_from(body.len()).unwrap_or(u64::MAX)
}

/// A header value from text that may hold anything: bytes a header cannot carry are dropped.
fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    // Only visible ASCII and spaces remain, which HeaderValue always accepts.
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn query_body(status: StatusCode, code: &str, message: &str, request_id: &str) -> String {
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Type>{kind}</Type>\
         <Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>\n",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

fn ec2_body(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code>\
         <Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>\n",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

fn rest_xml_body(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <RequestId>{}</RequestId></Error>\n",
        xml_escape(code),
        xml_escape(message),
        xml_escape(request_id)
    )
}

fn json_body(code: &str, message: &str) -> String {
    serde_json::json!({ "__type": code, "message": message }).to_string()
}

/// Escapes text for XML character data; characters XML 1.0 forbids become U+FFFD.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: &Response<Bytes>) -> &str {
        std::str::from_utf8(r.body()).expect("error bodies are UTF-8")
    }

    fn header<'a>(r: &'a Response<Bytes>, name: &str) -> &'a str {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The text of the first `<tag>` element, as an XML parser would give it back.
    fn element(xml: &str, tag: &str) -> Option<String> {
        let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
        let end = start + xml[start..].find(&format!("</{tag}>"))?;
        Some(
            xml[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    }

    const MSG: &str = "denied by rule \"no <big> launches\" & friends";

    #[test]
    fn query_error_is_where_botocore_looks() {
        let r = error_response(
            Protocol::Query,
            StatusCode::FORBIDDEN,
            "AccessDenied",
            MSG,
            "r-1",
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let xml = body(&r);
        assert!(
            xml.contains("<ErrorResponse><Error><Type>Sender</Type>"),
            "{xml}"
        );
        assert_eq!(element(xml, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(element(xml, "Message").as_deref(), Some(MSG));
        assert_eq!(element(xml, "RequestId").as_deref(), Some("r-1"));
        assert_eq!(header(&r, "x-amzn-requestid"), "r-1");
        assert_eq!(header(&r, "content-length"), xml.len().to_string());
    }

    #[test]
    fn query_server_errors_are_receiver_errors() {
        let r = error_response(Protocol::Query, StatusCode::BAD_GATEWAY, "X", "m", "r");
        assert!(body(&r).contains("<Type>Receiver</Type>"));
    }

    #[test]
    fn ec2_error_has_its_own_shape() {
        let r = access_denied(Protocol::Ec2Query, MSG, "r-2");
        let xml = body(&r);
        assert!(
            xml.contains("<Response><Errors><Error><Code>AccessDenied</Code>"),
            "{xml}"
        );
        assert_eq!(element(xml, "Message").as_deref(), Some(MSG));
        assert_eq!(element(xml, "RequestID").as_deref(), Some("r-2"));
    }

    #[test]
    fn json_errors_carry_type_and_header() {
        for (protocol, ct) in [
            (Protocol::Json10, "application/x-amz-json-1.0"),
            (Protocol::Json11, "application/x-amz-json-1.1"),
            (Protocol::RestJson, "application/json"),
        ] {
            let r = access_denied(protocol, MSG, "r-3");
            let v: serde_json::Value = serde_json::from_slice(r.body()).expect("valid JSON");
            assert_eq!(v["__type"], "AccessDeniedException");
            assert_eq!(v["message"], MSG);
            assert_eq!(header(&r, "x-amzn-errortype"), "AccessDeniedException");
            assert_eq!(header(&r, "content-type"), ct);
            assert_eq!(header(&r, "x-amzn-requestid"), "r-3");
        }
    }

    #[test]
    fn s3_and_unknown_services_get_the_error_element() {
        for protocol in [Protocol::RestXml, Protocol::Unknown] {
            let r = access_denied(protocol, MSG, "r-4");
            let xml = body(&r);
            assert!(xml.contains("\n<Error><Code>AccessDenied</Code>"), "{xml}");
            assert_eq!(element(xml, "Message").as_deref(), Some(MSG));
            assert_eq!(element(xml, "RequestId").as_deref(), Some("r-4"));
            assert_eq!(header(&r, "x-amz-request-id"), "r-4");
        }
    }

    #[test]
    fn control_characters_never_break_the_xml() {
        let r = error_response(
            Protocol::RestXml,
            StatusCode::FORBIDDEN,
            "C",
            "a\u{1}b",
            "r\nid",
        );
        assert_eq!(element(body(&r), "Message").as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(header(&r, "x-amz-request-id"), "rid");
    }

    #[test]
    fn request_ids_look_like_aws_ones() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, new_request_id());
    }
}
