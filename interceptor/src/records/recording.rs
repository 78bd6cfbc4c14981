//! Session recordings: one append-only file per session, `records.dir/sessions/<id>.jsonl`,
//! one JSON line per entry (the session's start, every exchange, a kill, its end).
//!
//! Crash guarantees: an exchange is written with a single `write(2)` on an `O_APPEND` file the
//! moment it finishes (its answer fully sent to the agent, or the agent gone), from the task
//! that served it, not from a queue, so a daemon killed with SIGKILL loses no finished exchange.
//! A write cut short by a power loss can leave one partial last line; the reader skips a last
//! line that does not parse and says so, so the file is always readable.
//!
//! What is kept: the request line and headers with the agent's authorization material removed,
//! the decision, the response status and headers, bodies up to `records.body_cap_bytes` (masked
//! as the agent received them; request bodies have secret-bearing fields masked too), timings
//! and the AWS request id.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Request and response headers never written to a recording: they carry credentials.
pub const UNRECORDED_HEADERS: [&str; 4] =
    ["authorization", "x-amz-security-token", "cookie", "proxy-authorization"];

/// One line of a recording.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    SessionOpened {
        time: String,
        session: String,
        subject: String,
        groups: Vec<String>,
        role_arn: String,
        pid: u32,
    },
    Exchange(Box<Exchange>),
    SessionKilled {
        time: String,
        by: String,
    },
    SessionEnded {
        time: String,
    },
}

/// One request and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// 1, 2, ... in the order the exchanges finished.
    pub seq: u64,
    /// When the request arrived (RFC 3339).
    pub time: String,
    pub duration_ms: u64,
    pub subject: String,
    pub groups: Vec<String>,
    pub service: Option<String>,
    pub region: Option<String>,
    pub action: Option<String>,
    /// The classified parameters as `(name, value)`, secret-bearing values masked.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    pub decision: String,
    pub rule: Option<String>,
    pub reason: Option<String>,
    pub request: RecordedRequest,
    pub response: RecordedResponse,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub host: String,
    /// Path and query as the agent sent them.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: RecordedBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: RecordedBody,
    /// False when the agent went away (or the upstream broke off) before the body ended.
    pub complete: bool,
}

/// A body prefix: text when it is UTF-8, else base64.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedBody {
    /// Bytes that passed, whether kept or not.
    pub size: u64,
    /// True when only the first `records.body_cap_bytes` were kept.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl RecordedBody {
    /// `kept` is the prefix that was captured, `size` the whole length seen.
    pub fn new(kept: &[u8], size: u64) -> Self {
        let truncated = (kept.len() as u64) < size;
        match std::str::from_utf8(kept) {
            Ok(text) => Self { size, truncated, text: Some(text.to_owned()), base64: None },
            // A prefix cut inside a multi-byte character is still text up to that point.
            Err(err) if truncated && err.error_len().is_none() => {
                let text = String::from_utf8_lossy(&kept[..err.valid_up_to()]).into_owned();
                Self { size, truncated, text: Some(text), base64: None }
            }
            Err(_) => Self {
                size,
                truncated,
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(kept)),
            },
        }
    }

    /// The kept bytes, for display.
    pub fn display(&self) -> String {
        match (&self.text, &self.base64) {
            (Some(text), _) => text.clone(),
            (None, Some(b64)) => format!("(binary, base64) {b64}"),
            (None, None) => String::new(),
        }
    }
}

/// Headers as recorded: names lower-case, credential headers left out.
pub fn recorded_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !UNRECORDED_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect()
}

/// Why a recording could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no recording of session {session} in {dir}")]
    NotFound { session: String, dir: PathBuf },
}

/// Where recordings live.
pub fn sessions_dir(records_dir: &Path) -> PathBuf {
    records_dir.join("sessions")
}

/// The recording file of one session.
pub fn recording_path(records_dir: &Path, session: &str) -> PathBuf {
    sessions_dir(records_dir).join(format!("{session}.jsonl"))
}

/// Where recordings go and how much they keep.
#[derive(Debug, Clone)]
pub struct RecordingSettings {
    pub records_dir: PathBuf,
    pub body_cap: usize,
    /// Group given read access (the control socket's admin group), when it exists.
    pub admin_gid: Option<u32>,
}

/// Truncates the file after its last newline, if it does not end with one.
fn drop_torn_tail(path: &Path) -> std::io::Result<()> {
    let bytes = fs::read(path)?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(path = %path.display(), dropped = bytes.len() - keep,
        "recording ended in a line cut short; it was cut off");
    OpenOptions::new().write(true).open(path)?.set_len(keep as u64)
}

/// An open recording, shared by all the session's connections.
#[derive(Debug)]
pub struct SessionRecording {
    path: PathBuf,
    file: Mutex<File>,
    seq: AtomicU64,
    body_cap: usize,
}

