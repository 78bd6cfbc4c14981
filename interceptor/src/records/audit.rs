//! The audit log: one JSON line per request and per session event, appended to
//! `records.dir/audit.log`.
//!
//! Lines are handed to one writer task through a channel, so no connection waits on the disk
//! or on a lock shared with the others; the writer issues one unbuffered `write` per line, so a
//! line is in the file (page cache) moments after its request ends. A daemon killed with
//! SIGKILL loses at most the lines still queued, never a line half-written: each is written with
//! one `write` to a file opened with O_APPEND.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

/// What kind of line this is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    #[default]
    Request,
    SessionOpened,
    SessionRefused,
    SessionEnded,
    SessionKilled,
}

/// Who made the call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditIdentity {
    pub subject: String,
    pub groups: Vec<String>,
}

/// One line of the audit log. Fields that do not apply are left out.
/// `Default` is an empty placeholder (no time); records are made with [`AuditRecord::new`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC.
    pub time: String,
    pub event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<AuditIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// allow, deny or error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The id of the approval the call was held for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// Who approved or denied the held call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// Why a call was refused or failed, as the agent was told.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// HTTP status the agent received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Whether the call reached AWS (false for refusals answered by the gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded: Option<bool>,
    /// The AWS request id, to find the same call in CloudTrail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl AuditRecord {
    /// A record of `event` stamped now, every other field empty.
    pub fn new(event: Event) -> Self {
        Self {
            time: now_rfc3339(),
            event,
            session: None,
            identity: None,
            role_arn: None,
            pid: None,
            host: None,
            service: None,
            region: None,
            action: None,
            resource: None,
            method: None,
            path: None,
            decision: None,
            rule: None,
            approval: None,
            approved_by: None,
            reason: None,
            status: None,
            forwarded: None,
            request_id: None,
            duration_ms: None,
        }
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open audit log {path}: {source}")]
pub struct AuditError {
    path: PathBuf,
    source: std::io::Error,
}

/// How many records a slow `sessions watch` may fall behind before it skips some.
const WATCH_BACKLOG: usize = 1024;

/// Handle to the audit writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    lines: mpsc::UnboundedSender<Vec<u8>>,
    /// Every record is also offered to live watchers (`interceptor sessions watch`).
    watchers: broadcast::Sender<Arc<AuditRecord>>,
}

impl AuditLog {
    /// Opens (creating) the log, mode 0640, and starts its writer task on the current runtime.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let audit_err = |source| AuditError { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(audit_err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(audit_err)?;
        let (lines, queue) = mpsc::unbounded_channel();
        tokio::task::spawn_blocking({
            let path = path.to_owned();
            move || write_lines(file, queue, &path)
        });
        let (watchers, _) = broadcast::channel(WATCH_BACKLOG);
        Ok(Self { lines, watchers })
    }

    /// A live feed of the records written from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditRecord>> {
        self.watchers.subscribe()
    }

    /// Queues one record; never blocks.
    pub fn record(&self, record: &AuditRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(err) => {
                tracing::error!(error = %err, "audit record not serialisable");
                return;
            }
        };
        line.push(b'\n');
        if self.lines.send(line).is_err() {
            tracing::error!("audit writer has stopped; record lost");
        }
        if self.watchers.receiver_count() > 0 {
            // No watcher is not an error.
            let _ = self.watchers.send(Arc::new(record.clone()));
        }
    }
}

/// Most lines gathered into one `write` when many are queued.
const MAX_LINES_PER_WRITE: usize = 1024;

/// How long the writer lets lines gather after the first one of a batch arrives. While it
/// waits it is not parked on the queue, so sending a line wakes no thread: under load the
/// writer costs one wake-up and one `write` per interval instead of one per request. It is
/// also the most a line waits before reaching the file (`sessions watch` is fed at once).
const GATHER: std::time::Duration = std::time::Duration::from_millis(5);

/// The writer: whatever is queued after a short gathering pause goes out in one `write_all`
/// of whole lines, so lines never interleave.
fn write_lines(mut file: fs::File, mut queue: mpsc::UnboundedReceiver<Vec<u8>>, path: &Path) {
    let mut batch = Vec::new();
    while let Some(line) = queue.blocking_recv() {
        batch.clear();
        batch.extend_from_slice(&line);
        std::thread::sleep(GATHER);
        for _ in 1..MAX_LINES_PER_WRITE {
            match queue.try_recv() {
                Ok(line) => batch.extend_from_slice(&line),
                Err(_) => break,
            }
        }
        if let Err(err) = file.write_all(&batch) {
            tracing::error!(path = %path.display(), error = %err, "audit write failed");
        }
    }
}

/// The current time as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc().format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_become_json_lines_without_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let mut record = AuditRecord::new(Event::Request);
        record.session = Some("s-1".into());
        record.action = Some("ec2:DescribeInstances".into());
        log.record(&record);
        drop(log);

        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let text = fs::read_to_string(&path).unwrap();
            if text.ends_with('\n') || std::time::Instant::now() > deadline {
                break text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["event"], "request");
        assert_eq!(line["action"], "ec2:DescribeInstances");
        assert!(line.get("status").is_none());
    }
}
