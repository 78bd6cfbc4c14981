//! The aws-chunked re-framer (`aws::chunked`) over arbitrary bodies, in both declared variants
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD` and `...-PAYLOAD-TRAILER`), and `parse_chunk_header`
//! over the body's first line.
//!
//! Invariants beyond "no panic":
//! - re-signing keeps the length (Content-Length and x-amz-decoded-content-length are signed as
//!   sent) and changes nothing but signature hex digits;
//! - the same body fed to `ChunkResigner::push` in arbitrary pieces gives the same bytes, or the
//!   same kind of error, as `resign_all` on the whole (reads may split the framing anywhere);
//! - re-signing a re-signed body with the same chain gives it back (the chain depends on the
//!   data and trailers, never on the agent's signatures);
//! - a parsed chunk header is `<hex size>;chunk-signature=<64 hex>` exactly, size in bounds.
#![no_main]

use bytes::Bytes;
use interceptor::aws::chunked::{
    ChunkResigner, ChunkSigner, ChunkedError, MAX_CHUNK_BYTES, Variant, parse_chunk_header,
    resign_all,
};
use libfuzzer_sys::fuzz_target;

const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

fn signer(variant: Variant) -> ChunkSigner {
    ChunkSigner::new(
        variant,
        b"fuzz signing key",
        "20130524T000000Z".to_owned(),
        "20130524/us-east-1/s3/aws4_request".to_owned(),
        SEED.to_owned(),
    )
}

/// Piece lengths from a small PRNG seeded by the input, so a corpus file is a plain body.
fn pieces(data: &[u8]) -> impl Iterator<Item = usize> {
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Half tiny reads (splits inside CRLFs, headers and signatures), half large ones.
        Some(if state % 2 == 0 {
            (state >> 8) as usize % 8192
        } else {
            (state >> 8) as usize % 5
        })
    })
}

fn resign_in_pieces(data: &[u8], variant: Variant) -> Result<Vec<u8>, ChunkedError> {
    let mut resigner = ChunkResigner::new(signer(variant));
    let mut out = Vec::new();
    let mut rest = data;
    let mut lengths = pieces(data);
    while !rest.is_empty() {
        let take = lengths.next().unwrap_or(1).min(rest.len());
        let (piece, tail) = rest.split_at(take);
        resigner.push(Bytes::copy_from_slice(piece), &mut out)?;
        rest = tail;
    }
    resigner.finish()?;
    Ok(out.concat())
}

fn check_body(data: &[u8], variant: Variant) {
    let whole = resign_all(data, signer(variant));
    let split = resign_in_pieces(data, variant);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert!(a == b, "split reads re-signed differently"),
        (Err(a), Err(b)) => assert_eq!(
            std::mem::discriminant(a),
            std::mem::discriminant(b),
            "whole: {a}; split: {b}"
        ),
        _ => panic!("whole: {whole:?}; split: {split:?}"),
    }
    let Ok(out) = whole else { return };
    assert_eq!(out.len(), data.len(), "re-signing changed the length");
    for (i, (&a, &b)) in data.iter().zip(&out).enumerate() {
        assert!(
            a == b || (a.is_ascii_hexdigit() && b.is_ascii_hexdigit()),
            "byte {i} changed"
        );
    }
    let again = resign_all(&out, signer(variant)).expect("a re-signed body re-signs");
    assert!(again == out, "re-signing the re-signed body changed it");
}

fn check_header(data: &[u8]) {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(header) = parse_chunk_header(line) else {
        return;
    };
    assert!(header.size <= MAX_CHUNK_BYTES);
    assert!(!header.size_text.is_empty() && header.size_text.len() <= 16);
    assert!(header.signature.len() == 64 && header.signature.iter().all(u8::is_ascii_hexdigit));
    let text = std::str::from_utf8(header.size_text).expect("hex digits are ASCII");
    assert_eq!(u64::from_str_radix(text, 16).ok(), Some(header.size));
    let rebuilt = [header.size_text, b";chunk-signature=", header.signature].concat();
    assert!(rebuilt == line, "header is more than size and signature");
}

fuzz_target!(|data: &[u8]| {
    check_header(data);
    check_body(data, Variant::Payload);
    check_body(data, Variant::PayloadTrailer);
});
