//! `interceptor daemon`: attach the redirect, serve the gateway and the control socket.
//!
//! Stopping the daemon (SIGTERM, SIGINT, a crash) leaves the eBPF links pinned, so agents'
//! redirected connections are refused rather than sent to AWS directly; the next daemon takes
//! the pins over. Only `interceptor daemon --uninstall` detaches and removes them.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    approvals::Approvals,
    policy::{quota::Quotas, store::PolicyStore},
    records::{
        audit::{AuditIdentity, AuditLog, AuditRecord, Event, now_rfc3339},
        recording::{Entry, RecordingSettings, SessionRecording},
    },
    config::Config,
    control,
    gateway::{self, Gateway, ca::CertificateAuthority, proxy::ProxySettings, upstream::Upstream},
    identity::{oidc::OidcValidator, sts::CredentialBroker},
    redirect::{RedirectSettings, Redirector, cgroupfs},
    session::{Session, SessionError, SessionRegistry},
};

/// State shared by the control socket and the session watchers.
pub struct Daemon {
    pub config: Config,
    pub recording: RecordingSettings,
    pub approvals: Arc<Approvals>,
    pub sessions: Arc<SessionRegistry>,
    pub oidc: Arc<OidcValidator>,
    pub broker: Arc<CredentialBroker>,
    pub ca: Arc<CertificateAuthority>,
    pub audit: AuditLog,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let cgroup2 = cgroupfs::cgroup2_mount().context("finding the cgroup v2 mount")?;
    let cgroup_root = config.cgroup_root(&cgroup2);
    std::fs::create_dir_all(&config.records.dir)
        .with_context(|| format!("creating records.dir {}", config.records.dir.display()))?;

    let ca = Arc::new(
        CertificateAuthority::load_or_create(&config.ca_dir()).context("loading the gateway CA")?,
    );
    let audit = AuditLog::open(&config.audit_log_path())?;
    // No previous policy exists at start-up: a broken or missing file stops the daemon.
    let policy = Arc::new(PolicyStore::load(&config.policy.file)?);
    tracing::info!(path = %config.policy.file.display(), rules = policy.current().rules.len(),
        "policy loaded");
    let quotas = Arc::new(Quotas::load(&config.records.dir.join("quotas.json"))?);
    let approvals = Arc::new(Approvals::default());
    let oidc = Arc::new(OidcValidator::new(&config.oidc).context("configuring OIDC")?);
    if let Err(err) = oidc.prefetch().await {
        // The IdP may come up after us; tokens are validated (and keys fetched) on demand.
        tracing::warn!(error = %err, "OIDC discovery not reachable yet");
    }
    let broker = Arc::new(CredentialBroker::new(&config.aws).context("configuring STS")?);
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let upstreams = (0..workers)
        .map(|_| Upstream::new(config.aws.upstream.clone(), config.aws.upstream_ca_file.as_deref()))
        .collect::<Result<Vec<_>, _>>()
        .context("configuring the upstream TLS client")?;

    // Listen before attaching, so the first redirected connection already finds the gateway.
    let listeners = Gateway::bind(config.gateway.port).await?;
    let redirector = Arc::new(
        Redirector::install(&redirect_settings(&config, &cgroup2))
            .context("attaching the eBPF redirect")?,
    );
    let sessions = Arc::new(SessionRegistry::new(
        cgroup_root.clone(),
        config.records.dir.join("state"),
    ));
    let recording = RecordingSettings {
        records_dir: config.records.dir.clone(),
        body_cap: config.records.body_cap_bytes,
        admin_gid: nix::unistd::Group::from_name(&config.control.admin_group)
            .ok()
            .flatten()
            .map(|group| group.gid.as_raw()),
    };
    let restored = sessions.restore(|id| {
        SessionRecording::reopen(&recording, id)
            .inspect_err(|err| tracing::warn!(session = id, error = %err, "recording not reopened"))
            .ok()
            .map(Arc::new)
    });
    let control_listener = control::server::bind(&config.control.socket)
        .with_context(|| format!("binding {}", config.control.socket.display()))?;

    let gateway = Arc::new(Gateway {
        sessions: sessions.clone(),
        redirector,
        oidc: oidc.clone(),
        broker: broker.clone(),
        audit: audit.clone(),
        policy: policy.clone(),
        quotas,
        approvals: approvals.clone(),
        upstreams,
        masker: std::sync::Mutex::new(None),
        tls: gateway::tls_acceptor(ca.clone()),
        settings: ProxySettings {
            max_api_body_bytes: config.gateway.max_api_body_bytes,
            upstream_response_timeout: config.aws.response_timeout,
            other_destinations: config.gateway.other_destinations,
        },
    });
    for listener in &listeners {
        tracing::info!(addr = %listener.local_addr()?, workers, "gateway listening");
    }
    let workers = gateway.run_workers(listeners).context("starting the gateway workers")?;
    drop(gateway);
    tokio::spawn(policy.watch());
    tokio::spawn(crate::memory::return_freed_memory());
    let daemon =
        Arc::new(Daemon { config, recording, approvals, sessions, oidc, broker, ca, audit });
    for session in restored {
        tracing::info!(session = %session.id, subject = %session.identity.subject,
            "session adopted from the previous daemon");
        daemon.watch_session(session);
    }
    tracing::info!(socket = %daemon.config.control.socket.display(),
        cgroup_root = %cgroup_root.display(), "control socket listening");
    tokio::spawn(control::server::serve(daemon.clone(), control_listener));
    crate::memory::collect_after_start();

