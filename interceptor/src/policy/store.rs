//! The policy in force, reloaded when its file changes or on SIGHUP. A file that fails to load
//! is refused with its line and reason, and the previous policy stays in force.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use super::{Policy, PolicyError};

/// How often the policy file's modification time is checked.
pub const POLICY_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The current policy; readers take an `Arc` and never wait on a reload.
#[derive(Debug)]
pub struct PolicyStore {
    path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    policy: Arc<Policy>,
    /// Modification time and length of the file that was last tried, loaded or not, so a
    /// broken file is reported once rather than every poll.
    stamp: Option<(SystemTime, u64)>,
}

impl PolicyStore {
    /// Loads the file; at start-up there is no previous policy, so a broken file is fatal.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let stamp = stamp(path);
        let policy = Policy::load(path)?;
        Ok(Self { path: path.to_owned(), current: RwLock::new(Loaded { policy: Arc::new(policy), stamp }) })
    }

    pub fn current(&self) -> Arc<Policy> {
        // The lock guards an Arc swap only; a poisoned lock still holds a whole value.
        self.current.read().unwrap_or_else(|e| e.into_inner()).policy.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reloads if the file changed since the last attempt (or always, when `force`).
    /// Returns whether a new policy is now in force.
    pub fn reload(&self, force: bool) -> bool {
        let stamp = stamp(&self.path);
        {
            let loaded = self.current.read().unwrap_or_else(|e| e.into_inner());
            if !force && loaded.stamp == stamp {
                return false;
            }
        }
        let result = Policy::load(&self.path);
        let mut loaded = self.current.write().unwrap_or_else(|e| e.into_inner());
        loaded.stamp = stamp;
        match result {
            Ok(policy) => {
                loaded.policy = Arc::new(policy);
                tracing::info!(path = %self.path.display(), rules = loaded.policy.rules.len(),
                    "policy reloaded");
                true
            }
            Err(err) => {
                tracing::error!(error = %err, "new policy refused; the previous one stays in force");
                false
            }
        }
    }

    /// Polls the file and listens for SIGHUP until the task is dropped.
    pub async fn watch(self: Arc<Self>) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(err) => {
                tracing::warn!(error = %err, "no SIGHUP handler; the policy reloads on change only");
                None
            }
        };
        let mut tick = tokio::time::interval(POLICY_POLL_INTERVAL);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match &mut hangup { Some(h) => h.recv().await, None => None } } => true,
            };
            self.reload(forced);
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_edit_keeps_the_previous_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, "default = \"allow\"\n").unwrap();
        let store = PolicyStore::load(&path).unwrap();
        assert_eq!(store.current().default, super::super::Effect::Allow);

        std::fs::write(&path, "default = \"maybe\"\n").unwrap();
        assert!(!store.reload(true));
        assert_eq!(store.current().default, super::super::Effect::Allow);

        std::fs::write(&path, "default = \"deny\"\n").unwrap();
        assert!(store.reload(true));
        assert_eq!(store.current().default, super::super::Effect::Deny);
    }
}
