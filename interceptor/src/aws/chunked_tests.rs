//! Tests of chunk re-signing: the AWS documentation's examples, a verifier that recomputes the
//! whole chain independently, every split of the agent's reads, malformed framing, and an
//! upstream of our own that checks seed, chunks and trailer as S3 would.

use super::*;
use crate::aws::request::classify;
use crate::aws::sigv4::{chunk_signed, resign_chunked};
use aws_credential_types::Credentials;
use aws_sigv4::sign::v4::calculate_signature;
use std::time::SystemTime;

/// The AWS documentation's example credentials and scope (sigv4-streaming).
const DOC_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const DOC_DATE_TIME: &str = "20130524T000000Z";
const DOC_SCOPE: &str = "20130524/us-east-1/s3/aws4_request";

/// HMAC-SHA256, raw bytes (the primitive; everything above it is rebuilt here independently).
fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    hex::decode(calculate_signature(key, data.as_bytes())).expect("hex from the signer")
}

/// The SigV4 signing key, derived step by step.
fn derive_key(secret: &str, scope: &str) -> Vec<u8> {
    let mut parts = scope.split('/');
    let mut key = format!("AWS4{secret}").into_bytes();
    for _ in 0..3 {
        key = hmac(&key, parts.next().expect("scope has date/region/service"));
    }
    hmac(&key, "aws4_request")
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Who signed a stream: key, date, scope, seed.
#[derive(Clone)]
struct Chain {
    key: Vec<u8>,
    date_time: String,
    scope: String,
    seed: String,
}

impl Chain {
    fn doc(seed: &str) -> Self {
        Chain {
            key: derive_key(DOC_SECRET, DOC_SCOPE),
            date_time: DOC_DATE_TIME.to_owned(),
            scope: DOC_SCOPE.to_owned(),
            seed: seed.to_owned(),
        }
    }

    fn placeholder() -> Self {
        Chain {
            key: derive_key("placeholderSecretOfTheAgent", DOC_SCOPE),
            seed: "0".repeat(64),
            ..Chain::doc("")
        }
    }

    fn signer(&self, variant: Variant) -> ChunkSigner {
        ChunkSigner::new(
            variant,
            &self.key,
            self.date_time.clone(),
            self.scope.clone(),
            self.seed.clone(),
        )
    }

    fn sign(&self, algorithm: &str, previous: &str, hashes: &str) -> String {
        let sts = format!(
            "{algorithm}\n{}\n{}\n{previous}\n{hashes}",
            self.date_time, self.scope
        );
        calculate_signature(&self.key, sts.as_bytes())
    }

    fn chunk_signature(&self, previous: &str, data: &[u8]) -> String {
        let empty = sha_hex(b"");
        self.sign(
            "AWS4-HMAC-SHA256-PAYLOAD",
            previous,
            &format!("{empty}\n{}", sha_hex(data)),
        )
    }

    fn trailer_signature(&self, previous: &str, trailers: &[(&str, &str)]) -> String {
        let mut sorted: Vec<String> = trailers
            .iter()
            .map(|(n, v)| format!("{}:{}\n", n.to_lowercase(), v.trim()))
            .collect();
        sorted.sort();
        self.sign(
            "AWS4-HMAC-SHA256-TRAILER",
            previous,
            &sha_hex(sorted.concat().as_bytes()),
        )
    }

    /// An aws-chunked stream as an SDK writes it; `trailers` is `Some` for -TRAILER.
    fn stream(&self, chunks: &[&[u8]], trailers: Option<&[(&str, &str)]>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut previous = self.seed.clone();
        for data in chunks.iter().copied().chain([&b""[..]]) {
            previous = self.chunk_signature(&previous, data);
            out.extend(format!("{:x};chunk-signature={previous}\r\n", data.len()).bytes());
            if !data.is_empty() {
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(trailers) = trailers {
            for (name, value) in trailers {
                out.extend(format!("{name}:{value}\r\n").bytes());
            }
            let signature = self.trailer_signature(&previous, trailers);
            out.extend(format!("x-amz-trailer-signature:{signature}\r\n").bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Checks every signature of `stream` against this chain, as S3 does; returns the decoded
    /// data and the signatures seen.
    fn verify(&self, stream: &[u8]) -> Result<(Vec<u8>, Vec<String>), String> {
        let mut rest = stream;
        let mut decoded = Vec::new();
        let mut previous = self.seed.clone();
        let mut seen = Vec::new();
        loop {
            let (line, after) = split_line(rest)?;
            let (size, signature) = line
                .split_once(";chunk-signature=")
                .ok_or(format!("bad chunk header {line:?}"))?;
            let size = usize::from_str_radix(size, 16).map_err(|e| format!("size {size}: {e}"))?;
            let data = after.get(..size).ok_or("short chunk")?;
            let expected = self.chunk_signature(&previous, data);
            if signature != expected {
                return Err(format!(
                    "chunk {} signature {signature} != {expected}",
                    seen.len()
                ));
            }
            seen.push(expected.clone());
            previous = expected;
            decoded.extend_from_slice(data);
            if size == 0 {
                rest = after;
                break;
            }
            rest = after[size..]
                .strip_prefix(b"\r\n")
                .ok_or("no CRLF after chunk data")?;
        }
        let mut trailers: Vec<(String, String)> = Vec::new();
        loop {
            let (line, after) = split_line(rest)?;
            rest = after;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or("bad trailer")?;
            if name == "x-amz-trailer-signature" {
                let pairs: Vec<(&str, &str)> = trailers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let expected = self.trailer_signature(&previous, &pairs);
                if value != expected {
                    return Err(format!("trailer signature {value} != {expected}"));
                }
                seen.push(expected);
            } else {
                trailers.push((name.to_owned(), value.to_owned()));
            }
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the end", rest.len()));
        }
        Ok((decoded, seen))
    }
}

fn split_line(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    let at = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or("no CRLF")?;
    let line = std::str::from_utf8(&bytes[..at]).map_err(|e| e.to_string())?;
    Ok((line, &bytes[at + 2..]))
}

/// The signatures of a stream, in order.
fn signatures(stream: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(stream);
    let mut out = Vec::new();
    for marker in ["chunk-signature=", "x-amz-trailer-signature:"] {
        for (at, _) in text.match_indices(marker) {
            let start = at + marker.len();
            out.push((start, text[start..start + 64].to_owned()));
        }
    }
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

const CRC: (&str, &str) = ("x-amz-checksum-crc32c", "sOO8/Q==");

#[test]
fn the_aws_documentation_example_chain_is_reproduced() {
    // sigv4-streaming: 65 KiB of 'a' in a 64 KiB and a 1 KiB chunk.
    let data = vec![b'a'; 66_560];
    let seed = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    let agent = Chain::placeholder().stream(&[&data[..65_536], &data[65_536..]], None);
    let out = resign_all(&agent, Chain::doc(seed).signer(Variant::Payload)).expect("re-signs");
    assert_eq!(
        signatures(&out),
        [
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ]
    );
}

#[test]
fn the_aws_documentation_trailer_example_is_reproduced() {
    // sigv4-streaming-trailers: the same body with a CRC32C trailer.
    let data = vec![b'a'; 66_560];
    let seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
    let agent = Chain::placeholder().stream(&[&data[..65_536], &data[65_536..]], Some(&[CRC]));
    let out =
        resign_all(&agent, Chain::doc(seed).signer(Variant::PayloadTrailer)).expect("re-signs");
    assert_eq!(
        signatures(&out),
        [
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
            "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
        ]
    );
}

fn session_chain() -> Chain {
    Chain {
        key: derive_key("sessionSecret/Example+Key", DOC_SCOPE),
        seed: "5eed".repeat(16),
        ..Chain::doc("")
    }
}

#[test]
fn the_chain_is_rebuilt_from_the_seed_and_lengths_kept() {
    let body: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    for trailers in [None, Some(&[CRC, ("x-amz-meta-note", "  two words ")][..])] {
        let variant = if trailers.is_some() {
            Variant::PayloadTrailer
        } else {
            Variant::Payload
        };
        let agent = Chain::placeholder().stream(&[&body[..65_536], &body[65_536..]], trailers);
        let out = resign_all(&agent, session_chain().signer(variant)).expect("re-signs");

        assert_eq!(out.len(), agent.len(), "Content-Length stays exact");
        let (decoded, seen) = session_chain().verify(&out).expect("the session's chain");
        assert_eq!(decoded, body, "x-amz-decoded-content-length stays exact");
        assert_eq!(seen.len(), 3 + usize::from(trailers.is_some()));
        let agents = signatures(&agent);
        assert!(
            seen.iter().all(|s| !agents.contains(s)),
            "no agent signature is forwarded"
        );
        assert!(Chain::placeholder().verify(&out).is_err());
    }
}

#[test]
fn an_empty_body_is_one_signed_final_chunk() {
    let agent = Chain::placeholder().stream(&[], None);
    let out = resign_all(&agent, session_chain().signer(Variant::Payload)).expect("re-signs");
    let (decoded, seen) = session_chain().verify(&out).expect("verifies");
    assert!(decoded.is_empty());
    assert_eq!(seen.len(), 1);
}

#[test]
fn reads_split_at_every_position_give_the_same_stream() {
    let agent = Chain::placeholder().stream(&[b"hello", b"wor", b"ld!"], Some(&[CRC]));
    let whole = resign_all(&agent, session_chain().signer(Variant::PayloadTrailer)).expect("ok");
    session_chain().verify(&whole).expect("verifies");
    // Every single split, and every pair of nearby splits (a CRLF or a signature cut twice).
    for first in 0..=agent.len() {
        for gap in [0, 1, 2, 3, 65] {
            let second = (first + gap).min(agent.len());
            let pieces = [&agent[..first], &agent[first..second], &agent[second..]];
            assert_eq!(feed(&pieces), whole, "split at {first} and {second}");
        }
    }
    let bytes: Vec<&[u8]> = agent.chunks(1).collect();
    assert_eq!(feed(&bytes), whole, "one byte per read");
}

fn feed(pieces: &[&[u8]]) -> Vec<u8> {
    let mut resigner = ChunkResigner::new(session_chain().signer(Variant::PayloadTrailer));
    let mut out = Vec::new();
    for piece in pieces {
        resigner
            .push(Bytes::copy_from_slice(piece), &mut out)
            .expect("valid framing");
    }
    resigner.finish().expect("complete");
    out.concat()
}

#[test]
fn a_chunk_is_held_until_its_data_is_complete_and_then_sent_whole() {
    let data = vec![7u8; 100_000];
    let agent = Chain::placeholder().stream(&[&data], None);
    let mut resigner = ChunkResigner::new(session_chain().signer(Variant::Payload));
    let mut out = Vec::new();
    let header_len = agent.iter().position(|&b| b == b'\n').expect("header") + 1;
    resigner
        .push(
            Bytes::copy_from_slice(&agent[..header_len + 60_000]),
            &mut out,
        )
        .expect("ok");
    assert!(out.is_empty(), "the header needs the whole chunk's hash");
    resigner
        .push(
            Bytes::copy_from_slice(&agent[header_len + 60_000..]),
            &mut out,
        )
        .expect("ok");
    resigner.finish().expect("complete");
    session_chain().verify(&out.concat()).expect("verifies");
}

/// A valid header line with `size`.
fn header(size: &str) -> Vec<u8> {
    format!("{size};chunk-signature={}\r\n", "a".repeat(64)).into_bytes()
}

fn error_for(variant: Variant, stream: &[u8]) -> ChunkedError {
    let err = resign_all(stream, session_chain().signer(variant)).expect_err("refused");
    assert!(
        err.to_string().starts_with("re-sign aws-chunked body: "),
        "{err}"
    );
    err
}

#[test]
fn malformed_framing_is_refused_with_what_was_wrong() {
    let sig = "b".repeat(64);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"5\r\nhello\r\n".to_vec(),
            "is not `<hex size>;chunk-signature=",
        ),
        (
            format!("5;chunk-signature={}\r\n", &sig[..63]).into_bytes(),
            "is not `<hex size>",
        ),
        (
            format!("5;x=1;chunk-signature={sig}\r\n").into_bytes(),
            "is not `<hex size>",
        ),
        (
            format!("g;chunk-signature={sig}\r\n").into_bytes(),
            "is not `<hex size>",
        ),
        (
            format!("0;chunk-signature={sig}\n\r\n").into_bytes(),
            "ends with LF, not CRLF",
        ),
        (
            [header("5"), b"helloXX".to_vec()].concat(),
            "data of 5 bytes not followed by CRLF",
        ),
        (header("1000001"), "chunk of 16777217 bytes is over"),
        (
            header("ffffffffffffffff"),
            "is over the gateway's 16777216-byte limit",
        ),
        (header("10000000000000000"), "is not `<hex size>"),
        (vec![b'1'; 300], "has no CRLF within 256 bytes"),
        (
            [header("5"), b"hel".to_vec()].concat(),
            "body ended inside a chunk after",
        ),
        (
            header("5")[..10].to_vec(),
            "body ended in a chunk header after 10 bytes",
        ),
        (
            [header("0"), b"\r\nX".to_vec()].concat(),
            "1 bytes after the final chunk",
        ),
        (
            [header("0"), b"x-amz-checksum-crc32:AAAA\r\n\r\n".to_vec()].concat(),
            "without trailers",
        ),
    ];
    for (stream, expected) in cases {
        let err = error_for(Variant::Payload, &stream);
        assert!(
            err.to_string().contains(expected),
            "{:?}: {err}",
            lossy(&stream)
        );
    }
}

#[test]
fn trailer_framing_errors_are_refused() {
    let sig = "c".repeat(64);
    let end = |lines: &str| [header("0"), lines.as_bytes().to_vec()].concat();
    let cases = [
        (end("x-amz-checksum-crc32:AAAA\r\n\r\n"), "(missing)"),
        (
            end(&format!(
                "x-amz-trailer-signature:{sig}\r\nx-amz-checksum-crc32:A\r\n\r\n"
            )),
            "a trailer follows it",
        ),
        (
            end(&format!(
                "x-amz-trailer-signature:{sig}\r\nx-amz-trailer-signature:{sig}\r\n\r\n"
            )),
            "sent twice",
        ),
        (end("x-amz-trailer-signature:abc\r\n\r\n"), "(bad value)"),
        (
            end("no colon here\r\n\r\n"),
            "trailer line \"no colon here\" is not `name:value`",
        ),
        (
            end("x-amz-checksum-crc32:AAAA\r\n"),
            "before the end of the trailers",
        ),
    ];
    for (stream, expected) in cases {
        let err = error_for(Variant::PayloadTrailer, &stream);
        assert!(
            err.to_string().contains(expected),
            "{:?}: {err}",
            lossy(&stream)
        );
    }
    let many = format!("x-amz-meta-a:{}\r\n", "v".repeat(200)).repeat(100);
    let err = error_for(Variant::PayloadTrailer, &end(&many));
    assert!(
        err.to_string().contains("trailers over 16384 bytes"),
        "{err}"
    );
}

#[test]
fn chunk_headers_parse_exactly() {
    let sig = "0123456789abcdef".repeat(4);
    let line = format!("10000;chunk-signature={sig}");
    let parsed = parse_chunk_header(line.as_bytes()).expect("parses");
    assert_eq!(
        (parsed.size, parsed.size_text, parsed.signature),
        (65_536, &b"10000"[..], sig.as_bytes())
    );
    assert_eq!(
        parse_chunk_header(format!("00A;chunk-signature={sig}").as_bytes())
            .expect("ok")
            .size,
        10
    );
}

#[tokio::test]
async fn the_streaming_body_re_signs_frames_as_they_come() {
    use futures_util::stream;
    use http_body_util::{BodyExt as _, StreamBody};

    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 13) as u8).collect();
    let agent = Chain::placeholder().stream(
        &[&body[..65_536], &body[65_536..131_072], &body[131_072..]],
        Some(&[CRC]),
    );
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = agent
        .chunks(7_001)
        .map(|piece| Ok(Frame::data(Bytes::copy_from_slice(piece))))
        .collect();
    let inner = StreamBody::new(stream::iter(frames));
    let resigned = ResignedBody::new(inner, session_chain().signer(Variant::PayloadTrailer));
    let out = resigned.collect().await.expect("streams").to_bytes();
    let (decoded, _) = session_chain().verify(&out).expect("verifies");
    assert_eq!(decoded, body);
}

#[tokio::test]
async fn a_truncated_agent_body_fails_the_upload() {
    use http_body_util::{BodyExt as _, Full};
    let agent = Chain::placeholder().stream(&[b"hello"], None);
    let inner = Full::new(Bytes::copy_from_slice(&agent[..agent.len() - 3]));
    let resigned = ResignedBody::new(inner, session_chain().signer(Variant::Payload));
    let err = resigned.collect().await.expect_err("truncated");
    assert!(err.to_string().contains("body ended"), "{err}");
}

// ---- An upstream of our own: checks the request as S3 does, seed to trailer. ----

mod upstream {
    use super::*;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use hyper::body::Incoming;

    pub const AKID: &str = "ASIASESSIONKEYEXAMPLE";
    pub const SECRET: &str = "sessionSecret/Example+Key";
    pub const TOKEN: &str = "SESSION/TOKEN+example==";

    pub fn session_creds() -> Credentials {
        Credentials::new(AKID, SECRET, Some(TOKEN.to_owned()), None, "test")
    }

    /// Starts a server on a kernel-chosen port that answers 200 when seed, every chunk and the
    /// trailer are signed with the session credentials, else 403 with the reason.
    pub async fn start() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("bound");
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let io = hyper_util::rt::TokioIo::new(socket);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    io,
                    hyper::service::service_fn(|req| async {
                        Ok::<_, std::io::Error>(check(req).await)
                    }),
                ));
            }
        });
        addr
    }

    async fn check(req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|c| c.to_bytes());
        let verdict = body
            .map_err(|e| format!("body: {e}"))
            .and_then(|body| verify_request(&parts, &body));
        let (status, text) = match verdict {
            Ok(()) => (StatusCode::OK, "ok".to_owned()),
            Err(reason) => (StatusCode::FORBIDDEN, reason),
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = status;
        response
    }

    fn header<'a>(parts: &'a http::request::Parts, name: &str) -> Result<&'a str, String> {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(format!("no {name}"))
    }

    fn verify_request(parts: &http::request::Parts, body: &[u8]) -> Result<(), String> {
        let auth = header(parts, "authorization")?;
        let rest = auth
            .strip_prefix("AWS4-HMAC-SHA256 Credential=")
            .ok_or("not SigV4")?;
        let (credential, rest) = rest
            .split_once(", SignedHeaders=")
            .ok_or("no SignedHeaders")?;
        let (signed, seed) = rest.split_once(", Signature=").ok_or("no Signature")?;
        let (akid, scope) = credential.split_once('/').ok_or("bad credential")?;
        if akid != AKID || header(parts, "x-amz-security-token")? != TOKEN {
            return Err(format!("not the session's credentials: {akid}"));
        }
        let date_time = header(parts, "x-amz-date")?;
        let payload = header(parts, "x-amz-content-sha256")?;
        let mut canonical_headers = String::new();
        for name in signed.split(';') {
            let value = header(parts, name)?;
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            canonical_headers.push_str(&format!("{name}:{value}\n"));
        }
        let canonical = format!(
            "{}\n{}\n\n{canonical_headers}\n{signed}\n{payload}",
            parts.method,
            parts.uri.path()
        );
        let chain = Chain {
            key: derive_key(SECRET, scope),
            date_time: date_time.to_owned(),
            scope: scope.to_owned(),
            seed: seed.to_owned(),
        };
        let sts = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            sha_hex(canonical.as_bytes())
        );
        let seed_expected = calculate_signature(&chain.key, sts.as_bytes());
        if seed != seed_expected {
            return Err(format!("seed signature {seed} != {seed_expected}"));
        }
        let length: usize = header(parts, "content-length")?
            .parse()
            .map_err(|_| "length")?;
        if length != body.len() {
            return Err(format!("content-length {length} but {} bytes", body.len()));
        }
        let (decoded, _) = chain.verify(body)?;
        let declared: usize = header(parts, "x-amz-decoded-content-length")?
            .parse()
            .map_err(|_| "decoded")?;
        if declared != decoded.len() {
            return Err(format!(
                "decoded length {declared} but {} bytes",
                decoded.len()
            ));
        }
        Ok(())
    }

    /// Sends the agent's upload through resign_chunked and ResignedBody, in reads of `read`
    /// bytes; returns the upstream's status and text. `tamper` changes the chain after
    /// signing the head (a gateway bug the upstream must catch).
    pub async fn upload(
        addr: std::net::SocketAddr,
        variant: Variant,
        agent: Vec<u8>,
        decoded_len: usize,
        tamper: bool,
    ) -> (StatusCode, String) {
        let mut builder = Request::builder()
            .method("PUT")
            .uri(format!("http://{addr}/bucket/a%20b.bin"))
            .header("host", "bucket-host.s3.us-east-1.amazonaws.com")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20130524/us-east-1/s3/aws4_request, \
                 SignedHeaders=host, Signature=deadbeef",
            )
            .header("x-amz-date", "20130524T000000Z")
            .header("x-amz-content-sha256", variant.marker())
            .header("content-encoding", "aws-chunked")
            .header("content-length", agent.len())
            .header("x-amz-decoded-content-length", decoded_len)
            .header("x-amz-storage-class", "REDUCED_REDUNDANCY");
        if variant == Variant::PayloadTrailer {
            builder = builder.header("x-amz-trailer", "x-amz-checksum-crc32c");
        }
        let (mut parts, ()) = builder.body(()).expect("request").into_parts();
        assert_eq!(chunk_signed(&parts), Some(variant));

        let s3_host = "bucket-host.s3.us-east-1.amazonaws.com";
        let uri = parts.uri.clone();
        parts.uri = format!("https://{s3_host}/bucket/a%20b.bin")
            .parse()
            .expect("uri");
        let req = classify(&parts, None).expect("classifies");
        let mut signer =
            resign_chunked(&mut parts, &req, &session_creds(), SystemTime::now()).expect("signs");
        if tamper {
            signer = ChunkSigner::new(variant, b"wrong key", "x".into(), "y".into(), "z".into());
        }
        parts.uri = uri;

        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = agent
            .chunks(1_000)
            .map(|piece| Ok(Frame::data(Bytes::copy_from_slice(piece))))
            .collect();
        let body = ResignedBody::new(StreamBody::new(futures_util::stream::iter(frames)), signer);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let response = client
            .request(Request::from_parts(parts, body))
            .await
            .expect("sent");
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .expect("answer")
            .to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    }
}

