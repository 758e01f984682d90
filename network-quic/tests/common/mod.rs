//! Helpers shared by the integration tests: nodes on 127.0.0.1, a raw QUIC
//! client that can misbehave, and waiting on conditions with a deadline.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rafter::{Message, MessageBody, NodeId};
use rafter_quic::{ClusterCa, NodeCert, QuicHandle, QuicNetwork, TlsMode, TransportConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::mpsc;

/// How long any condition in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "rafter_quic=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Timers short, so the tests run fast.
pub fn test_config() -> TransportConfig {
    with_test_timers(TransportConfig::default())
}

/// `config` with the tests' short timers.
pub fn with_test_timers(config: TransportConfig) -> TransportConfig {
    TransportConfig {
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(5),
        keep_alive_interval: Duration::from_millis(500),
        ..config
    }
}

/// A bound endpoint whose inbound messages land in `inbox`.
pub struct Node {
    pub id: NodeId,
    pub network: QuicNetwork,
    pub handle: QuicHandle,
    pub inbox: mpsc::UnboundedReceiver<Message>,
}

impl Node {
    pub fn bind(ca: &ClusterCa, id: NodeId, config: TransportConfig) -> Node {
        Self::bind_with(
            TlsMode::MutualTls(ca.issue_node_cert(id).unwrap()),
            id,
            localhost(),
            config,
        )
    }

    pub fn bind_with(tls: TlsMode, id: NodeId, addr: SocketAddr, config: TransportConfig) -> Node {
        let network = QuicNetwork::bind(id, addr, tls, config).unwrap();
        let handle = network.handle();
        let (tx, inbox) = mpsc::unbounded_channel();
        handle
            .set_inbound(move |message| {
                let _ = tx.send(message);
            })
            .unwrap();
        Node {
            id,
            network,
            handle,
            inbox,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr().unwrap()
    }

    /// The next inbound message, or a test failure after `PATIENCE`.
    pub async fn recv(&mut self) -> Message {
        tokio::time::timeout(PATIENCE, self.inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("node {} received nothing in {PATIENCE:?}", self.id))
            .expect("sink dropped")
    }
}

/// The address book of `nodes`.
pub fn members(nodes: &[&Node]) -> BTreeMap<NodeId, String> {
    nodes
        .iter()
        .map(|node| (node.id, node.addr().to_string()))
        .collect()
}

pub fn heartbeat(from: NodeId, to: NodeId, read_seq: u64) -> Message {
    Message::new(
        from,
        to,
        1,
        MessageBody::Heartbeat {
            commit: 0,
            read_seq,
        },
    )
}

/// Polls `condition` until it holds; fails the test after `PATIENCE`.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `future` or fails the test after `PATIENCE`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

/// A QUIC client built by hand, to act as a misbehaving peer: it trusts
/// `trust_ca_pem` and presents `present` (or no certificate).
pub fn raw_client(trust_ca_pem: &str, present: Option<&NodeCert>) -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(trust_ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match present {
        Some(cert) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem().as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"rafter/1".to_vec()];
    let mut endpoint = quinn::Endpoint::client(localhost()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(config).unwrap(),
    )));
    endpoint
}

/// A QUIC server built by hand that presents node `id`'s certificate, so a
/// lane dialling node `id` connects to it: it acts as a peer that completes
/// the handshake and then misbehaves. It asks for no client certificate.
pub fn raw_server(ca: &ClusterCa, id: NodeId) -> quinn::Endpoint {
    let cert = ca.issue_node_cert(id).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.cert_pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(cert.key_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"rafter/1".to_vec()];
    let server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(config).unwrap()));
    quinn::Endpoint::server(server, localhost()).unwrap()
}

/// The application error code a connection was closed with, waiting for
/// the close.
pub async fn close_code(connection: &quinn::Connection) -> Option<u64> {
    match within("connection close", connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}
