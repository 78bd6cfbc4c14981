//! The SigV4 canonical request, built in one buffer (the signer of [`super::resign`]).
//!
//! It reproduces what the `aws-sigv4` crate (1.x) signs, byte for byte, for the settings the
//! gateway uses (signature in headers, session token signed, [`super::UNSIGNED_HEADERS`]
//! excluded); the tests keep `aws-sigv4` as the oracle:
//!
//! - path: as sent (S3), or with `.`/`..` segments removed and `//` merged, then
//!   percent-encoded once more (every other service);
//! - query: every `name=value` pair form-decoded (`+` is a space), re-encoded (all but
//!   `A-Za-z0-9-._~`), sorted by encoded name then encoded value, `=` always written;
//! - headers: every header of the head but the excluded ones, plus those the signer adds,
//!   sorted by name; the values of a name joined with `,`, each with its leading and trailing
//!   spaces removed and runs of spaces collapsed (spaces only: a tab is kept); the signer's own
//!   values as they are.

use http::HeaderMap;
use std::borrow::Cow;
use std::ops::Range;
use std::time::SystemTime;

/// SHA-256 of the empty body.
pub(super) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What goes into a canonical request.
pub(super) struct Input<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded by the client).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The head's headers, agent signing headers already removed.
    pub headers: &'a HeaderMap,
    /// Headers the signer adds (`x-amz-date`, ...): absent from `headers`, signed too.
    pub added: &'a [(&'static str, &'a str)],
    /// Remove dot segments and empty segments (every service but S3).
    pub normalize_path: bool,
    /// Percent-encode the path once more (every service but S3).
    pub encode_path_twice: bool,
    /// The hex SHA-256 of the body or a payload marker.
    pub payload_hash: &'a str,
}

/// A canonical request and where its signed-header list is in it.
pub(super) struct Canonical {
    text: String,
    signed_headers: Range<usize>,
}

impl Canonical {
    /// Builds the canonical request of `input`.
    pub(super) fn build(input: &Input<'_>) -> Self {
        let mut text = String::with_capacity(512);
        text.push_str(input.method);
        text.push('\n');
        push_path(&mut text, input);
        text.push('\n');
        if let Some(query) = input.query {
            push_query(&mut text, query);
        }
        text.push('\n');

        let signed_headers = push_headers(&mut text, input);
        text.push('\n');
        text.push_str(input.payload_hash);
        Canonical {
            text,
            signed_headers,
        }
    }

    /// The canonical request text (hashed into the string to sign).
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    /// `SignedHeaders`: the signed names, sorted, joined with `;`.
    pub(super) fn signed_headers(&self) -> &str {
        &self.text[self.signed_headers.clone()]
    }
}

/// Appends the header lines, a blank line and the signed-header list; returns where the list is.
fn push_headers(text: &mut String, input: &Input<'_>) -> Range<usize> {
    let headers = signed_headers(input);
    let same_name_as_previous = |i: usize| i > 0 && headers[i - 1].0 == headers[i].0;
    for (i, (name, value)) in headers.iter().enumerate() {
        if same_name_as_previous(i) {
            text.push(',');
        } else {
            text.push_str(name);
            text.push(':');
        }
        match value {
            Value::Sent(v) => push_trimmed(text, v),
            Value::Added(v) => text.push_str(v),
        }
        if headers.get(i + 1).is_none_or(|next| next.0 != *name) {
            text.push('\n');
        }
    }
    text.push('\n');
    let start = text.len();
    for (i, (name, _)) in headers.iter().enumerate() {
        if same_name_as_previous(i) {
            continue;
        }
        if i > 0 {
            text.push(';');
        }
        text.push_str(name);
    }
    start..text.len()
}

