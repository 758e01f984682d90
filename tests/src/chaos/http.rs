//! The harness's HTTP/1.1 client: JSON in, JSON out, one deadline per
//! request, and a classification of failures that says whether the
//! request could have reached the server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Largest answer body read (the harness's answers are small).
const ANSWER_BYTES_MAX: usize = 4 << 20;

/// Why a request got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// No connection was made: the request never left (definitely not
    /// executed).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Sent, or maybe sent, but no answer before the deadline or the
    /// connection broke: the server may have executed it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// An answer with a status other than 200.
    #[error("status {status}: {body}")]
    Status { status: StatusCode, body: String },
    /// A 200 whose body is not the JSON expected.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

/// A pooled keep-alive client (cheap to clone).
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `method url` with `body` and `headers`; the JSON of a 200.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, HttpError> {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = request
            .body(Full::new(body))
            .map_err(|e| HttpError::Connect(e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    HttpError::Connect(e.to_string())
                } else {
                    HttpError::NoAnswer(e.to_string())
                }
            })?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), ANSWER_BYTES_MAX)
                .collect()
                .await
                .map_err(|e| HttpError::NoAnswer(e.to_string()))?
                .to_bytes();
            Ok::<_, HttpError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| HttpError::NoAnswer(format!("nothing in {timeout:?}")))??;
        if status != StatusCode::OK {
            return Err(HttpError::Status {
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|e| HttpError::BadAnswer(format!("{e}: {}", String::from_utf8_lossy(&body))))
    }

    /// POSTs JSON.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, HttpError> {
        self.request(Method::POST, url, headers, Some(body), timeout)
            .await
    }

    /// GETs JSON.
    pub async fn get(&self, url: &str, timeout: Duration) -> Result<Value, HttpError> {
        self.request(Method::GET, url, &[], None, timeout).await
    }
}

/// Base64 of `bytes` (etcd's JSON carries keys and values so).
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The bytes of a base64 string, if it is one.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// An etcd int64 field (a JSON string or number; absent is 0).
pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        Value::Null => Some(0),
        _ => None,
    }
}
