//! Chunk-signed streaming uploads (`x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD`
//! and `...-PAYLOAD-TRAILER`): the agent's aws-chunked body is re-framed with a signature chain
//! that starts from the gateway's own seed signature (see [`super::sigv4::resign_chunked`]).
//!
//! The framing (S3 "sigv4-streaming" and "sigv4-streaming-trailers"):
//!
//! ```text
//! chunk   = hex-size ";chunk-signature=" 64HEX CRLF data CRLF
//! final   = "0;chunk-signature=" 64HEX CRLF *trailer CRLF
//! trailer = name ":" value CRLF          (-TRAILER only, last: x-amz-trailer-signature)
//! ```
//!
//! Each chunk is signed over `AWS4-HMAC-SHA256-PAYLOAD`, the date, the scope, the previous
//! signature (the seed for the first chunk), the hash of nothing and the hash of the chunk's
//! data; the trailer over `AWS4-HMAC-SHA256-TRAILER` and the hash of its canonical lines.
//!
//! Memory: a chunk's header carries the signature of its data, so the gateway can only write
//! the header once it has read the whole chunk. One upload therefore holds at most one chunk of
//! data (the client's choice: SDKs use 8 KiB to 8 MiB; [`MAX_CHUNK_BYTES`] at most) plus one
//! read from the agent and one header or trailer line. Nothing else is buffered.
//!
//! Length: only the 64 hex digits of each signature change; every other byte is sent as the
//! agent sent it, so Content-Length and `x-amz-decoded-content-length` stay exact. Framing that
//! would not keep its length (other chunk extensions, signatures of another length) is refused.
//! The agent's chunk signatures (made with placeholder keys) are dropped, not checked.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// Largest chunk accepted: the gateway holds one whole chunk before it can sign it.
pub const MAX_CHUNK_BYTES: u64 = 16 * 1024 * 1024;
/// Longest chunk header or trailer line, CRLF excluded (a header is at most 16 + 17 + 64).
pub const MAX_LINE_BYTES: usize = 256;
/// Most trailer bytes after the final chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

const SIGNATURE_LEN: usize = 64;
const CHUNK_SIGNATURE: &[u8] = b";chunk-signature=";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const MAX_SIZE_DIGITS: usize = 16;
/// SHA-256 of the empty string, part of every chunk's string to sign.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const CHUNK_ALGORITHM: &str = "AWS4-HMAC-SHA256-PAYLOAD";
const TRAILER_ALGORITHM: &str = "AWS4-HMAC-SHA256-TRAILER";

/// Error type of the re-signed body: the inner body's error or a [`ChunkedError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which chunk-signed payload the request declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: signed chunks, no trailer.
    Payload,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and a signed trailer.
    PayloadTrailer,
}

impl Variant {
    /// The `x-amz-content-sha256` value of this variant.
    pub const fn marker(self) -> &'static str {
        match self {
            Variant::Payload => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            Variant::PayloadTrailer => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        }
    }

    /// The variant an `x-amz-content-sha256` value declares, if it is one of the two.
    pub fn from_marker(value: &str) -> Option<Self> {
        [Variant::Payload, Variant::PayloadTrailer]
            .into_iter()
            .find(|v| v.marker() == value.trim())
    }
}

