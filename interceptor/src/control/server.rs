//! The daemon side of the control socket.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    sync::Arc,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{MAX_REQUEST_BYTES, OpenedSession, Reply, Request};
use crate::{
    approvals::Verdict,
    records::{
        audit::{AuditIdentity, AuditRecord, Event, now_rfc3339},
        recording::{Entry, SessionRecording},
    },
    daemon::Daemon,
    identity::sts::AssumeRequest,
    session::{NewSession, SessionToken, new_session_id},
};

/// How long a control client may take to send its request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Who is asking, from SO_PEERCRED.
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: Option<u32>,
}

/// Binds the socket (replacing a stale one), mode 0666: any local user may open a session with
/// a valid token; admin requests are checked per request.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves control requests until the task is dropped.
pub async fn serve(daemon: Arc<Daemon>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let daemon = daemon.clone();
                tokio::spawn(async move { connection(daemon, stream).await });
            }
            Err(err) => {
                tracing::error!(error = %err, "control accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(daemon: Arc<Daemon>, stream: UnixStream) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid().and_then(|pid| u32::try_from(pid).ok()),
        },
        Err(err) => return tracing::warn!(error = %err, "control peer without credentials"),
    };
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    let reading = reader.read_line(&mut line);
    // A client that connects and says nothing must not hold a descriptor for ever.
    let Ok(read) = tokio::time::timeout(REQUEST_TIMEOUT, reading).await else {
        return tracing::debug!(uid = peer.uid, "control client sent no request in time");
    };
    let reply = match read {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Watch { session }) if is_admin(&daemon, peer) => {
                return watch(&daemon, session, write).await;
            }
            Ok(request) => handle(&daemon, peer, request).await,
            Err(err) => Reply::Error { message: format!("malformed control request: {err}") },
        },
        Err(err) => Reply::Error { message: format!("unreadable control request: {err}") },
    };
    // Serialising our own reply types cannot fail: they hold only strings and numbers.
    let mut bytes = serde_json::to_vec(&reply).expect("replies serialise");
    bytes.push(b'\n');
    if let Err(err) = write.write_all(&bytes).await {
        tracing::debug!(error = %err, "control client left before the reply");
    }
}

async fn handle(daemon: &Arc<Daemon>, peer: Peer, request: Request) -> Reply {
    match request {
        Request::OpenSession { token, token_file, role_arn, name } => {
            open_session(daemon, peer, token, token_file, role_arn, name).await
        }
        Request::CaCertificate => Reply::CaCertificate { pem: daemon.ca.cert_pem().to_owned() },
        Request::ListSessions
        | Request::Watch { .. }
        | Request::KillSession { .. }
        | Request::ListApprovals
        | Request::Approve { .. }
        | Request::Deny { .. }
            if !is_admin(daemon, peer) =>
        {
            Reply::Error {
                message: format!(
                    "permission denied: uid {} is neither root nor in the admin group {:?}",
                    peer.uid, daemon.config.control.admin_group
                ),
            }
        }
        Request::ListSessions => Reply::Sessions {
            sessions: daemon.sessions.list().iter().map(|s| s.summary()).collect(),
        },
        Request::KillSession { id } => match daemon.kill_session(&id, &user_name(peer.uid)) {
            Ok(()) => Reply::SessionKilled { id },
            Err(err) => Reply::Error { message: err.to_string() },
        },
        Request::ListApprovals => Reply::Approvals { calls: daemon.approvals.list() },
        // Served by `watch` before dispatch; only a refused watcher gets here.
        Request::Watch { .. } => Reply::Error { message: "watch refused".to_owned() },
        Request::Approve { id } => {
            answer(daemon, &id, Verdict::Approved { by: user_name(peer.uid) })
        }
        Request::Deny { id, reason } => {
            let reason = reason.unwrap_or_else(|| "denied by an administrator".to_owned());
            answer(daemon, &id, Verdict::Denied { by: user_name(peer.uid), reason })
        }
    }
}

/// Streams audit records to an admin's `sessions watch` until it disconnects.
async fn watch(
    daemon: &Daemon,
    session: Option<String>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) {
    if let Some(id) = &session
        && daemon.sessions.by_id(id).is_none()
    {
        let reply = Reply::Error { message: format!("no live session {id}") };
        // Serialising our own reply type cannot fail.
        let mut bytes = serde_json::to_vec(&reply).expect("replies serialise");
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
        return;
    }
    let mut feed = daemon.audit.subscribe();
    // Subscribed: from here on no record is missed, and the watcher may say so.
    let mut ack = serde_json::to_vec(&Reply::Watching { session: session.clone() })
        .expect("replies serialise");
    ack.push(b'\n');
    if write.write_all(&ack).await.is_err() {
        return;
    }
    loop {
        let record = match feed.recv().await {
            Ok(record) => record,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::warn!(skipped, "a session watcher fell behind; records skipped");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if session.as_ref().is_some_and(|id| record.session.as_ref() != Some(id)) {
            continue;
        }
        let Ok(mut bytes) = serde_json::to_vec(&*record) else { continue };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            return; // the admin pressed Ctrl-C
        }
    }
}

