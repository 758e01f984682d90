//! `trivial-server`: an HTTP/1.1 server that answers every request with
//! `200` and a fixed small JSON body, doing no other work.
//!
//! It is the "trivial endpoint" the loader is measured against: with the
//! server pinned to one core and the loader to the other (`taskset`), the
//! rate the loader reaches is what it can drive, not what a real server
//! lets it. A hyper connection per accepted socket, no routing, no
//! middleware, the body a shared static buffer, so the server costs as
//! little per request as hyper allows.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::report::Report;

/// The body of every answer: the shape of rafter-kv's `/health`.
const BODY: &[u8] = br#"{"health":"true"}"#;

/// Flags of the `trivial-server` mode.
#[derive(Debug, Args)]
pub struct TrivialServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9400")]
    listen: SocketAddr,
}

/// Serves until Ctrl-C or SIGTERM; prints the bound address on stdout first
/// (so `--listen 127.0.0.1:0` can be used by a script).
pub async fn run(args: &TrivialServerArgs) -> Result<Vec<Report>, String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", args.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot read the bound address: {error}"))?;
    println!("trivial-server listening on http://{addr}");
    tokio::select! {
        result = serve(listener) => result.map(|()| Vec::new()),
        () = stopped() => Ok(Vec::new()),
    }
}

async fn serve(listener: TcpListener) -> Result<(), String> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of file descriptors or a connection reset before accept:
            // the listener itself is fine, so keep serving.
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        // Nagle would hold each small answer back for the client's ACK.
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_request: Request<Incoming>| async {
                let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(response)
            });
            // A client that goes away mid-request is not an error here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn stopped() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_connection::{HttpConnection, Prepared};

    /// The loader's own connection gets `200` from the server, over and over
    /// on one keep-alive connection.
    #[tokio::test]
    async fn answers_every_request_with_200() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let mut connection = HttpConnection::new(addr);
        let health = Prepared::get("/health").unwrap();
        let anything = Prepared::post("/v3/kv/put", Bytes::from_static(b"{}"));
        for _ in 0..100 {
            assert_eq!(connection.send(&health).await.unwrap().as_u16(), 200);
            assert_eq!(connection.send(&anything).await.unwrap().as_u16(), 200);
        }
        server.abort();
    }
}
