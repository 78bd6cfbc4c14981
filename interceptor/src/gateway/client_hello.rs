//! Reads the server name (SNI) and ALPN offer out of a TLS ClientHello without consuming it, so
//! the gateway can decide to terminate, pass through or refuse before any byte is answered.
//!
//! Only the first TLS record is examined: a ClientHello split across records (legal, rare, and
//! never sent by the AWS SDKs) is reported as [`Peek::Incomplete`] until [`MAX_PEEK_BYTES`] and
//! then as not TLS.

/// Largest first record the gateway waits for: a record carries at most 16 KiB plus its header.
pub const MAX_PEEK_BYTES: usize = 16 * 1024 + 5;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const SERVER_NAME_HOST: u8 = 0x00;

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// A complete ClientHello.
    Hello(HelloInfo),
    /// The bytes so far are the start of a TLS record; more are needed.
    Incomplete,
    /// Not a TLS handshake: plain text (for instance HTTP on port 80) or garbage.
    NotTls,
}

/// The parts of a ClientHello the gateway decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HelloInfo {
    /// The host name asked for, lower-cased; None when the client sent no SNI.
    pub server_name: Option<String>,
    /// ALPN protocols offered, in the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// Examines the bytes peeked so far.
pub fn peek(bytes: &[u8]) -> Peek {
    let Some(&first) = bytes.first() else { return Peek::Incomplete };
    if first != RECORD_HANDSHAKE {
        return Peek::NotTls;
    }
    if bytes.len() < 5 {
        return Peek::Incomplete;
    }
    let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    if bytes[1] != 3 || record_len == 0 || record_len > MAX_PEEK_BYTES - 5 {
        return Peek::NotTls;
    }
    let Some(record) = bytes.get(5..5 + record_len) else { return Peek::Incomplete };
    match parse_handshake(record) {
        Some(info) => Peek::Hello(info),
        None => Peek::NotTls,
    }
}

/// A cursor over big-endian TLS structures; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// A vector whose length prefix is `len_bytes` wide.
    fn vec(&mut self, len_bytes: usize) -> Option<Reader<'a>> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            2 => usize::from(self.u16()?),
            _ => self.u24()?,
        };
        self.take(len).map(Reader)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_handshake(record: &[u8]) -> Option<HelloInfo> {
    let mut r = Reader(record);
    if r.u8()? != HANDSHAKE_CLIENT_HELLO {
        return None;
    }
    let hello_len = r.u24()?;
    let mut hello = Reader(r.take(hello_len)?);
    hello.take(2)?; // legacy_version
    hello.take(32)?; // random
    hello.vec(1)?; // legacy_session_id
    hello.vec(2)?; // cipher_suites
    hello.vec(1)?; // legacy_compression_methods
    let mut info = HelloInfo::default();
    if hello.is_empty() {
        return Some(info); // no extensions at all
    }
    let mut extensions = hello.vec(2)?;
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let mut body = extensions.vec(2)?;
        match kind {
            EXT_SERVER_NAME => info.server_name = parse_server_name(&mut body)?,
            EXT_ALPN => info.alpn = parse_alpn(&mut body)?,
            _ => {}
        }
    }
    Some(info)
}

fn parse_server_name(body: &mut Reader<'_>) -> Option<Option<String>> {
    let mut names = body.vec(2)?;
    while !names.is_empty() {
        let kind = names.u8()?;
        let name = names.vec(2)?;
        if kind == SERVER_NAME_HOST {
            let name = std::str::from_utf8(name.0).ok()?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return None;
            }
            return Some(Some(name.to_ascii_lowercase()));
        }
    }
    Some(None)
}

fn parse_alpn(body: &mut Reader<'_>) -> Option<Vec<Vec<u8>>> {
    let mut list = body.vec(2)?;
    let mut protocols = Vec::new();
    while !list.is_empty() {
        protocols.push(list.vec(1)?.0.to_vec());
    }
    Some(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ClientHello record the way a TLS 1.3 client lays it out.
    fn hello(sni: Option<&str>, alpn: &[&[u8]]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(sni) = sni {
            let mut list = vec![SERVER_NAME_HOST];
            list.extend((sni.len() as u16).to_be_bytes());
            list.extend(sni.as_bytes());
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend(list);
            ext.extend(EXT_SERVER_NAME.to_be_bytes());
            ext.extend((body.len() as u16).to_be_bytes());
            ext.extend(body);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for proto in alpn {
                list.push(proto.len() as u8);
                list.extend(*proto);
            }
            let mut body = (list.len() as u16).to_be_bytes().to_vec();
            body.extend(list);
            ext.extend(EXT_ALPN.to_be_bytes());
            ext.extend((body.len() as u16).to_be_bytes());
            ext.extend(body);
        }
        let mut hello = vec![3, 3];
        hello.extend([7u8; 32]);
        hello.extend([0]); // session id
        hello.extend([0, 2, 0x13, 0x01]); // one cipher suite
        hello.extend([1, 0]); // null compression
        hello.extend((ext.len() as u16).to_be_bytes());
        hello.extend(ext);
        let mut handshake = vec![HANDSHAKE_CLIENT_HELLO];
        handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
        handshake.extend(hello);
        let mut record = vec![RECORD_HANDSHAKE, 3, 1];
        record.extend((handshake.len() as u16).to_be_bytes());
        record.extend(handshake);
        record
    }

    #[test]
    fn finds_sni_and_alpn() {
        let bytes = hello(Some("EC2.us-east-1.amazonaws.com"), &[b"h2", b"http/1.1"]);
        assert_eq!(
            peek(&bytes),
            Peek::Hello(HelloInfo {
                server_name: Some("ec2.us-east-1.amazonaws.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            })
        );
    }

    #[test]
    fn hello_without_sni_has_no_name() {
        let bytes = hello(None, &[]);
        assert_eq!(peek(&bytes), Peek::Hello(HelloInfo::default()));
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let bytes = hello(Some("sts.amazonaws.com"), &[b"http/1.1"]);
        for len in 0..bytes.len() {
            assert_eq!(peek(&bytes[..len]), Peek::Incomplete, "at {len} bytes");
        }
    }

    #[test]
    fn plain_http_is_not_tls() {
        assert_eq!(peek(b"GET / HTTP/1.1\r\n"), Peek::NotTls);
    }

    #[test]
    fn corrupt_lengths_are_not_tls() {
        let mut bytes = hello(Some("sts.amazonaws.com"), &[]);
        let sni_len_at = bytes.len() - "sts.amazonaws.com".len() - 2;
        bytes[sni_len_at] = 0xff;
        assert_eq!(peek(&bytes), Peek::NotTls);
    }
}
