//! `gateway::host_header` over arbitrary peeked plain-HTTP heads.
//!
//! Invariants beyond "no panic":
//! - the Host found is trimmed, lower-case and one line;
//! - only the head counts: once a blank line has arrived, bytes after it change nothing (the
//!   gateway decides on the first peek that has the whole head);
//! - an HTTP/2 preface never has a Host.
#![no_main]

use interceptor::gateway::host_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let host = host_header(data);
    if let Some(host) = &host {
        assert_eq!(host.trim(), host, "host not trimmed");
        assert!(!host.contains('\n'), "host {host:?} spans lines");
        assert!(
            !host.bytes().any(|b| b.is_ascii_uppercase()),
            "host {host:?} not lower-case"
        );
    }

    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = &data[..end + 4];
        assert_eq!(
            host_header(head),
            host,
            "bytes after the head changed the Host"
        );
        let mut more = head.to_vec();
        more.extend_from_slice(b"Host: other.example\r\n\r\n");
        assert_eq!(host_header(&more), host, "a header after the head was read");
    }

    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(data);
    assert_eq!(host_header(&h2), None, "an HTTP/2 preface has no Host");
});
