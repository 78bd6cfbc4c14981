//! The gateway's client towards AWS: pooled keep-alive connections, TLS verified against the
//! webpki roots (plus `aws.upstream_ca_file`), and the `aws.upstream` override that sends every
//! call to one test endpoint with the agent's Host header kept.

use std::path::Path;

use bytes::Bytes;
use http::Uri;

use http_body_util::{BodyExt as _, combinators::BoxBody};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::tls::{TlsError, client_config};

/// Error type of the bodies the gateway sends and streams back.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used in both directions.
pub type Body = BoxBody<Bytes, BoxError>;

/// Idle pooled upstream connections are closed after this long; AWS closes them near 60 s.
const POOL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(50);

/// Most calls one gateway worker has in flight towards AWS at once, so the most upstream
/// connections it holds to one host (each a TLS session with its buffers, ~35 KiB). A thousand
/// agent connections calling at once share these instead of opening a thousand upstream
/// connections; the rest wait their turn. A call holds its place until its answer has been read to the end
/// (or dropped), so a transfer an agent stops reading keeps its place: it takes more than this
/// many such stalled transfers on one worker before other calls wait, and a call that waits
/// longer than [`QUEUE_TIMEOUT`] is refused with a 502 the SDKs retry. The cap also bounds
/// the idle connections a worker's pool keeps per host: never more than were in flight at once.
const MAX_CALLS_IN_FLIGHT: usize = 128;
/// Longest wait for a place among the calls in flight.
const QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a call got no answer from AWS.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Connecting, TLS, or the exchange itself failed.
    #[error(transparent)]
    Client(hyper_util::client::legacy::Error),
    /// The request went out but no answer came in time.
    #[error("no answer within {} of the request being sent", humantime::format_duration(*.0))]
    NoAnswer(std::time::Duration),
    /// Every place for a call in flight stayed taken for the whole queue timeout.
    #[error("the gateway has {MAX_CALLS_IN_FLIGHT} calls in flight on this worker and none ended within {}", humantime::format_duration(QUEUE_TIMEOUT))]
    Busy,
}

/// The body of an answer from AWS; holds the call's place among the calls in flight until it
/// has been read to the end or dropped.
pub struct UpstreamBody {
    inner: hyper::body::Incoming,
    place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
            // The connection is free for the next call (hyper returns it to the pool).
            self.place = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Passes a body through and says once it has been sent in full (or dropped).
struct SentSignal {
    inner: Body,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SentSignal {
    fn new(inner: Body, sent: tokio::sync::oneshot::Sender<()>) -> Self {
        let mut signal = Self { inner, sent: Some(sent) };
        // hyper never polls a body that is empty from the start.
        if http_body::Body::is_end_stream(&signal.inner) {
            signal.signal();
        }
        signal
    }

    fn signal(&mut self) {
        if let Some(sent) = self.sent.take() {
            let _ = sent.send(());
        }
    }
}

impl http_body::Body for SentSignal {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        let ended = match &polled {
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => true,
            std::task::Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            std::task::Poll::Pending => false,
        };
        if ended {
            self.signal();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An agent's Host that is not an AWS host name; the call is refused, never sent anywhere.
#[derive(Debug, thiserror::Error)]
#[error("Host {0:?} is not an AWS host name")]
pub struct UpstreamHostError(pub String);

/// How long connecting to AWS (TCP) may take before the call is answered with an error.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pooled client to AWS (or the override).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    override_base: Option<url::Url>,
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Upstream {
    pub fn new(override_base: Option<url::Url>, extra_ca: Option<&Path>) -> Result<Self, TlsError> {
        let tls = client_config(extra_ca)?;
        let mut http = HttpConnector::new();
        // https_or_http below needs the HTTP connector to accept https URIs too.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CALLS_IN_FLIGHT));
        Ok(Self { client, override_base, in_flight })
    }

    /// Where a request for `host` with this path and query goes. Without an override, AWS itself
    /// over TLS; the path and query are kept byte for byte (they were signed as they are).
    ///
    /// `host` comes from the agent: it must be an AWS host name (letters, digits, dots and
    /// dashes, an optional port), so no Host header can steer the signed call anywhere else.
    pub fn uri(&self, host: &str, path_and_query: &str) -> Result<Uri, UpstreamHostError> {
        let refused = || UpstreamHostError(host.to_owned());
        // is_aws_host accepts only host-name characters and a numeric port.
        if !crate::aws::request::is_aws_host(host) || !path_and_query.starts_with('/') {
            return Err(refused());
        }
        let authority = match &self.override_base {
            Some(base) => match base.port() {
                Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
                None => base.host_str().unwrap_or_default().to_owned(),
            },
            None => host.to_owned(),
        };
        let scheme = self.override_base.as_ref().map_or("https", |base| base.scheme());
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| refused())
    }

    /// Sends the request; the answer's head must arrive within `response_timeout` of the
    /// request body having been sent in full (an upload's own transfer time does not count).
    pub async fn send(
        &self,
        request: http::Request<Body>,
        response_timeout: std::time::Duration,
    ) -> Result<http::Response<UpstreamBody>, SendError> {
        let place = tokio::time::timeout(QUEUE_TIMEOUT, self.in_flight.clone().acquire_owned())
            .await
            .map_err(|_| SendError::Busy)?
            .map_err(|_| SendError::Busy)?; // never closed
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        let request = request.map(|body| SentSignal::new(body, sent_tx).boxed());
        let response = self.client.request(request);
        tokio::pin!(response);
        let deadline = async {
            // A body that ended, or was dropped (an error): the wait for the answer starts.
            let _ = sent_rx.await;
            tokio::time::sleep(response_timeout).await;
        };
        let answer = tokio::select! {
            answer = &mut response => answer.map_err(SendError::Client),
            () = deadline => Err(SendError::NoAnswer(response_timeout)),
        };
        Ok(answer?.map(|inner| UpstreamBody { inner, place: Some(place) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_aws_host_names_become_upstream_uris() {
        let upstream = Upstream::new(None, None).unwrap();
        let uri = upstream.uri("ec2.us-east-1.amazonaws.com", "/?Action=X").unwrap();
        assert_eq!(uri.to_string(), "https://ec2.us-east-1.amazonaws.com/?Action=X");
        assert!(upstream.uri("s3.amazonaws.com:443", "/b/k").is_ok());
        for evil in [
            "127.0.0.5/x.ec2.us-east-1.amazonaws.com",
            "127.0.0.5?.ec2.us-east-1.amazonaws.com",
            "evil.example.com",
            "ec2.us-east-1.amazonaws.com@evil.example.com",
            "ec2.us-east-1.amazonaws.com:44x3",
        ] {
            assert!(upstream.uri(evil, "/").is_err(), "{evil} accepted");
        }
    }

    #[test]
    fn the_override_keeps_path_and_query_byte_for_byte() {
        let base = url::Url::parse("http://127.0.0.1:5000").unwrap();
        let upstream = Upstream::new(Some(base), None).unwrap();
        let uri = upstream.uri("s3.amazonaws.com", "/b/a%20b%2Bc?list-type=2&prefix=x%2A").unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:5000/b/a%20b%2Bc?list-type=2&prefix=x%2A");
    }
}