fn answer(daemon: &Daemon, id: &str, verdict: Verdict) -> Reply {
    match daemon.approvals.answer(id, verdict) {
        Ok(_) => Reply::Answered { id: id.to_owned() },
        Err(err) => Reply::Error { message: err.to_string() },
    }
}

/// The peer's user name for the audit log, or `uid N` when it has none.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// Root, or a member of the configured admin group (primary or supplementary).
fn is_admin(daemon: &Daemon, peer: Peer) -> bool {
    if peer.uid == 0 {
        return true;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_name(&daemon.config.control.admin_group) else {
        return false;
    };
    if group.gid.as_raw() == peer.gid {
        return true;
    }
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)) else {
        return false;
    };
    group.mem.contains(&user.name)
}

async fn open_session(
    daemon: &Arc<Daemon>,
    peer: Peer,
    token: String,
    token_file: Option<String>,
    role_arn: Option<String>,
    name: Option<String>,
) -> Reply {
    let refuse = |message: String| {
        let mut record = AuditRecord::new(Event::SessionRefused);
        record.pid = peer.pid;
        record.reason = Some(message.clone());
        daemon.audit.record(&record);
        tracing::warn!(uid = peer.uid, pid = peer.pid, %message, "session refused");
        Reply::Error { message }
    };
    let Some(pid) = peer.pid else {
        return refuse("the caller's pid is unknown (SO_PEERCRED gave none)".into());
    };
    let token = token.trim().to_owned();
    let identity = match daemon.oidc.validate(&token).await {
        Ok(identity) => identity,
        Err(err) => return refuse(format!("token refused: {err}")),
    };
    let role_arn = role_arn.unwrap_or_else(|| daemon.config.aws.role_arn.clone());
    let id = new_session_id();

    // Ask STS now, so a role the identity may not assume fails `run` instead of every call.
    let assume = AssumeRequest {
        session_id: id.clone(),
        role_arn: role_arn.clone(),
        subject: identity.subject.clone(),
        web_identity_token: token.clone(),
    };
    if let Err(err) = daemon.broker.credentials(&assume).await {
        return refuse(format!("role {role_arn} cannot be assumed for {}: {err}", identity.subject));
    }

    let recording = match SessionRecording::create(&daemon.recording, &id) {
        Ok(recording) => Arc::new(recording),
        Err(err) => return refuse(format!("cannot start the session's recording: {err}")),
    };
    let new = NewSession {
        recording,
        id,
        name,
        token: SessionToken { token, expires_at: identity.expires_at },
        identity,
        role_arn,
        token_file: token_file.map(Into::into),
    };
    let session = match daemon.sessions.open(new, pid) {
        Ok(session) => session,
        Err(err) => {
            daemon.broker.forget(&assume.session_id);
            return refuse(format!("cannot create the session: {err}"));
        }
    };
    daemon.watch_session(session.clone());
    session.recording.append(&Entry::SessionOpened {
        time: now_rfc3339(),
        session: session.id.clone(),
        subject: session.identity.subject.clone(),
        groups: session.identity.groups.clone(),
        role_arn: session.role_arn.clone(),
        pid,
    });

    let mut record = AuditRecord::new(Event::SessionOpened);
    record.session = Some(session.id.clone());
    record.identity = Some(AuditIdentity {
        subject: session.identity.subject.clone(),
        groups: session.identity.groups.clone(),
    });
    record.role_arn = Some(session.role_arn.clone());
    record.pid = Some(pid);
    daemon.audit.record(&record);
    tracing::info!(session = %session.id, subject = %session.identity.subject,
        cgroup = session.cgroup_id, pid, "session opened");

    let files = daemon.ca.files();
    Reply::SessionOpened(OpenedSession {
        id: session.id.clone(),
        subject: session.identity.subject.clone(),
        groups: session.identity.groups.clone(),
        role_arn: session.role_arn.clone(),
        cgroup: session.cgroup_dir.display().to_string(),
        ca_file: files.cert.display().to_string(),
        ca_bundle: files.bundle.display().to_string(),
    })
}
