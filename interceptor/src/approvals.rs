//! Calls held for a human: the gateway parks the agent's request here and waits; an admin
//! releases it with `interceptor approve ID` or refuses it with `interceptor deny ID`. No answer
//! before the rule's timeout is a denial.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What a human decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approved { by: String },
    Denied { by: String, reason: String },
}

/// A held call, as `interceptor approvals` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldCall {
    pub id: String,
    pub session: String,
    pub subject: String,
    pub groups: Vec<String>,
    pub action: String,
    pub rule: Option<String>,
    /// The call's main parameters, `name=value`.
    pub params: Vec<String>,
    /// Seconds since the Unix epoch.
    pub held_since: u64,
    /// Seconds until the call is denied for want of an answer.
    pub expires_in: u64,
}

struct Pending {
    call: HeldCall,
    deadline: Instant,
    answer: oneshot::Sender<Verdict>,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("no held call {0} (already answered, timed out, or its agent went away)")]
    Unknown(String),
}

/// All held calls.
#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals").finish_non_exhaustive()
    }
}

/// A held call's handle for the gateway; dropping it withdraws the call.
pub struct Hold<'a> {
    approvals: &'a Approvals,
    id: String,
    answer: oneshot::Receiver<Verdict>,
    timeout: Duration,
}

impl Approvals {
    /// Parks a call; `call.id` is filled in here.
    pub fn hold(&self, mut call: HeldCall, timeout: Duration) -> Hold<'_> {
        let id = format!("r-{:08x}", rand::random::<u32>());
        call.id = id.clone();
        call.held_since = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (tx, rx) = oneshot::channel();
        let pending = Pending { call, deadline: Instant::now() + timeout, answer: tx };
        self.lock().insert(id.clone(), pending);
        Hold { approvals: self, id, answer: rx, timeout }
    }

    /// The calls waiting now, oldest first.
    pub fn list(&self) -> Vec<HeldCall> {
        let now = Instant::now();
        let mut calls: Vec<HeldCall> = self
            .lock()
            .values()
            .map(|p| HeldCall {
                expires_in: p.deadline.saturating_duration_since(now).as_secs(),
                ..p.call.clone()
            })
            .collect();
        calls.sort_by_key(|c| c.held_since);
        calls
    }

    /// Delivers a human's verdict to the waiting call.
    pub fn answer(&self, id: &str, verdict: Verdict) -> Result<HeldCall, ApprovalError> {
        let pending = self.lock().remove(id).ok_or_else(|| ApprovalError::Unknown(id.to_owned()))?;
        // The receiver is gone only if the agent's connection closed in this instant.
        pending.answer.send(verdict).map_err(|_| ApprovalError::Unknown(id.to_owned()))?;
        Ok(pending.call)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hold<'_> {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits for the verdict; None when the timeout passed first.
    pub async fn wait(mut self) -> Option<Verdict> {
        match tokio::time::timeout(self.timeout, &mut self.answer).await {
            Ok(Ok(verdict)) => Some(verdict),
            _ => None,
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.approvals.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> HeldCall {
        HeldCall {
            id: String::new(),
            session: "s-1".into(),
            subject: "alice".into(),
            groups: vec![],
            action: "ec2:TerminateInstances".into(),
            rule: Some("deletes".into()),
            params: vec!["InstanceId.1=i-1".into()],
            held_since: 0,
            expires_in: 0,
        }
    }

    #[tokio::test]
    async fn an_approval_releases_the_waiting_call() {
        let approvals = Approvals::default();
        let hold = approvals.hold(call(), Duration::from_secs(5));
        let id = hold.id().to_owned();
        assert_eq!(approvals.list().len(), 1);
        approvals.answer(&id, Verdict::Approved { by: "root".into() }).unwrap();
        assert_eq!(hold.wait().await, Some(Verdict::Approved { by: "root".into() }));
        assert!(approvals.list().is_empty());
    }

    #[tokio::test]
    async fn no_answer_in_time_is_none_and_the_call_is_withdrawn() {
        let approvals = Approvals::default();
        let hold = approvals.hold(call(), Duration::from_millis(20));
        let id = hold.id().to_owned();
        assert_eq!(hold.wait().await, None);
        assert!(approvals.answer(&id, Verdict::Approved { by: "root".into() }).is_err());
    }
}
