//! `gateway::client_hello::peek` over arbitrary first bytes of a connection.
//!
//! Invariants beyond "no panic":
//! - a prefix of the input is `Incomplete` or gets the input's own verdict (the gateway peeks
//!   again as bytes arrive, so a verdict must never change once given);
//! - a verdict, once given, does not change when more bytes follow (the request after the hello);
//! - a server name is non-empty, lower-cased, visible ASCII.
#![no_main]

use interceptor::gateway::client_hello::{MAX_PEEK_BYTES, Peek, peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_PEEK_BYTES)];
    let verdict = peek(data);

    if let Peek::Hello(info) = &verdict
        && let Some(name) = &info.server_name
    {
        assert!(!name.is_empty(), "empty server name");
        let lower_visible = name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase());
        assert!(
            lower_visible,
            "server name {name:?} not lower-case visible ASCII"
        );
    }

    if verdict != Peek::Incomplete {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x16\x03\x01");
        assert_eq!(
            peek(&longer),
            verdict,
            "verdict changed when more bytes followed"
        );
    }

    // Every prefix would be O(n^2): the short ones, where the record header is read, and a few
    // cut points further on, including one byte short of the end of the record.
    let record_end = data
        .get(3..5)
        .map(|l| 5 + usize::from(u16::from_be_bytes([l[0], l[1]])));
    let cuts = (0..data.len().min(8))
        .chain([data.len() / 2, data.len().saturating_sub(1)])
        .chain(record_end.map(|end| end.saturating_sub(1)));
    for cut in cuts.filter(|&cut| cut < data.len()) {
        let partial = peek(&data[..cut]);
        assert!(
            partial == Peek::Incomplete || partial == verdict,
            "prefix of {cut} bytes: {partial:?}, whole input: {verdict:?}"
        );
    }
});
