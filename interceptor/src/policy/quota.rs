//! Rule limits: how much of something an identity may use per window, counted across calls and
//! kept across daemon restarts.
//!
//! A window slides: a call is weighed against everything the identity used under the same rule
//! in the last `per`. The usage is written to `records.dir/quotas.json` after every charge (a
//! small file, rewritten whole and renamed into place, so a crash leaves the old or the new
//! version, never a torn one).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// What `count` means when the rule does not name a parameter: one per call.
pub const COUNT_CALLS: &str = "calls";

/// One rule's `limit = { count = "MaxCount", max = 4, per = "1h" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// A numeric parameter whose value is charged (`MaxCount`), or `calls`.
    #[serde(default = "calls")]
    pub count: String,
    pub max: u64,
    #[serde(deserialize_with = "crate::config::duration")]
    pub per: Duration,
}

fn calls() -> String {
    COUNT_CALLS.to_owned()
}

impl Limit {
    /// How much one call uses, given the values of the counted parameter. A counted parameter
    /// the call lacks or that is not a number weighs 1, never 0, so it cannot slip past a limit.
    pub fn weight(&self, values: &[String]) -> u64 {
        if self.count == COUNT_CALLS {
            return 1;
        }
        let total: u64 = values.iter().filter_map(|v| v.trim().parse::<u64>().ok()).sum();
        total.max(1)
    }
}

/// Usage of one (rule, identity) pair: when, and how much.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Usage {
    /// (seconds since the epoch, amount)
    charges: Vec<(u64, u64)>,
}

impl Usage {
    fn used_since(&self, since: u64) -> u64 {
        self.charges.iter().filter(|(at, _)| *at > since).map(|(_, amount)| amount).sum()
    }
}

/// Why the usage file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("quota file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("quota file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// All usage, keyed by "rule name" + NUL + subject.
#[derive(Debug)]
pub struct Quotas {
    file: Option<PathBuf>,
    usage: Mutex<HashMap<String, Usage>>,
}

/// The answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// Charged; this much of the limit is now used.
    Charged { used: u64 },
    /// The call would exceed the limit; nothing was charged.
    Exceeded { used: u64, wanted: u64 },
}

impl Quotas {
    /// Usage kept only in memory (tests, `policy check`).
    pub fn in_memory() -> Self {
        Self { file: None, usage: Mutex::new(HashMap::new()) }
    }

    /// Loads the usage file, or starts empty when there is none.
    pub fn load(path: &Path) -> Result<Self, QuotaError> {
        let usage = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| QuotaError::Corrupt {
                path: path.to_owned(),
                message: err.to_string(),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(QuotaError::Io { path: path.to_owned(), source }),
        };
        Ok(Self { file: Some(path.to_owned()), usage: Mutex::new(usage) })
    }

    /// The refusal a charge of `weight` would meet now, without charging anything.
    pub fn would_exceed(&self, rule: &str, subject: &str, limit: &Limit, weight: u64) -> Option<Charge> {
        let since = now_secs().saturating_sub(limit.per.as_secs());
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let used = usage.get(&key(rule, subject)).map_or(0, |u| u.used_since(since));
        (used + weight > limit.max).then_some(Charge::Exceeded { used, wanted: weight })
    }

    /// Takes back the most recent charge of `weight` (a call AWS did not carry out).
    pub fn refund(&self, rule: &str, subject: &str, weight: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = usage.get_mut(&key(rule, subject)) else { return };
        if let Some(index) = entry.charges.iter().rposition(|(_, amount)| *amount == weight) {
            entry.charges.remove(index);
            self.save(&usage);
        }
    }

    /// Charges `weight` against `limit` for this rule and subject, unless it would exceed it.
    pub fn charge(&self, rule: &str, subject: &str, limit: &Limit, weight: u64) -> Charge {
        let now = now_secs();
        let since = now.saturating_sub(limit.per.as_secs());
        let key = key(rule, subject);
        // A poisoned lock means a panic mid-update of plain numbers; they remain usable.
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let entry = usage.entry(key).or_default();
        entry.charges.retain(|(at, _)| *at > since);
        let used = entry.used_since(since);
        if used + weight > limit.max {
            return Charge::Exceeded { used, wanted: weight };
        }
        entry.charges.push((now, weight));
        self.save(&usage);
        Charge::Charged { used: used + weight }
    }

    /// Writes the usage file. Called under the lock, so the file never goes back to an older
    /// count; only calls under a limited rule get here, and the file is small.
    fn save(&self, usage: &HashMap<String, Usage>) {
        let Some(path) = &self.file else { return };
        let saved = serde_json::to_vec(usage)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(path, &bytes));
        if let Err(err) = saved {
            tracing::error!(path = %path.display(), error = %err, "quota usage not saved");
        }
    }
}

fn key(rule: &str, subject: &str) -> String {
    format!("{rule}\0{subject}")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max: u64) -> Limit {
        Limit { count: "MaxCount".into(), max, per: Duration::from_secs(3600) }
    }

    #[test]
    fn charges_until_the_limit_then_refuses_without_charging() {
        let quotas = Quotas::in_memory();
        let l = limit(4);
        assert_eq!(quotas.charge("r", "alice", &l, 2), Charge::Charged { used: 2 });
        assert_eq!(quotas.charge("r", "alice", &l, 2), Charge::Charged { used: 4 });
        assert_eq!(quotas.charge("r", "alice", &l, 1), Charge::Exceeded { used: 4, wanted: 1 });
        assert_eq!(quotas.charge("r", "bob", &l, 2), Charge::Charged { used: 2 }, "per identity");
    }

    #[test]
    fn usage_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas.json");
        let l = limit(4);
        Quotas::load(&path).unwrap().charge("r", "alice", &l, 3);
        let reloaded = Quotas::load(&path).unwrap();
        assert_eq!(reloaded.charge("r", "alice", &l, 2), Charge::Exceeded { used: 3, wanted: 2 });
    }

    #[test]
    fn a_refund_frees_the_charge_and_a_check_charges_nothing() {
        let quotas = Quotas::in_memory();
        let l = limit(4);
        quotas.charge("r", "alice", &l, 4);
        assert_eq!(quotas.would_exceed("r", "alice", &l, 1), Some(Charge::Exceeded { used: 4, wanted: 1 }));
        quotas.refund("r", "alice", 4);
        assert_eq!(quotas.would_exceed("r", "alice", &l, 4), None);
        assert_eq!(quotas.charge("r", "alice", &l, 4), Charge::Charged { used: 4 });
    }

    #[test]
    fn missing_or_odd_counts_weigh_one() {
        let l = limit(4);
        assert_eq!(l.weight(&[]), 1);
        assert_eq!(l.weight(&["x".into()]), 1);
        assert_eq!(l.weight(&["3".into()]), 3);
    }
}
