//! The gateway's client towards AWS: pooled keep-alive connections, TLS verified against the
//! webpki roots (plus `aws.upstream_ca_file`), and the `aws.upstream` override that sends every
//! call to one test endpoint with the agent's Host header kept.

use std::path::Path;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
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

/// Pooled client to AWS (or the override).
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    override_base: Option<url::Url>,
}

impl Upstream {
    pub fn new(override_base: Option<url::Url>, extra_ca: Option<&Path>) -> Result<Self, TlsError> {
        let tls = client_config(extra_ca)?;
        let mut http = HttpConnector::new();
        // https_or_http below needs the HTTP connector to accept https URIs too.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Ok(Self { client, override_base })
    }

    /// Where a request for `host` with this path and query goes. Without an override, AWS itself
    /// over TLS; the path and query are kept byte for byte (they were signed as they are).
    pub fn uri(&self, host: &str, path_and_query: &str) -> Result<Uri, http::uri::InvalidUri> {
        match &self.override_base {
            Some(base) => {
                let authority = match base.port() {
                    Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
                    None => base.host_str().unwrap_or_default().to_owned(),
                };
                format!("{}://{authority}{path_and_query}", base.scheme()).parse()
            }
            None => format!("https://{host}{path_and_query}").parse(),
        }
    }

    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }
}