#[tokio::test]
async fn an_upstream_verifies_seed_chunks_and_trailer_with_the_session_credentials() {
    let addr = upstream::start().await;
    let body: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 256) as u8).collect();
    for variant in [Variant::Payload, Variant::PayloadTrailer] {
        let trailers = (variant == Variant::PayloadTrailer).then_some(&[CRC][..]);
        let agent = Chain::placeholder().stream(&[&body[..65_536], &body[65_536..]], trailers);
        let (status, text) = upstream::upload(addr, variant, agent, body.len(), false).await;
        assert_eq!((status.as_u16(), text.as_str()), (200, "ok"), "{variant:?}");
    }
}

#[tokio::test]
async fn an_upstream_refuses_a_wrong_chunk_signature() {
    let addr = upstream::start().await;
    let body = vec![1u8; 70_000];
    let agent = Chain::placeholder().stream(&[&body[..65_536], &body[65_536..]], None);
    let (status, text) = upstream::upload(addr, Variant::Payload, agent, body.len(), true).await;
    assert_eq!(status.as_u16(), 403);
    assert!(text.starts_with("chunk 0 signature"), "{text}");
}

#[test]
fn resign_chunked_signs_the_marker_and_keeps_the_length_headers_signed() {
    let (mut parts, ()) = http::Request::builder()
        .method("PUT")
        .uri("/b/k")
        .header("host", "s3.us-east-1.amazonaws.com")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAPLACEHOLDER/20130524/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=deadbeef")
        .header("x-amz-content-sha256", Variant::PayloadTrailer.marker())
        .header("content-encoding", "aws-chunked")
        .header("content-length", "123")
        .header("x-amz-decoded-content-length", "7")
        .header("x-amz-trailer", "x-amz-checksum-crc32")
        .body(())
        .expect("request")
        .into_parts();
    let req = classify(&parts, None).expect("classifies");
    let signer = resign_chunked(
        &mut parts,
        &req,
        &upstream::session_creds(),
        SystemTime::now(),
    )
    .expect("signs");
    let auth = parts.headers["authorization"].to_str().expect("ascii");
    assert!(
        auth.ends_with(signer.previous()),
        "the seed is the request's signature"
    );
    assert_eq!(
        parts.headers["x-amz-content-sha256"],
        Variant::PayloadTrailer.marker()
    );
    for name in [
        "content-encoding",
        "content-length",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
    ] {
        assert!(auth.contains(name), "{name} signed: {auth}");
    }
    let debug = format!("{signer:?}");
    assert!(debug.contains("/us-east-1/s3/aws4_request") && !debug.contains("signing_key"));
}

#[test]
fn resign_still_refuses_chunk_signed_bodies_and_resign_chunked_others() {
    let mut parts = http::Request::builder()
        .method("PUT")
        .uri("/b/k")
        .header("host", "s3.us-east-1.amazonaws.com")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let req = classify(&parts, None).expect("classifies");
    let err = resign_chunked(
        &mut parts,
        &req,
        &upstream::session_creds(),
        SystemTime::now(),
    )
    .expect_err("not chunk-signed");
    assert!(
        matches!(err, crate::aws::SignError::NotChunkSigned),
        "{err}"
    );
    assert_eq!(chunk_signed(&parts), None);
}
