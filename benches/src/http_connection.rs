//! One keep-alive HTTP/1.1 connection (hyper), driven in the task that uses
//! it: a request costs no hop to a connection task and back, and the
//! response is read only as far as its status (the body is drained, not
//! parsed), so the loader stays cheap next to the server it drives.
//!
//! A connection that fails is dropped; the next request opens a new one.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connection or the HTTP handshake failed.
    Connect,
    /// The connection broke during the exchange.
    Io,
}

impl Failure {
    /// The error kind for the result table.
    pub fn kind(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
        }
    }
}

/// One request, ready to send again and again: the body is a shared
/// buffer, so sending it copies nothing.
#[derive(Debug, Clone)]
pub struct Prepared {
    method: Method,
    path: Uri,
    body: Bytes,
}

impl Prepared {
    /// `POST path` with a JSON body.
    pub fn post(path: &'static str, body: Bytes) -> Self {
        Self {
            method: Method::POST,
            path: Uri::from_static(path),
            body,
        }
    }

    /// The body sent.
    #[cfg(test)]
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// `GET path`, no body.
    pub fn get(path: &str) -> Result<Self, String> {
        let path = path
            .parse::<Uri>()
            .map_err(|error| format!("bad path {path:?}: {error}"))?;
        if path.scheme().is_some() || !path.path().starts_with('/') {
            return Err(format!("a path starts with '/', not {path}"));
        }
        Ok(Self {
            method: Method::GET,
            path,
            body: Bytes::new(),
        })
    }
}

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

struct Live {
    sender: http1::SendRequest<Full<Bytes>>,
    /// The connection's IO: polled beside each exchange, in the same task.
    driver: Driver,
}

/// A client's connection to one endpoint, opened on first use.
pub struct HttpConnection {
    addr: SocketAddr,
    host: HeaderValue,
    live: Option<Live>,
}

impl HttpConnection {
    /// A connection to `addr`, not yet open.
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string()).expect("an address is a valid header");
        Self {
            addr,
            host,
            live: None,
        }
    }

    /// Sends `request` and reads the response to its end; returns its status.
    pub async fn send(&mut self, request: &Prepared) -> Result<StatusCode, Failure> {
        let result = self.exchange(request, false).await;
        result.map(|(status, _)| status)
    }

    /// Sends `request` and returns the status and the body (for the
    /// bench's own calls outside the measured phase: status, metrics).
    pub async fn send_reading(
        &mut self,
        request: &Prepared,
    ) -> Result<(StatusCode, Bytes), Failure> {
        self.exchange(request, true).await
    }

    async fn exchange(
        &mut self,
        prepared: &Prepared,
        keep_body: bool,
    ) -> Result<(StatusCode, Bytes), Failure> {
        if self.live.is_none() {
            self.live = Some(self.connect().await?);
        }
        let Some(Live { sender, driver }) = &mut self.live else {
            unreachable!("connected above");
        };
        let mut request = Request::new(Full::new(prepared.body.clone()));
        *request.method_mut() = prepared.method.clone();
        *request.uri_mut() = prepared.path.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        if !prepared.body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let exchange = async {
            sender.ready().await.map_err(|_| Failure::Io)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|_| Failure::Io)?;
            let status = response.status();
            let mut body = response.into_body();
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|_| Failure::Io)?;
                if keep_body {
                    if let Some(data) = frame.data_ref() {
                        kept.extend_from_slice(data);
                    }
                }
            }
            Ok((status, Bytes::from(kept)))
        };
        let result = tokio::select! {
            biased;
            result = exchange => result,
            // The driver ends only when the connection does: then the
            // exchange cannot finish.
            _ = driver.as_mut() => Err(Failure::Io),
        };
        if result.is_err() {
            self.live = None;
        }
        result
    }

    async fn connect(&self) -> Result<Live, Failure> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|_| Failure::Connect)?;
        stream.set_nodelay(true).map_err(|_| Failure::Connect)?;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        Ok(Live {
            sender,
            driver: Box::pin(driver),
        })
    }
}

/// The socket address of an `http://host:port` endpoint URL.
pub async fn resolve(url: &str) -> Result<SocketAddr, String> {
    let uri = url
        .parse::<Uri>()
        .map_err(|error| format!("bad endpoint {url:?}: {error}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("an endpoint is http://HOST:PORT, not {url:?}"));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("endpoint {url:?} names no host"));
    };
    let port = authority.port_u16().unwrap_or(80);
    let mut addrs = tokio::net::lookup_host((authority.host(), port))
        .await
        .map_err(|error| format!("cannot resolve {url:?}: {error}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{url:?} resolves to no address"))
}
