//! A tiny HTTP/1.1 server on 127.0.0.1 (kernel-chosen port) standing in for the IdP and STS in
//! this module's tests. It stops when dropped.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, task::JoinHandle};

/// Answers one request: the request with its whole body, the response to send.
pub(crate) type Handler =
    Arc<dyn Fn(http::Request<Bytes>) -> http::Response<String> + Send + Sync + 'static>;

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestServer {
    pub(crate) async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound socket has an address");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
        });
        Self { addr, task }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, handler: Handler) {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body =
                body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
            let response = handler(http::Request::from_parts(parts, body));
            Ok::<_, Infallible>(response.map(|text| Full::new(Bytes::from(text))))
        }
    });
    // A client hanging up mid-request is not a test failure.
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}
