//! TLS for the QUIC endpoint: mutual TLS with the cluster CA, or an
//! explicitly insecure mode for local demos.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::certs::{CertError, NodeCert};

/// The ALPN protocol id: peers speaking anything else fail the handshake.
const ALPN: &[u8] = b"rafter/1";

/// How the endpoint authenticates peers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TlsMode {
    /// Mutual TLS: present this node's certificate, accept only peers whose
    /// certificate chains to the same CA, and hold each peer to the node id
    /// its certificate names. The only mode for anything but a demo.
    MutualTls(NodeCert),
    /// NO AUTHENTICATION. Traffic is encrypted but anyone who can reach the
    /// port can join the cluster and send messages as any node. For a demo
    /// on one machine only; logs a warning at bind.
    InsecureLocalDemo,
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The node's credentials are unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls or quinn refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The endpoint's two halves and whether peers' ids are checked.
pub(crate) struct TlsSetup {
    pub(crate) server: quinn::ServerConfig,
    pub(crate) client: quinn::ClientConfig,
    /// True under mutual TLS: peer ids come from certificates and are
    /// enforced. False in the insecure mode, where `from` is taken on trust.
    pub(crate) verify_identity: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// Builds the server and client configurations for `mode`, both using
/// `transport`.
pub(crate) fn build(
    mode: &TlsMode,
    transport: Arc<quinn::TransportConfig>,
) -> Result<TlsSetup, TlsError> {
    let (server, client, verify_identity) = match mode {
        TlsMode::MutualTls(node) => {
            let (server, client) = mutual(node)?;
            (server, client, true)
        }
        TlsMode::InsecureLocalDemo => {
            let (server, client) = insecure()?;
            (server, client, false)
        }
    };
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server).map_err(config_error)?,
    ));
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(client).map_err(config_error)?,
    ));
    client.transport_config(transport);
    Ok(TlsSetup {
        server,
        client,
        verify_identity,
    })
}

fn mutual(node: &NodeCert) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(node.ca_cert_der()?).map_err(config_error)?;
    let roots = Arc::new(roots);
    let chain = vec![node.cert_der()?];
    let key = node.key_der()?;

    // Clients must present a certificate chaining to the CA; anonymous
    // clients fail the handshake.
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(config_error)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(config_error)?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    // The server's certificate must chain to the CA and name the node we
    // dial (`node-<id>.rafter`, the server name passed to `connect`).
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(config_error)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}

fn insecure() -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsError> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(|e| TlsError::Cert(CertError::Generate(e.to_string())))?;
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(config_error)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(config_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}

/// The insecure mode's server verifier: checks the handshake signature (so
/// the session is encrypted to whoever holds the key) but trusts any
/// certificate.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