/// Why an aws-chunked body could not be re-signed. The upload is aborted (the upstream request
/// fails); nothing signed by the gateway follows bad framing.
#[derive(Debug, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk header other than `<hex size>;chunk-signature=<64 hex>`.
    #[error(
        "re-sign aws-chunked body: chunk header {line:?} is not \
         `<hex size>;chunk-signature=<64 hex digits>`"
    )]
    BadChunkHeader {
        /// The line, CRLF removed, lossily decoded.
        line: String,
    },
    /// A line without its CRLF within [`MAX_LINE_BYTES`].
    #[error("re-sign aws-chunked body: line starting {start:?} has no CRLF within {limit} bytes")]
    LineTooLong {
        /// The first bytes of the line.
        start: String,
        /// [`MAX_LINE_BYTES`].
        limit: usize,
    },
    /// A header or trailer line ended by a bare LF.
    #[error("re-sign aws-chunked body: line {line:?} ends with LF, not CRLF")]
    BareLineFeed {
        /// The line, LF removed, lossily decoded.
        line: String,
    },
    /// A chunk larger than [`MAX_CHUNK_BYTES`].
    #[error(
        "re-sign aws-chunked body: chunk of {size} bytes is over the gateway's {limit}-byte \
         limit for signed chunks; use smaller chunks or an unsigned-payload upload"
    )]
    ChunkTooLarge {
        /// The declared chunk size.
        size: u64,
        /// [`MAX_CHUNK_BYTES`].
        limit: u64,
    },
    /// Chunk data not followed by CRLF.
    #[error("re-sign aws-chunked body: chunk data of {size} bytes not followed by CRLF")]
    MissingChunkEnd {
        /// The chunk's declared size.
        size: u64,
    },
    /// A trailer line that is not `name:value`.
    #[error("re-sign aws-chunked body: trailer line {line:?} is not `name:value`")]
    BadTrailer {
        /// The line, CRLF removed, lossily decoded.
        line: String,
    },
    /// Trailers over [`MAX_TRAILER_BYTES`].
    #[error("re-sign aws-chunked body: trailers over {limit} bytes")]
    TrailersTooLarge {
        /// [`MAX_TRAILER_BYTES`].
        limit: usize,
    },
    /// A trailer in a body declared `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` (no trailer).
    #[error(
        "re-sign aws-chunked body: trailer {name:?} in a body declared without trailers \
         (STREAMING-AWS4-HMAC-SHA256-PAYLOAD)"
    )]
    UnexpectedTrailer {
        /// The trailer name.
        name: String,
    },
    /// The -TRAILER variant ended its trailers without `x-amz-trailer-signature`, or sent it
    /// twice, or with a value that is not 64 hex digits.
    #[error(
        "re-sign aws-chunked body: trailers must end with one x-amz-trailer-signature of 64 \
         hex digits ({problem})"
    )]
    BadTrailerSignature {
        /// What was wrong.
        problem: &'static str,
    },
    /// The body ended before the final chunk and its trailers.
    #[error("re-sign aws-chunked body: body ended {at} after {received} bytes")]
    Truncated {
        /// Where in the framing.
        at: &'static str,
        /// Bytes read from the agent.
        received: u64,
    },
    /// Bytes after the end of the framing.
    #[error("re-sign aws-chunked body: {extra} bytes after the final chunk")]
    TrailingBytes {
        /// How many (in the read that had them).
        extra: usize,
    },
}

/// A parsed chunk header line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHeader<'a> {
    /// The chunk's data length.
    pub size: u64,
    /// The size exactly as sent (kept so the re-framed header has the same length).
    pub size_text: &'a [u8],
    /// The agent's signature (64 hex digits), dropped when re-signing.
    pub signature: &'a [u8],
}

/// Parses one chunk header line, CRLF removed: `<hex size>;chunk-signature=<64 hex>`.
/// Sizes over [`MAX_CHUNK_BYTES`] are refused.
pub fn parse_chunk_header(line: &[u8]) -> Result<ChunkHeader<'_>, ChunkedError> {
    let bad = || ChunkedError::BadChunkHeader { line: lossy(line) };
    let split = line.iter().position(|&b| b == b';').ok_or_else(bad)?;
    let (size_text, rest) = line.split_at(split);
    let signature = rest.strip_prefix(CHUNK_SIGNATURE).ok_or_else(bad)?;
    let size_ok = !size_text.is_empty() && size_text.len() <= MAX_SIZE_DIGITS;
    if !size_ok || !size_text.iter().all(u8::is_ascii_hexdigit) || !is_signature(signature) {
        return Err(bad());
    }
    // At most 16 hex digits were checked above: the value fits in a u64.
    let size = size_text
        .iter()
        .fold(0u64, |n, &d| (n << 4) | u64::from(hex_value(d)));
    if size > MAX_CHUNK_BYTES {
        return Err(ChunkedError::ChunkTooLarge {
            size,
            limit: MAX_CHUNK_BYTES,
        });
    }
    Ok(ChunkHeader {
        size,
        size_text,
        signature,
    })
}

/// The gateway's signature chain for one upload: the session's signing key for the request's
/// date, region and service, the seed signature, and the latest signature of the chain.
pub struct ChunkSigner {
    variant: Variant,
    signing_key: Vec<u8>,
    date_time: String,
    scope: String,
    previous: String,
}

impl std::fmt::Debug for ChunkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing key is a credential: never printed.
        f.debug_struct("ChunkSigner")
            .field("variant", &self.variant)
            .field("date_time", &self.date_time)
            .field("scope", &self.scope)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

