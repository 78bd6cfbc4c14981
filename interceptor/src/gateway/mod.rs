//! The gateway: accepts the agent connections the eBPF redirect sends to it, finds whose they
//! are, terminates TLS for AWS hosts with a leaf from the local CA, and hands each HTTP request
//! to [`proxy`].
//!
//! Fail closed throughout: a connection with no redirect record is dropped; a cgroup with no
//! live session gets an AWS error for every request; a non-AWS TLS destination is refused.

pub mod ca;
pub mod capture;
pub mod client_hello;
pub mod mask;
pub mod proxy;
pub mod refusal;
pub mod upstream;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::{
    approvals::Approvals,
    records::audit::AuditLog,
    policy::{quota::Quotas, store::PolicyStore},
    aws::request::is_aws_host,
    identity::{oidc::OidcValidator, sts::CredentialBroker},
    redirect::{AgentConnection, Redirector},
    session::SessionRegistry,
};
use client_hello::{MAX_PEEK_BYTES, Peek};

/// How long a new connection may take to send its ClientHello (or first request line).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between peeks while a ClientHello is still arriving in pieces.
const PEEK_RETRY: Duration = Duration::from_millis(2);

/// Everything a connection needs, shared by all of them.
pub struct Gateway {
    pub sessions: Arc<SessionRegistry>,
    pub redirector: Arc<Redirector>,
    pub oidc: Arc<OidcValidator>,
    pub broker: Arc<CredentialBroker>,
    pub audit: AuditLog,
    pub policy: Arc<PolicyStore>,
    pub quotas: Arc<Quotas>,
    pub approvals: Arc<Approvals>,
    /// One pooled client to AWS per gateway worker: a pooled connection's task runs on the
    /// worker that opened it, so a worker only ever uses its own (see [`Gateway::run_workers`]).
    pub upstreams: Vec<upstream::Upstream>,
    /// The masker of the policy in force, and that policy (to notice reloads).
    pub masker: std::sync::Mutex<Option<(Arc<crate::policy::Policy>, Arc<mask::Masker>)>>,
    pub tls: TlsAcceptor,
    pub settings: proxy::ProxySettings,
}

/// Why the listeners could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// What the gateway knows of one accepted connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The gateway worker serving the connection (an index into `Gateway::upstreams`).
    pub worker: usize,
    pub peer: SocketAddr,
    pub agent: AgentConnection,
    /// The TLS server name, when the connection is TLS.
    pub sni: Option<String>,
}

impl Gateway {
    /// Binds 127.0.0.1:`port`, and [::1]:`port` where the host has IPv6 loopback.
    pub async fn bind(port: u16) -> Result<Vec<TcpListener>, ListenError> {
        let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut listeners = vec![
            TcpListener::bind(v4).await.map_err(|source| ListenError { addr: v4, source })?,
        ];
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
        match TcpListener::bind(v6).await {
            Ok(listener) => listeners.push(listener),
            // A host (or test namespace) without ::1 simply has no IPv6 agents to serve.
            Err(err) => tracing::info!(addr = %v6, error = %err, "no IPv6 loopback listener"),
        }
        Ok(listeners)
    }

