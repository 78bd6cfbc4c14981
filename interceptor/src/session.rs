//! Live agent sessions: one per `interceptor run`, bound to its own cgroup.
//!
//! The gateway finds a connection's session by the cgroup id the eBPF program recorded at
//! connect(); the control socket finds it by its id. A session ends when its cgroup empties or
//! when an admin kills it; after that every lookup fails, so its calls are refused.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{identity::oidc::Identity, records::recording::SessionRecording};

/// How often a session's cgroup is checked for emptiness. cgroup.events does raise inotify
/// events, but polling one small file is simpler and costs nothing measurable.
pub const CGROUP_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// One agent session.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub name: Option<String>,
    pub identity: Identity,
    pub role_arn: String,
    pub cgroup_dir: PathBuf,
    pub cgroup_id: u64,
    pub started_at: SystemTime,
    /// The agent's current OIDC token and its expiry; STS is asked with it, and once it has
    /// expired (and the token file holds no fresher one) the session's calls are refused.
    token: RwLock<SessionToken>,
    /// Where the agent's token lives, so it can be re-read when it nears expiry.
    pub token_file: Option<PathBuf>,
    ended: AtomicBool,
    pub counters: Counters,
    /// Every exchange of the session is appended here.
    pub recording: Arc<SessionRecording>,
}

/// Per-session request counts, shown by `interceptor sessions`.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    /// Calls waiting for a human's approval right now.
    pub held: AtomicU64,
}

/// What `interceptor sessions` shows of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub name: Option<String>,
    pub subject: String,
    pub groups: Vec<String>,
    pub role_arn: String,
    pub cgroup: String,
    pub pids: Vec<u32>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub requests: u64,
    pub denied: u64,
    pub held: u64,
}

/// A validated OIDC token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionToken {
    pub token: String,
    pub expires_at: SystemTime,
}

/// What is needed to open a session; the daemon fills it after validating the token.
#[derive(Debug)]
pub struct NewSession {
    /// From [`new_session_id`].
    pub id: String,
    pub name: Option<String>,
    pub identity: Identity,
    pub role_arn: String,
    pub token: SessionToken,
    pub token_file: Option<PathBuf>,
    pub recording: Arc<SessionRecording>,
}

/// Why a session could not be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session's cgroup could not be created, joined or removed.
    #[error("cgroup {path}: {source}")]
    Cgroup { path: PathBuf, source: std::io::Error },
    /// No live session has this id.
    #[error("no live session {0}")]
    Unknown(String),
}

impl Session {
    /// A live session from its state, whether just opened or adopted after a restart.
    fn live(state: SessionState, cgroup_id: u64, recording: Arc<SessionRecording>) -> Arc<Self> {
        Arc::new(Self {
            id: state.id,
            name: state.name,
            identity: state.identity,
            role_arn: state.role_arn,
            cgroup_dir: state.cgroup_dir,
            cgroup_id,
            started_at: state.started_at,
            token: RwLock::new(state.token),
            token_file: state.token_file,
            ended: AtomicBool::new(false),
            counters: Counters::default(),
            recording,
        })
    }

    pub fn token(&self) -> SessionToken {
        // Poisoning needs a panic while holding the lock; the value is still whole then.
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_token(&self, token: SessionToken) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// The processes in the session's cgroup right now.
    pub fn pids(&self) -> Vec<u32> {
        let procs = fs::read_to_string(self.cgroup_dir.join("cgroup.procs")).unwrap_or_default();
        procs.lines().filter_map(|line| line.trim().parse().ok()).collect()
    }

    /// True once the cgroup holds no process (or is gone). A read that fails for another
    /// reason (the daemon out of descriptors, say) says nothing: the session stays.
    pub fn cgroup_is_empty(&self) -> bool {
        match fs::read_to_string(self.cgroup_dir.join("cgroup.events")) {
            Ok(events) => events.lines().any(|line| line.trim() == "populated 0"),
            Err(err) => err.kind() == std::io::ErrorKind::NotFound,
        }
    }

    pub fn summary(&self) -> SessionSummary {
        SessionSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            subject: self.identity.subject.clone(),
            groups: self.identity.groups.clone(),
            role_arn: self.role_arn.clone(),
            cgroup: self.cgroup_dir.display().to_string(),
            pids: self.pids(),
            started: self
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            requests: self.counters.requests.load(Ordering::Relaxed),
            denied: self.counters.denied.load(Ordering::Relaxed),
            held: self.counters.held.load(Ordering::Relaxed),
        }
    }
}

