//! `aws::request::parse_authorization` over arbitrary Authorization header values.
//!
//! Invariants beyond "no panic":
//! - surrounding whitespace is ignored;
//! - a SigV4 scope has five non-empty parts that rebuild the credential as sent;
//! - every error is a `MalformedAuthorization` answered 400 AuthorizationHeaderMalformed.
#![no_main]

use interceptor::aws::{ClientSignature, RequestError, request::parse_authorization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // HeaderValue::to_str (what the gateway calls first) only yields visible ASCII; any UTF-8 is
    // a superset, so the parser is held to it too.
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_authorization(value);
    assert_eq!(
        parse_authorization(&format!(" \t{value} ")),
        parsed,
        "whitespace mattered"
    );

    match &parsed {
        Ok(ClientSignature::HeaderV4(scope)) => {
            assert!(
                value.trim().starts_with("AWS4-HMAC-SHA256 "),
                "V4 scope from {value:?}"
            );
            let parts = [
                &scope.access_key,
                &scope.date,
                &scope.region,
                &scope.service,
            ];
            assert!(
                parts.iter().all(|p| !p.is_empty() && !p.contains('/')),
                "{scope:?}"
            );
            let credential = format!(
                "{}/{}/{}/{}/aws4_request",
                scope.access_key, scope.date, scope.region, scope.service
            );
            assert!(
                value.contains(&credential),
                "{credential:?} not in {value:?}"
            );
        }
        Ok(ClientSignature::HeaderV4a { access_key }) => {
            assert!(
                value.trim().starts_with("AWS4-ECDSA-P256-SHA256"),
                "V4a from {value:?}"
            );
            assert!(!access_key.contains('/'), "access key {access_key:?}");
        }
        Ok(ClientSignature::Other { scheme }) => {
            assert!(
                value.trim().starts_with(scheme.as_str()),
                "scheme {scheme:?}"
            );
            assert!(!scheme.contains(' '), "scheme {scheme:?} has a space");
        }
        Ok(other) => panic!("a header parsed as {other:?}"),
        Err(err) => {
            assert!(
                matches!(err, RequestError::MalformedAuthorization { .. }),
                "{err:?}"
            );
            let (status, code) = err.status_and_code();
            assert_eq!(
                (status.as_u16(), code),
                (400, "AuthorizationHeaderMalformed")
            );
            assert!(!err.to_string().is_empty());
        }
    }
});