    /// Serves the listeners on one thread per worker, each with a single-threaded runtime of its
    /// own that accepts from every listener. A connection, its calls, and the upstream
    /// connections they use then stay on one thread: no task moves between cores and no call
    /// wakes another thread, which a shared multi-threaded runtime did several times per call
    /// (the agent side, the upstream connection's task and the answer's body each woken where
    /// they last ran). The workers run until [`Workers::stop`].
    pub fn run_workers(self: &Arc<Self>, listeners: Vec<TcpListener>) -> std::io::Result<Workers> {
        let listeners: Vec<std::net::TcpListener> =
            listeners.into_iter().map(TcpListener::into_std).collect::<Result<_, _>>()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut threads = Vec::new();
        for worker in 0..self.upstreams.len() {
            // Each worker registers its own copy of every listening socket with its own runtime;
            // all of them wait on the same sockets, and the kernel gives a connection to one.
            let own: Vec<std::net::TcpListener> =
                listeners.iter().map(std::net::TcpListener::try_clone).collect::<Result<_, _>>()?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let gateway = self.clone();
            let mut stopped = stopped.clone();
            let thread = std::thread::Builder::new().name(format!("gateway-{worker}")).spawn(move || {
                runtime.block_on(async move {
                    let mut serving = tokio::task::JoinSet::new();
                    for listener in own {
                        match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                serving.spawn(gateway.clone().serve(listener, worker));
                            }
                            Err(err) => tracing::error!(worker, error = %err, "listener not usable"),
                        }
                    }
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => {}
                        () = async { while serving.join_next().await.is_some() {} } => {}
                    }
                });
                // Dropping the runtime drops every connection task, and with them the last
                // handles on the gateway (its audit log among them).
                drop(runtime);
            })?;
            threads.push(thread);
        }
        Ok(Workers { stop, threads })
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, worker: usize) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Running out of descriptors must not end the gateway; back off and retry.
                    tracing::error!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let gateway = self.clone();
            tokio::spawn(async move { gateway.connection(stream, peer, worker).await });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, worker: usize) {
        let agent = match self.redirector.lookup(peer) {
            Ok(Some(agent)) => agent,
            Ok(None) => {
                tracing::warn!(%peer, "connection with no redirect record dropped");
                return;
            }
            Err(err) => {
                tracing::error!(%peer, error = %err, "redirect lookup failed; connection dropped");
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("conn", %peer, cgroup = agent.cgroup_id, pid = agent.pid,
            dst = %agent.original_dst, sni = tracing::field::Empty);
        async move {
            let first = match tokio::time::timeout(HELLO_TIMEOUT, peek_hello(&stream)).await {
                Ok(Ok(first)) => first,
                Ok(Err(err)) => return tracing::debug!(error = %err, "connection closed early"),
                Err(_) => return tracing::debug!("no request within the hello timeout"),
            };
            let info = |sni| ConnectionInfo { worker, peer, agent, sni };
            match first {
                Peek::NotTls => match plain_http_host(&stream).await {
                    // No Host (an h2 preface, or garbage): served, and refused per request.
                    None => self.serve_http(TokioIo::new(stream), info(None)).await,
                    Some(host) if is_aws_host(&host) => {
                        self.serve_http(TokioIo::new(stream), info(None)).await
                    }
                    Some(host) => self.other_destination(stream, &agent, &host).await,
                },
                Peek::Hello(hello) => match hello.server_name {
                    Some(sni) if is_aws_host(&sni) => {
                        tracing::Span::current().record("sni", sni.as_str());
                        match self.tls.accept(stream).await {
                            Ok(tls) => self.serve_http(TokioIo::new(tls), info(Some(sni))).await,
                            Err(err) => tracing::warn!(error = %err, "agent TLS handshake failed"),
                        }
                    }
                    Some(sni) => self.other_destination(stream, &agent, &sni).await,
                    None => tracing::warn!("TLS without a server name refused"),
                },
                Peek::Incomplete => tracing::debug!("connection closed mid-hello"),
            }
        }
        .instrument(span)
        .await;
    }

    async fn serve_http<S>(self: &Arc<Self>, io: TokioIo<S>, info: ConnectionInfo)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let info = Arc::new(info);
        let gateway = self.clone();
        let service = hyper::service::service_fn(move |request| {
            let gateway = gateway.clone();
            let info = info.clone();
            async move { Ok::<_, std::convert::Infallible>(gateway.handle(&info, request).await) }
        });
        // HTTP/1.1, or HTTP/2 when the client sends its preface (after ALPN "h2", or directly).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(Some(proxy::IDLE_TIMEOUT));
        builder.http2().timer(TokioTimer::new());
        if let Err(err) = builder.serve_connection(io, service).await {
            tracing::debug!(error = %err, "agent connection ended with an error");
        }
    }

    /// A redirected connection to a host that is not AWS: spliced to where the agent was going,
    /// untouched, or refused, as `gateway.other_destinations` says.
    async fn other_destination(&self, mut stream: TcpStream, agent: &AgentConnection, host: &str) {
        if self.settings.other_destinations == OtherDestinations::Refuse {
            return tracing::warn!(%host, "non-AWS destination refused (gateway.other_destinations)");
        }
        let target = unmapped(agent.original_dst);
        let upstream = match tokio::time::timeout(HELLO_TIMEOUT, TcpStream::connect(target)).await {
            Ok(Ok(upstream)) => upstream,
            Ok(Err(err)) => return tracing::warn!(%host, %target, error = %err, "pass-through connect failed"),
            Err(_) => return tracing::warn!(%host, %target, "pass-through connect timed out"),
        };
        tracing::debug!(%host, %target, "non-AWS destination passed through");
        let mut upstream = upstream;
        if let Err(err) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
            tracing::debug!(%host, error = %err, "pass-through ended with an error");
        }
    }
}