/// What is kept on disk of a live session, so a restarted daemon adopts it again: its agents
/// keep working across a daemon restart instead of being refused until they are restarted.
/// The file holds the agent's token, so it is root's alone (0600).
#[derive(Debug, Serialize, Deserialize)]
struct SessionState {
    id: String,
    name: Option<String>,
    identity: Identity,
    role_arn: String,
    token: SessionToken,
    token_file: Option<PathBuf>,
    cgroup_dir: PathBuf,
    started_at: SystemTime,
}

/// All live sessions, by cgroup id and by session id.
#[derive(Debug)]
pub struct SessionRegistry {
    cgroup_root: PathBuf,
    /// Where each live session's [`SessionState`] is kept.
    state_dir: PathBuf,
    sessions: RwLock<Sessions>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_cgroup: HashMap<u64, Arc<Session>>,
    by_id: HashMap<String, Arc<Session>>,
}

impl SessionRegistry {
    /// `cgroup_root` is the parent directory of the session cgroups; `state_dir` keeps the
    /// live sessions' state files.
    pub fn new(cgroup_root: PathBuf, state_dir: PathBuf) -> Self {
        Self { cgroup_root, state_dir, sessions: RwLock::new(Sessions::default()) }
    }

    /// Adopts the sessions an earlier daemon left whose cgroups still hold processes; the state
    /// of sessions that ended meanwhile is removed. `reopen` gives each its recording again.
    pub fn restore(
        &self,
        reopen: impl Fn(&str) -> Option<Arc<SessionRecording>>,
    ) -> Vec<Arc<Session>> {
        let Ok(entries) = fs::read_dir(&self.state_dir) else { return Vec::new() };
        let mut restored = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let state = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<SessionState>(&bytes).ok());
            let Some(state) = state else {
                tracing::warn!(path = %path.display(), "unreadable session state removed");
                let _ = fs::remove_file(&path);
                continue;
            };
            let live = fs::read_to_string(state.cgroup_dir.join("cgroup.events"))
                .is_ok_and(|events| events.lines().any(|l| l.trim() == "populated 1"));
            let cgroup_id = crate::redirect::cgroupfs::cgroup_id(&state.cgroup_dir).ok();
            let recording = reopen(&state.id);
            let (true, Some(cgroup_id), Some(recording)) = (live, cgroup_id, recording) else {
                let _ = fs::remove_file(&path);
                let _ = fs::remove_dir(&state.cgroup_dir);
                continue;
            };
            let session = Session::live(state, cgroup_id, recording);
            self.register(&session);
            restored.push(session);
        }
        restored
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.state_dir.join(format!("{id}.json"))
    }

    /// Writes the session's state file (0600), replacing it whole.
    fn save(&self, session: &Session) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        fs::create_dir_all(&self.state_dir)?;
        let state = SessionState {
            id: session.id.clone(),
            name: session.name.clone(),
            identity: session.identity.clone(),
            role_arn: session.role_arn.clone(),
            token: session.token(),
            token_file: session.token_file.clone(),
            cgroup_dir: session.cgroup_dir.clone(),
            started_at: session.started_at,
        };
        let path = self.state_path(&session.id);
        let tmp = path.with_extension("json.tmp");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut file, &serde_json::to_vec(&state)?)?;
        fs::rename(&tmp, &path)
    }

    /// Saves a session's changed state (a renewed token); a failure only costs the session
    /// its adoption by a restarted daemon, so it is logged, not returned.
    pub fn persist(&self, session: &Session) {
        if let Err(err) = self.save(session) {
            tracing::warn!(session = %session.id, error = %err, "session state not saved");
        }
    }

    fn register(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        sessions.by_cgroup.insert(session.cgroup_id, session.clone());
        sessions.by_id.insert(session.id.clone(), session.clone());
    }

    pub fn cgroup_root(&self) -> &Path {
        &self.cgroup_root
    }

    /// Creates the session's cgroup, moves `pid` into it and registers the session.
    pub fn open(&self, new: NewSession, pid: u32) -> Result<Arc<Session>, SessionError> {
        let id = new.id;
        let cgroup_dir = self.cgroup_root.join(&id);
        let cgroup_err = |source| SessionError::Cgroup { path: cgroup_dir.clone(), source };
        fs::create_dir(&cgroup_dir).map_err(cgroup_err)?;
        let cgroup_id = match crate::redirect::cgroupfs::cgroup_id(&cgroup_dir) {
            Ok(cgroup_id) => cgroup_id,
            Err(source) => {
                let _ = fs::remove_dir(&cgroup_dir);
                return Err(cgroup_err(source));
            }
        };
        let state = SessionState {
            id,
            name: new.name,
            identity: new.identity,
            role_arn: new.role_arn,
            token: new.token,
            token_file: new.token_file,
            cgroup_dir: cgroup_dir.clone(),
            started_at: SystemTime::now(),
        };
        let session = Session::live(state, cgroup_id, new.recording);
        // Registered before the process joins, so its first connect() already finds it.
        self.register(&session);
        let joined = self
            .save(&session)
            .and_then(|()| fs::write(cgroup_dir.join("cgroup.procs"), pid.to_string()));
        if let Err(source) = joined {
            self.close(&session);
            return Err(cgroup_err(source));
        }
        Ok(session)
    }

    pub fn by_cgroup(&self, cgroup_id: u64) -> Option<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.by_cgroup.get(&cgroup_id).cloned()
    }

    pub fn by_id(&self, id: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        sessions.by_id.get(id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = sessions.by_id.values().cloned().collect();
        list.sort_by_key(|s| s.started_at);
        list
    }

    /// Ends the session: it is unregistered at once, and its cgroup removed if it is empty (an
    /// admin kill empties it first). Returns false if it had already ended; the cgroup removal
    /// is tried either way, so a killed session's directory goes once its processes are gone.
    pub fn close(&self, session: &Session) -> bool {
        let first = !session.ended.swap(true, Ordering::AcqRel);
        self.unregister(session);
        if let Err(err) = fs::remove_dir(&session.cgroup_dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(session = %session.id, cgroup = %session.cgroup_dir.display(),
                error = %err, "session cgroup not removed");
        }
        first
    }

    /// Forgets the session, in memory and on disk.
    fn unregister(&self, session: &Session) {
        {
            let mut sessions = self.sessions.write().unwrap_or_else(|e| e.into_inner());
            sessions.by_cgroup.remove(&session.cgroup_id);
            sessions.by_id.remove(&session.id);
        }
        let _ = fs::remove_file(self.state_path(&session.id));
    }

    /// Sends SIGKILL to every process of the session at once (cgroup.kill), then ends it.
    pub fn kill(&self, id: &str) -> Result<Arc<Session>, SessionError> {
        let session = self.by_id(id).ok_or_else(|| SessionError::Unknown(id.to_owned()))?;
        // Mark it ended first: from this instant every call of the session is refused.
        session.ended.store(true, Ordering::Release);
        self.unregister(&session);
        let kill_file = session.cgroup_dir.join("cgroup.kill");
        fs::write(&kill_file, "1")
            .map_err(|source| SessionError::Cgroup { path: kill_file, source })?;
        Ok(session)
    }
}

/// `s-` and 12 hex digits: short enough to type, long enough not to repeat on one host.
pub fn new_session_id() -> String {
    format!("s-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
