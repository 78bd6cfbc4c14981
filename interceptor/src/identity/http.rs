//! The small HTTPS client the identity module uses to reach the IdP and STS: hyper-util's pooled
//! client over hyper-rustls, HTTP/1.1, with bounded connect and whole-exchange times and a cap on
//! the size of an answer (both peers send small documents).

use std::{fmt, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// How long a TCP connect to the IdP or STS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one whole exchange (connect, request, answer read) may take.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer body read, in bytes; discovery documents, key sets and STS answers are a few
/// KiB, so anything near this is not what we asked for.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A pooled HTTP/1.1 client trusting the given TLS roots; `http://` is allowed, the callers
/// decide where plain HTTP is acceptable.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// Why an exchange failed; callers wrap it with the URL and their own error kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// No answer: connect refused, DNS, TLS handshake, reset.
    #[error("{0}")]
    Transport(String),
    /// No whole answer within [`EXCHANGE_TIMEOUT`].
    #[error("no answer within {}s", EXCHANGE_TIMEOUT.as_secs())]
    Timeout,
    /// The body broke off or exceeded [`MAX_ANSWER_BYTES`].
    #[error("cannot read the answer: {0}")]
    Body(String),
}

impl FetchError {
    /// Whether the peer could not be reached at all (as opposed to a broken answer).
    pub(crate) fn is_transport(&self) -> bool {
        matches!(self, Self::Transport(_) | Self::Timeout)
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    pub(crate) fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
        // hyper-rustls needs the inner connector to pass https URIs through.
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self { inner: Client::builder(TokioExecutor::new()).build(https) }
    }

    /// Sends `request` and reads the whole answer, within [`EXCHANGE_TIMEOUT`].
    pub(crate) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Bytes>, FetchError> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(request))
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    /// A GET of `url` with `Accept: application/json`.
    pub(crate) async fn get_json(
        &self,
        url: &url::Url,
    ) -> Result<http::Response<Bytes>, FetchError> {
        let request = http::Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|err| FetchError::Transport(format!("cannot build the request: {err}")))?;
        self.send(request).await
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Bytes>, FetchError> {
        let response = self.inner.request(request).await.map_err(|err| {
            FetchError::Transport(
                aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
            )
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| FetchError::Body(err.to_string()))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}

/// Whether a URL may be fetched in plain HTTP: only loopback peers (the test IdP and moto),
/// where nothing on the wire can be read or changed by another host.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}