/// The running gateway workers.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Stops accepting, closes every agent connection and waits for the worker threads to end,
    /// so that nothing of the gateway outlives the daemon's shutdown (the audit writer drains
    /// and stops once the last handle on the log is gone).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }
}

/// What the gateway does with redirected connections to hosts that are not AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherDestinations {
    /// Close the connection: only AWS is reachable from an agent on redirected ports.
    Refuse,
    /// Splice the bytes to the original destination without looking at them.
    Pass,
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so the daemon's own socket can reach
/// it whatever its family.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

/// Largest plain-HTTP request head examined for its Host header.
const MAX_PLAIN_HEAD: usize = 16 * 1024;

/// The Host header of a plain-HTTP request, peeked without consuming it. None for an HTTP/2
/// preface, a head without Host, or bytes that are not an HTTP head.
async fn plain_http_host(stream: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; MAX_PLAIN_HEAD];
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await.ok()?.ok()?;
        let head = &buf[..n];
        if head.starts_with(H2_PREFACE) || head_end(head).is_some() {
            return host_header(head);
        }
        if n == MAX_PLAIN_HEAD || n == 0 {
            return None;
        }
        if n == seen {
            tokio::time::sleep(PEEK_RETRY).await;
        }
        seen = n;
    }
}

/// The start of the HTTP/2 connection preface (RFC 9113 section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Where the blank line that ends an HTTP/1 request head starts, if it has arrived.
fn head_end(head: &[u8]) -> Option<usize> {
    head.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The Host header of a plain-HTTP request head, trimmed and lower-cased. `head` is what was
/// peeked: only the bytes before its blank line are read (all of them when it has none). None
/// for an HTTP/2 preface, a head without Host, or a head that is not UTF-8.
pub fn host_header(head: &[u8]) -> Option<String> {
    if head.starts_with(H2_PREFACE) {
        return None;
    }
    let head = &head[..head_end(head).unwrap_or(head.len())];
    // The first line is the request line; a header line without a colon is skipped.
    std::str::from_utf8(head).ok()?.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("host").then(|| value.trim().to_ascii_lowercase())
    })
}

/// Waits until the first bytes tell what the connection speaks, without consuming them.
async fn peek_hello(stream: &TcpStream) -> std::io::Result<Peek> {
    let mut buf = vec![0u8; MAX_PEEK_BYTES];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(Peek::Incomplete);
        }
        match client_hello::peek(&buf[..n]) {
            Peek::Incomplete if n == MAX_PEEK_BYTES => return Ok(Peek::NotTls),
            Peek::Incomplete => {
                // peek() returns at once while unread bytes wait; only sleep when none arrived.
                if n == seen {
                    tokio::time::sleep(PEEK_RETRY).await;
                }
                seen = n;
            }
            decided => return Ok(decided),
        }
    }
}

/// The rustls server config: leaves minted per SNI; HTTP/2 and HTTP/1.1 offered.
pub fn tls_acceptor(ca: Arc<ca::CertificateAuthority>) -> TlsAcceptor {
    // ring supports the safe default versions; this cannot fail.
    let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ca::LeafResolver(ca)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The gateway's order (AES-128-GCM first), not the agent's: OpenSSL-based agents list
    // AES-256-GCM first.
    config.ignore_client_order = true;
    TlsAcceptor::from(Arc::new(config))
}
