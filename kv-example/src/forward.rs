//! Forwarding a request from a follower to the leader over HTTP, as etcd's
//! gateway reaches the leader through its own member: the leader answers,
//! the follower relays the answer unchanged.
//!
//! TODO(perf): forwarding re-sends the whole HTTP request, so a write that
//! lands on a follower pays for HTTP twice; forwarding the proposal over
//! the peer transport (as etcd does inside Raft) would pay once. Clients
//! that know the leader avoid the cost.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The header counting how many nodes relayed a request; a request is
/// relayed at most [`HOPS_MAX`] times, so two nodes that each think the
/// other leads cannot bounce it forever.
pub const HOPS_HEADER: &str = "x-rafter-hops";
/// Most relays of one request.
pub const HOPS_MAX: u32 = 2;

/// Headers relayed with the request.
const RELAYED: [&str; 3] = ["content-type", "x-rafter-client", "x-rafter-seq"];

/// Why a forward failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing reached the leader (no connection): retrying is safe.
    #[error("leader unreachable: {0}")]
    NotSent(String),
    /// The request may have reached the leader; its outcome is unknown.
    #[error("no answer from the leader: {0}")]
    Unknown(String),
}

/// An HTTP/1.1 client with a connection pool per leader.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A client keeping idle connections for 90 s.
    pub fn new() -> Self {
        Self {
            client: peer_client(),
        }
    }

    /// Sends `method path_and_query` with `body` to the node at `http_addr`
    /// and returns its answer as is.
    pub async fn forward(
        &self,
        http_addr: &str,
        method: Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: Bytes,
        hops: u32,
    ) -> Result<Response<Body>, ForwardError> {
        let uri: Uri = format!("http://{http_addr}{path_and_query}")
            .parse()
            .map_err(|e| ForwardError::NotSent(format!("bad leader address {http_addr:?}: {e}")))?;
        let mut request = Request::builder().method(method).uri(uri);
        for name in RELAYED {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        request = request.header(HOPS_HEADER, HeaderValue::from(hops + 1));
        let request = request
            .body(Full::new(body))
            .map_err(|e| ForwardError::NotSent(e.to_string()))?;
        match self.client.request(request).await {
            Ok(response) => Ok(response.map(Body::new)),
            Err(error) if error.is_connect() => Err(ForwardError::NotSent(error.to_string())),
            Err(error) => Err(ForwardError::Unknown(error.to_string())),
        }
    }
}

/// The HTTP/1.1 client nodes use to reach each other: no Nagle delay, a
/// short connect timeout (a dead leader is noticed fast), idle connections
/// kept for 90 s.
pub fn peer_client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// The hop count a request arrived with.
pub fn hops(headers: &HeaderMap) -> u32 {
    headers
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