impl ChunkSigner {
    /// A chain starting at `seed_signature`, the request's SigV4 signature. `date_time` is its
    /// `X-Amz-Date` and `scope` its credential scope (`date/region/service/aws4_request`);
    /// `signing_key` the derived SigV4 key for that scope.
    pub fn new(
        variant: Variant,
        signing_key: &[u8],
        date_time: String,
        scope: String,
        seed_signature: String,
    ) -> Self {
        Self {
            variant,
            signing_key: signing_key.to_vec(),
            date_time,
            scope,
            previous: seed_signature,
        }
    }

    /// The declared variant.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The latest signature of the chain (the seed before any chunk).
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// Signs the next chunk, given the SHA-256 of its data; the result becomes the previous
    /// signature.
    pub fn sign_chunk(&mut self, data_sha256: &[u8]) -> &str {
        let hashes = format!("{EMPTY_SHA256}\n{}", hex::encode(data_sha256));
        self.chain(CHUNK_ALGORITHM, &hashes)
    }

    /// Signs the trailer, given its canonical form (`name:value\n` per trailer, sorted).
    pub fn sign_trailer(&mut self, canonical_trailers: &[u8]) -> &str {
        let hash = hex::encode(Sha256::digest(canonical_trailers));
        self.chain(TRAILER_ALGORITHM, &hash)
    }

    fn chain(&mut self, algorithm: &str, hashes: &str) -> &str {
        let string_to_sign = format!(
            "{algorithm}\n{}\n{}\n{}\n{hashes}",
            self.date_time, self.scope, self.previous
        );
        self.previous =
            aws_sigv4::sign::v4::calculate_signature(&self.signing_key, string_to_sign.as_bytes());
        &self.previous
    }
}

/// Where the re-framer is in the agent's stream.
#[derive(Debug)]
enum State {
    /// Reading a chunk header line.
    Header,
    /// Reading a chunk's data.
    Data {
        size_text: Vec<u8>,
        size: u64,
        remaining: u64,
    },
    /// Reading the CRLF after a chunk's data; `seen` bytes of it read.
    DataEnd {
        size_text: Vec<u8>,
        size: u64,
        seen: usize,
    },
    /// After the final chunk: trailer lines up to an empty line.
    Trailers,
    /// The framing ended.
    Done,
}

/// The incremental re-framer, free of I/O: feed it the agent's bytes as they come
/// ([`ChunkResigner::push`]), send what it hands back, and call [`ChunkResigner::finish`] when
/// the agent's body ended. Reads may split the framing anywhere.
#[derive(Debug)]
pub struct ChunkResigner {
    signer: ChunkSigner,
    state: State,
    /// The header or trailer line being read.
    line: Vec<u8>,
    /// The current chunk's data, as received (slices of the agent's reads, not copies).
    held: Vec<Bytes>,
    hasher: Sha256,
    /// Raw trailer lines with their CRLF, and where the signature's hex digits start in them.
    trailers: Vec<u8>,
    canonical: Vec<(String, String)>,
    signature_at: Option<usize>,
    received: u64,
}

impl ChunkResigner {
    /// A re-framer signing with `signer`'s chain.
    pub fn new(signer: ChunkSigner) -> Self {
        Self {
            signer,
            state: State::Header,
            line: Vec::new(),
            held: Vec::new(),
            hasher: Sha256::new(),
            trailers: Vec::new(),
            canonical: Vec::new(),
            signature_at: None,
            received: 0,
        }
    }

    /// Consumes one read of the agent's body; appends the re-signed bytes that are complete to
    /// `out` (a chunk is only handed back once all its data has arrived).
    pub fn push(&mut self, mut input: Bytes, out: &mut Vec<Bytes>) -> Result<(), ChunkedError> {
        self.received += input.len() as u64;
        while !input.is_empty() {
            match &mut self.state {
                State::Header => self.read_header(&mut input, out)?,
                State::Data { .. } => self.read_data(&mut input),
                State::DataEnd { .. } => self.read_data_end(&mut input, out)?,
                State::Trailers => self.read_trailers(&mut input, out)?,
                State::Done => return Err(ChunkedError::TrailingBytes { extra: input.len() }),
            }
        }
        Ok(())
    }