    wait_for_stop().await?;
    tracing::info!("stopping; the redirect stays pinned, so agents' connections are refused");
    workers.stop().await;
    let _ = std::fs::remove_file(&daemon.config.control.socket);
    Ok(())
}

/// `interceptor daemon --uninstall`: detach the redirect and remove its pins and empty cgroups.
pub fn uninstall(config: &Config) -> anyhow::Result<()> {
    let cgroup2 = cgroupfs::cgroup2_mount().context("finding the cgroup v2 mount")?;
    let cgroup_root = config.cgroup_root(&cgroup2);
    // Installing takes over the pins of the stopped daemon; uninstalling then detaches them.
    Redirector::install(&redirect_settings(config, &cgroup2))
        .and_then(Redirector::uninstall)
        .context("removing the eBPF redirect")?;
    if let Ok(entries) = std::fs::read_dir(&cgroup_root) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
    match std::fs::remove_dir(&cgroup_root) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(cgroup = %cgroup_root.display(), error = %err,
            "cgroup root not removed (agents still running in it?)"),
    }
    let _ = std::fs::remove_file(&config.control.socket);
    tracing::info!("uninstalled: redirect detached, pins removed");
    Ok(())
}

/// The redirect for this config. Each cgroup root gets its own pin directory, so daemons
/// serving different roots on one host never take over each other's programs.
fn redirect_settings(config: &Config, cgroup2: &std::path::Path) -> RedirectSettings {
    let cgroup_root = config.cgroup_root(cgroup2);
    let name = cgroup_root
        .strip_prefix(cgroup2)
        .unwrap_or(&cgroup_root)
        .to_string_lossy()
        .trim_matches('/')
        .replace('/', "_");
    let mut settings = RedirectSettings::new(
        cgroup_root,
        config.gateway.port,
        config.gateway.redirect_ports.clone(),
    );
    settings.pin_dir = settings.pin_dir.join(name);
    settings
}

/// Every agent connection costs two descriptors (agent and upstream); the usual soft limit of
/// 1024 would let a few hundred connections exhaust the daemon, so take the hard limit.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "open-file limit raised"),
            Err(err) => tracing::warn!(error = %err, "open-file limit not raised"),
        },
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "open-file limit unknown"),
    }
}

async fn wait_for_stop() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

impl Daemon {
    /// Ends the session once its cgroup is empty.
    pub fn watch_session(self: &Arc<Self>, session: Arc<Session>) {
        let daemon = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::session::CGROUP_POLL_INTERVAL);
            loop {
                tick.tick().await;
                if session.cgroup_is_empty() {
                    break;
                }
            }
            let first = daemon.sessions.close(&session);
            daemon.broker.forget(&session.id);
            if first {
                session.recording.append(&Entry::SessionEnded { time: now_rfc3339() });
                daemon.audit.record(&session_record(Event::SessionEnded, &session));
                tracing::info!(session = %session.id, "session ended: its cgroup is empty");
            }
        });
    }

    /// `interceptor sessions kill`: refuse the session's calls from now on and kill its
    /// processes. `by` is recorded as who killed it.
    pub fn kill_session(&self, id: &str, by: &str) -> Result<(), SessionError> {
        let session = self.sessions.kill(id)?;
        self.broker.forget(&session.id);
        session.recording.append(&Entry::SessionKilled { time: now_rfc3339(), by: by.to_owned() });
        let mut record = session_record(Event::SessionKilled, &session);
        record.reason = Some(format!("killed by {by}"));
        self.audit.record(&record);
        tracing::info!(session = %session.id, by, "session killed");
        Ok(())
    }
}

fn session_record(event: Event, session: &Session) -> AuditRecord {
    let mut record = AuditRecord::new(event);
    record.session = Some(session.id.clone());
    record.identity = Some(AuditIdentity {
        subject: session.identity.subject.clone(),
        groups: session.identity.groups.clone(),
    });
    record.role_arn = Some(session.role_arn.clone());
    record.duration_ms = session.started_at.elapsed().ok().map(|d: Duration| d.as_millis() as u64);
    record
}