/// A header value to sign: as the agent sent it (trimmed when signed) or added by the signer
/// (signed as is).
enum Value<'a> {
    Sent(&'a str),
    Added(&'a str),
}

/// Every signed header, sorted by name; the values of one name in the order they were sent.
fn signed_headers<'a>(input: &Input<'a>) -> Vec<(&'a str, Value<'a>)> {
    let mut headers: Vec<(&str, Value<'_>)> = Vec::with_capacity(input.headers.len() + 3);
    for (name, value) in input.headers {
        if super::UNSIGNED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        // Values were checked to be UTF-8 before building (sigv4::check_header_values); one
        // that is not would be signed as empty rather than panic.
        let value = std::str::from_utf8(value.as_bytes()).unwrap_or_default();
        headers.push((name.as_str(), Value::Sent(value)));
    }
    headers.extend(input.added.iter().map(|(n, v)| (*n, Value::Added(v))));
    // Stable: the values of a name keep their order.
    headers.sort_by(|a, b| a.0.cmp(b.0));
    headers
}

/// Appends `value` without leading or trailing spaces, runs of spaces as one.
pub(super) fn push_trimmed(out: &mut String, value: &str) {
    for (i, word) in value.split(' ').filter(|w| !w.is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

fn push_path(out: &mut String, input: &Input<'_>) {
    let path = if input.normalize_path {
        normalize_path(input.path)
    } else {
        Cow::Borrowed(input.path)
    };
    if input.encode_path_twice {
        push_encoded(out, &path, true);
    } else {
        out.push_str(&path);
    }
}

/// The path with `.` and `..` segments resolved (RFC 3986 5.2.4) and empty segments dropped;
/// absolute, and ending in `/` when the original ends in a slash or a dot segment.
pub(super) fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !absolute.contains('.') && !absolute.contains("//") {
        return absolute;
    }

    let mut segments: Vec<&str> = Vec::new();
    for segment in absolute.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = String::with_capacity(absolute.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    let ends_in_directory = ["/", "/.", "/.."].iter().any(|end| absolute.ends_with(end));
    if out.is_empty() || (ends_in_directory && !out.ends_with('/')) {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Appends the canonical query of `query`.
fn push_query(out: &mut String, query: &str) {
    // Every encoded name and value goes into one buffer; pairs are sorted as ranges of it.
    let mut encoded = String::with_capacity(query.len() + query.len() / 2);
    let mut pairs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let name_start = encoded.len();
        push_encoded(&mut encoded, &name, false);
        let value_start = encoded.len();
        push_encoded(&mut encoded, &value, false);
        pairs.push((name_start..value_start, value_start..encoded.len()));
    }
    let text = |r: &Range<usize>| &encoded[r.clone()];
    pairs.sort_unstable_by(|a, b| (text(&a.0), text(&a.1)).cmp(&(text(&b.0), text(&b.1))));
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(text(name));
        out.push('=');
        out.push_str(text(value));
    }
}

/// Appends `s` percent-encoded: every byte but `A-Za-z0-9-._~` (and `/` if `keep_slash`) as
/// `%XX`, upper-case hex.
pub(super) fn push_encoded(out: &mut String, s: &str, keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut run_start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            continue;
        }
        // Kept bytes are ASCII, so a run of them starts and ends on character boundaries.
        if run_start < i {
            out.push_str(&s[run_start..i]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
        run_start = i + 1;
    }
    if run_start < s.len() {
        out.push_str(&s[run_start..]);
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'` of `time`, UTC (the `X-Amz-Date` value).
pub(super) fn amz_date_time(time: SystemTime) -> String {
    let t = ::time::OffsetDateTime::from(time);
    let Ok(year) = u32::try_from(t.year()) else {
        return format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    };
    let mut out = String::with_capacity(16);
    push_digits(&mut out, year, 4);
    push_digits(&mut out, u32::from(u8::from(t.month())), 2);
    push_digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push_digits(&mut out, u32::from(t.hour()), 2);
    push_digits(&mut out, u32::from(t.minute()), 2);
    push_digits(&mut out, u32::from(t.second()), 2);
    out.push('Z');
    out
}

/// Appends `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(out: &mut String, n: u32, width: u32) {
    let digits = n.checked_ilog10().unwrap_or(0) + 1;
    for _ in digits..width {
        out.push('0');
    }
    let mut div = 10u32.pow(digits - 1);
    while div > 0 {
        // Invariant: (n / div) % 10 is one decimal digit.
        out.push(char::from_digit((n / div) % 10, 10).expect("a decimal digit"));
        div /= 10;
    }
}

/// Appends `bytes` as lower-case hex.
pub(super) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// `bytes` as lower-case hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// The `YYYYMMDD` of an [`amz_date_time`] value.
pub(super) fn date_of(date_time: &str) -> &str {
    // `THHMMSSZ` is always the last 8 characters.
    &date_time[..date_time.len().saturating_sub(8)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_path(path: &str, normalize: bool, twice: bool) -> String {
        let mut out = String::new();
        let headers = HeaderMap::new();
        let input = Input {
            method: "GET",
            path,
            query: None,
            headers: &headers,
            added: &[],
            normalize_path: normalize,
            encode_path_twice: twice,
            payload_hash: EMPTY_SHA256,
        };
        push_path(&mut out, &input);
        out
    }

    #[test]
    fn paths_are_normalised_and_encoded_per_rule() {
        assert_eq!(canonical_path("/a/./b/../c//d/", true, false), "/a/c/d/");
        assert_eq!(canonical_path("/a/..", true, false), "/");
        assert_eq!(canonical_path("/../..", true, false), "/");
        assert_eq!(canonical_path("/a/.", true, false), "/a/");
        assert_eq!(canonical_path("/a/./b", false, false), "/a/./b");
        assert_eq!(
            canonical_path("/arn%3Aaws:x y", true, true),
            "/arn%253Aaws%3Ax%20y"
        );
        assert_eq!(canonical_path("/a%20b", false, false), "/a%20b");
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        let mut out = String::new();
        push_query(
            &mut out,
            "prefix=x*&Marker=a%2Fb&list-type=2&acl&b=1&a=2&a=1&s=a+b",
        );
        assert_eq!(
            out,
            "Marker=a%2Fb&a=1&a=2&acl=&b=1&list-type=2&prefix=x%2A&s=a%20b"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-b", "  two   spaced\tvalue ".parse().expect("valid"));
        headers.append("host", "h".parse().expect("valid"));
        headers.append("x-b", "second".parse().expect("valid"));
        headers.append("user-agent", "not signed".parse().expect("valid"));
        let input = Input {
            method: "PUT",
            path: "/",
            query: Some(""),
            headers: &headers,
            added: &[("x-amz-date", "20261204T101500Z")],
            normalize_path: false,
            encode_path_twice: false,
            payload_hash: "UNSIGNED-PAYLOAD",
        };
        let canonical = Canonical::build(&input);
        assert_eq!(
            canonical.text(),
            "PUT\n/\n\nhost:h\nx-amz-date:20261204T101500Z\nx-b:two spaced\tvalue,second\n\n\
             host;x-amz-date;x-b\nUNSIGNED-PAYLOAD"
        );
        assert_eq!(canonical.signed_headers(), "host;x-amz-date;x-b");
    }

    #[test]
    fn amz_date_is_utc_and_zero_padded() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_788_567_305);
        let date_time = amz_date_time(t);
        assert_eq!(date_time, "20260905T001505Z");
        assert_eq!(date_of(&date_time), "20260905");
        assert_eq!(amz_date_time(SystemTime::UNIX_EPOCH), "19700101T000000Z");
    }
}