    /// Checks that the agent's body ended where the framing ends.
    pub fn finish(&self) -> Result<(), ChunkedError> {
        let at = match self.state {
            State::Done => return Ok(()),
            State::Header => "in a chunk header",
            State::Data { .. } | State::DataEnd { .. } => "inside a chunk",
            State::Trailers => "before the end of the trailers",
        };
        Err(ChunkedError::Truncated {
            at,
            received: self.received,
        })
    }

    /// Whether the whole framing (final chunk and trailers) has been read.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn read_header(&mut self, input: &mut Bytes, out: &mut Vec<Bytes>) -> Result<(), ChunkedError> {
        let Some(line) = self.take_line(input)? else {
            return Ok(());
        };
        let header = parse_chunk_header(&line)?;
        let size_text = header.size_text.to_vec();
        if header.size == 0 {
            let signature = self.signer.sign_chunk(&Sha256::digest(b"")).to_owned();
            out.push(chunk_header(&size_text, &signature));
            self.state = State::Trailers;
        } else {
            self.hasher = Sha256::new();
            self.state = State::Data {
                size_text,
                size: header.size,
                remaining: header.size,
            };
        }
        Ok(())
    }

    fn read_data(&mut self, input: &mut Bytes) {
        let State::Data {
            size_text,
            size,
            remaining,
        } = &mut self.state
        else {
            return;
        };
        // `take` is at most `input.len()`, which is a usize.
        let take = usize::try_from((*remaining).min(input.len() as u64)).unwrap_or(input.len());
        let data = input.split_to(take);
        self.hasher.update(&data);
        self.held.push(data);
        *remaining -= take as u64;
        if *remaining == 0 {
            let (size_text, size) = (std::mem::take(size_text), *size);
            self.state = State::DataEnd {
                size_text,
                size,
                seen: 0,
            };
        }
    }

    fn read_data_end(
        &mut self,
        input: &mut Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ChunkedError> {
        let State::DataEnd {
            size_text,
            size,
            seen,
        } = &mut self.state
        else {
            return Ok(());
        };
        while *seen < 2 && !input.is_empty() {
            if input[0] != b"\r\n"[*seen] {
                return Err(ChunkedError::MissingChunkEnd { size: *size });
            }
            *seen += 1;
            let _ = input.split_to(1);
        }
        if *seen < 2 {
            return Ok(());
        }
        let size_text = std::mem::take(size_text);
        let digest = std::mem::take(&mut self.hasher).finalize();
        let signature = self.signer.sign_chunk(&digest).to_owned();
        out.push(chunk_header(&size_text, &signature));
        out.append(&mut self.held);
        out.push(Bytes::from_static(b"\r\n"));
        self.state = State::Header;
        Ok(())
    }

    fn read_trailers(
        &mut self,
        input: &mut Bytes,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ChunkedError> {
        let Some(line) = self.take_line(input)? else {
            return Ok(());
        };
        if !line.is_empty() {
            return self.add_trailer(&line);
        }
        out.push(self.signed_trailers()?);
        self.state = State::Done;
        Ok(())
    }

    fn add_trailer(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let bad = || ChunkedError::BadTrailer { line: lossy(line) };
        let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let name = std::str::from_utf8(&line[..colon]).map_err(|_| bad())?;
        let value = std::str::from_utf8(&line[colon + 1..]).map_err(|_| bad())?;
        if name.is_empty() || name.trim() != name {
            return Err(bad());
        }
        if self.signer.variant() == Variant::Payload {
            return Err(ChunkedError::UnexpectedTrailer {
                name: name.to_owned(),
            });
        }
        if self.trailers.len() + line.len() + 2 > MAX_TRAILER_BYTES {
            return Err(ChunkedError::TrailersTooLarge {
                limit: MAX_TRAILER_BYTES,
            });
        }
        let start = self.trailers.len();
        self.trailers.extend_from_slice(line);
        self.trailers.extend_from_slice(b"\r\n");
        if name.eq_ignore_ascii_case(TRAILER_SIGNATURE) {
            return self.note_trailer_signature(start + colon + 1, value);
        }
        if self.signature_at.is_some() {
            return Err(ChunkedError::BadTrailerSignature {
                problem: "a trailer follows it",
            });
        }
        self.canonical
            .push((name.to_ascii_lowercase(), value.trim().to_owned()));
        Ok(())
    }

    fn note_trailer_signature(&mut self, value_at: usize, value: &str) -> Result<(), ChunkedError> {
        if self.signature_at.is_some() {
            return Err(ChunkedError::BadTrailerSignature {
                problem: "sent twice",
            });
        }
        let trimmed = value.trim_start();
        if !is_signature(trimmed.trim_end().as_bytes()) {
            return Err(ChunkedError::BadTrailerSignature {
                problem: "bad value",
            });
        }
        self.signature_at = Some(value_at + (value.len() - trimmed.len()));
        Ok(())
    }

    /// The trailer lines as sent, with the gateway's trailer signature, and the final CRLF.
    fn signed_trailers(&mut self) -> Result<Bytes, ChunkedError> {
        if self.signer.variant() == Variant::Payload {
            return Ok(Bytes::from_static(b"\r\n"));
        }
        let at = self
            .signature_at
            .ok_or(ChunkedError::BadTrailerSignature { problem: "missing" })?;
        self.canonical.sort();
        let mut canonical = Vec::new();
        for (name, value) in &self.canonical {
            canonical.extend_from_slice(format!("{name}:{value}\n").as_bytes());
        }
        let signature = self.signer.sign_trailer(&canonical);
        let mut block = std::mem::take(&mut self.trailers);
        block[at..at + SIGNATURE_LEN].copy_from_slice(signature.as_bytes());
        block.extend_from_slice(b"\r\n");
        Ok(Bytes::from(block))
    }

    /// Takes bytes up to and including the next CRLF; the line without CRLF once complete.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<Vec<u8>>, ChunkedError> {
        let newline = input.iter().position(|&b| b == b'\n');
        let take = newline.map_or(input.len(), |at| at + 1);
        self.line.extend_from_slice(&input.split_to(take));
        if self.line.len() > MAX_LINE_BYTES + 2 {
            let start = lossy(&self.line[..self.line.len().min(40)]);
            return Err(ChunkedError::LineTooLong {
                start,
                limit: MAX_LINE_BYTES,
            });
        }
        if newline.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        line.pop();
        if line.pop() != Some(b'\r') {
            return Err(ChunkedError::BareLineFeed { line: lossy(&line) });
        }
        Ok(Some(line))
    }
}