impl SessionRecording {
    /// Creates (or opens, to append) the session's file, mode 0640, under
    /// `records_dir/sessions` (mode 0750). Both belong to the admin group when it exists, so
    /// its members can replay without root.
    pub fn create(settings: &RecordingSettings, session: &str) -> Result<Self, RecordingError> {
        let dir = sessions_dir(&settings.records_dir);
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| RecordingError::Io { path, source }
        };
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).map_err(io_err(&dir))?;
        let path = recording_path(&settings.records_dir, session);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)
            .map_err(io_err(&path))?;
        if let Some(gid) = settings.admin_gid {
            for target in [&dir, &path] {
                std::os::unix::fs::chown(target, None, Some(gid)).map_err(io_err(target))?;
            }
        }
        Ok(Self { path, file: Mutex::new(file), seq: AtomicU64::new(0), body_cap: settings.body_cap })
    }

    /// Opens an existing recording to go on appending (a session adopted after a restart);
    /// numbering continues after the exchanges already written. A last line cut short (a
    /// crash mid-write) is cut off first, so the next entry starts on a line of its own.
    pub fn reopen(settings: &RecordingSettings, session: &str) -> Result<Self, RecordingError> {
        let path = recording_path(&settings.records_dir, session);
        drop_torn_tail(&path).map_err(|source| RecordingError::Io { path: path.clone(), source })?;
        let existing = read(&settings.records_dir, session)?;
        let last = existing
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Exchange(x) => Some(x.seq),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let recording = Self::create(settings, session)?;
        recording.seq.store(last, Ordering::Relaxed);
        Ok(recording)
    }

    /// How much of each body is kept.
    pub fn body_cap(&self) -> usize {
        self.body_cap
    }

    /// The next exchange number.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends one entry with one write. Errors are logged, never passed to the agent: a full
    /// disk must not turn into failed AWS calls, and the audit log still has the call.
    pub fn append(&self, entry: &Entry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(err) => return tracing::error!(error = %err, "recording entry not serialisable"),
        };
        line.push(b'\n');
        // Entries are whole lines written under this lock; a poisoned lock still holds the file.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = file.write_all(&line) {
            tracing::error!(path = %self.path.display(), error = %err, "recording write failed");
        }
    }
}

/// A recording read back.
#[derive(Debug)]
pub struct ReadRecording {
    pub entries: Vec<Entry>,
    /// A last line that did not parse (a write cut short), ignored.
    pub torn_tail: bool,
}

/// Reads a session's recording.
pub fn read(records_dir: &Path, session: &str) -> Result<ReadRecording, RecordingError> {
    let path = recording_path(records_dir, session);
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(RecordingError::NotFound {
                session: session.to_owned(),
                dir: sessions_dir(records_dir),
            });
        }
        Err(source) => return Err(RecordingError::Io { path, source }),
    };
    let mut entries = Vec::new();
    let mut torn_tail = false;
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    for (index, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if index + 1 == lines.len() => torn_tail = true,
            Err(err) => {
                tracing::warn!(path = %path.display(), line = index + 1, error = %err,
                    "unreadable recording line skipped");
            }
        }
    }
    Ok(ReadRecording { entries, torn_tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(seq: u64) -> Entry {
        Entry::Exchange(Box::new(Exchange {
            seq,
            time: "2026-12-04T00:00:00.000Z".into(),
            duration_ms: 3,
            subject: "alice".into(),
            groups: vec!["agents".into()],
            service: Some("ec2".into()),
            region: Some("us-east-1".into()),
            action: Some("ec2:DescribeInstances".into()),
            params: vec![],
            decision: "allow".into(),
            rule: None,
            reason: None,
            request: RecordedRequest {
                method: "POST".into(),
                host: "ec2.us-east-1.amazonaws.com".into(),
                target: "/".into(),
                headers: vec![],
                body: RecordedBody::new(b"Action=DescribeInstances", 24),
            },
            response: RecordedResponse {
                status: 200,
                headers: vec![],
                body: RecordedBody::new(&[0xff, 0x00], 2),
                complete: true,
            },
            request_id: Some("r-1".into()),
        }))
    }

    #[test]
    fn entries_read_back_in_order_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let settings = RecordingSettings {
            records_dir: dir.path().to_owned(),
            body_cap: 1024,
            admin_gid: None,
        };
        let recording = SessionRecording::create(&settings, "s-1").unwrap();
        recording.append(&exchange(1));
        recording.append(&exchange(2));
        // What a write cut short leaves behind.
        let path = recording_path(dir.path(), "s-1");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"kind\":\"exchange\",\"seq\":3,\"ti").unwrap();

        let read = read(dir.path(), "s-1").unwrap();
        assert_eq!(read.entries.len(), 2);
        assert!(read.torn_tail);
        let Entry::Exchange(second) = &read.entries[1] else { panic!("not an exchange") };
        assert_eq!(second.seq, 2);
        assert_eq!(second.response.body.base64.as_deref(), Some("/wA="));

        // An adopting daemon cuts the fragment off and numbers on.
        let reopened = SessionRecording::reopen(&settings, "s-1").unwrap();
        reopened.append(&exchange(reopened.next_seq()));
        let read = super::read(dir.path(), "s-1").unwrap();
        assert!(!read.torn_tail);
        let seqs: Vec<u64> = read
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Exchange(x) => Some(x.seq),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn credentials_are_not_recorded() {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", "AWS4-HMAC-SHA256 Credential=...".parse().unwrap());
        headers.insert("x-amz-security-token", "tok".parse().unwrap());
        headers.insert("x-amz-target", "DynamoDB_20120810.ListTables".parse().unwrap());
        let recorded = recorded_headers(&headers);
        assert_eq!(recorded, vec![("x-amz-target".into(), "DynamoDB_20120810.ListTables".into())]);
    }

    #[test]
    fn a_prefix_cut_inside_a_character_stays_text() {
        let body = RecordedBody::new("é".as_bytes().get(..1).unwrap(), 2);
        assert_eq!(body.text.as_deref(), Some(""));
        assert!(body.truncated);
    }
}