/// Re-signs a whole aws-chunked body held in memory (tests and fuzzing; the gateway streams
/// with [`ResignedBody`]).
pub fn resign_all(input: &[u8], signer: ChunkSigner) -> Result<Vec<u8>, ChunkedError> {
    let mut resigner = ChunkResigner::new(signer);
    let mut out = Vec::new();
    resigner.push(Bytes::copy_from_slice(input), &mut out)?;
    resigner.finish()?;
    Ok(out.concat())
}

/// A request body re-framed with the gateway's chunk signatures as it streams: wraps the
/// agent's aws-chunked body. Its length is the agent's length.
pub struct ResignedBody<B> {
    inner: B,
    resigner: ChunkResigner,
    ready: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
    ended: bool,
}

impl<B> ResignedBody<B> {
    /// Wraps `inner`, the agent's body, signing with `signer`.
    pub fn new(inner: B, signer: ChunkSigner) -> Self {
        Self {
            inner,
            resigner: ChunkResigner::new(signer),
            ready: VecDeque::new(),
            scratch: Vec::new(),
            ended: false,
        }
    }
}

impl<B> Body for ResignedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(err)) => return Poll::Ready(Some(Err(err.into()))),
                None => {
                    this.ended = true;
                    if let Err(err) = this.resigner.finish() {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                    continue;
                }
            };
            // HTTP trailers of the agent's request (not aws-chunked trailers): none are
            // expected; they are dropped rather than sent unsigned.
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Err(err) = this.resigner.push(data, &mut this.scratch) {
                this.ended = true;
                return Poll::Ready(Some(Err(err.into())));
            }
            this.ready.extend(this.scratch.drain(..));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // Every byte is kept but the signatures' hex digits: same length as the agent's.
        self.inner.size_hint()
    }
}

fn chunk_header(size_text: &[u8], signature: &str) -> Bytes {
    let mut header = Vec::with_capacity(size_text.len() + CHUNK_SIGNATURE.len() + 66);
    header.extend_from_slice(size_text);
    header.extend_from_slice(CHUNK_SIGNATURE);
    header.extend_from_slice(signature.as_bytes());
    header.extend_from_slice(b"\r\n");
    Bytes::from(header)
}

fn is_signature(value: &[u8]) -> bool {
    value.len() == SIGNATURE_LEN && value.iter().all(u8::is_ascii_hexdigit)
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit.to_ascii_lowercase().wrapping_sub(b'a') + 10,
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
