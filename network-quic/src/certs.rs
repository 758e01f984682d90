//! Certificates: a cluster CA and the node certificates it issues.
//!
//! A node's identity is its id, written in its certificate as the DNS
//! subject alternative name `node-<id>.rafter` ([`node_server_name`]). A
//! peer is trusted when its certificate chains to the cluster CA, and it
//! speaks for exactly the node id its certificate names: a dialler checks
//! the name against the id it dialled (TLS server-name verification), and a
//! listener reads the id out of the client certificate and refuses messages
//! whose `from` differs.
//!
//! Files ([`ClusterCa::save`], [`NodeCert::save`]) are PEM: `ca.pem` and
//! `ca.key.pem` for the CA, `node-<id>.pem` and `node-<id>.key.pem` for a
//! node (keys are written with mode 0600). A node needs `ca.pem` and its own
//! pair, never the CA key.
//!
//! TODO: no expiry policy or revocation: certificates are valid from 1975
//! to 4096 (rcgen's defaults) and a leaked node key is only fixed by a new
//! CA. Good enough for a cluster whose operator holds the CA key; a
//! production deployment should issue short-lived certificates.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rafter::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The DNS suffix of node names.
const NODE_NAME_SUFFIX: &str = ".rafter";
/// The DNS prefix of node names.
const NODE_NAME_PREFIX: &str = "node-";

/// Why a certificate could not be made, read or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen could not generate or sign.
    #[error("certificate generation failed: {0}")]
    Generate(String),
    /// PEM text that does not hold what it should.
    #[error("bad PEM for {what}: {detail}")]
    Pem {
        /// Which object (CA certificate, node key, …).
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// A certificate that does not parse as X.509.
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// The certificate names no node (`node-<id>.rafter`, id > 0).
    #[error("certificate names no node id")]
    NoNodeId,
    /// The certificate names more than one node.
    #[error("certificate names several node ids: {first} and {second}")]
    SeveralNodeIds {
        /// One id.
        first: NodeId,
        /// Another.
        second: NodeId,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the {what} certificate")]
    KeyMismatch {
        /// Which certificate.
        what: &'static str,
    },
    /// Node id 0 is reserved.
    #[error("node id 0 is reserved")]
    ZeroNodeId,
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The DNS name a node's certificate carries: `node-<id>.rafter`.
pub fn node_server_name(id: NodeId) -> String {
    format!("{NODE_NAME_PREFIX}{id}{NODE_NAME_SUFFIX}")
}

/// The node id in `name`, if it is a node name.
fn parse_node_name(name: &str) -> Option<NodeId> {
    let digits = name
        .strip_prefix(NODE_NAME_PREFIX)?
        .strip_suffix(NODE_NAME_SUFFIX)?;
    // Reject "+1", "01" and other spellings, so one id has one name.
    let id: NodeId = digits.parse().ok()?;
    (id > 0 && id.to_string() == digits).then_some(id)
}

/// The node id a DER certificate names. A gateway: arbitrary bytes give an
/// id or an error.
pub fn node_id_of(cert_der: &[u8]) -> Result<NodeId, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .ok_or(CertError::NoNodeId)?;
    let mut found: Option<NodeId> = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
            if let Some(id) = parse_node_name(dns) {
                match found {
                    Some(first) if first != id => {
                        return Err(CertError::SeveralNodeIds { first, second: id })
                    }
                    _ => found = Some(id),
                }
            }
        }
    }
    found.ok_or(CertError::NoNodeId)
}

/// The DER of the first certificate in `pem`.
fn cert_der_from_pem(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        what,
        detail: e.to_string(),
    })
}

/// Fails unless `key`'s public half is the one in `cert_der`.
fn check_key_matches(cert_der: &[u8], key: &KeyPair, what: &'static str) -> Result<(), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| CertError::Parse(e.to_string()))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(CertError::KeyMismatch { what });
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let io_error = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).map_err(io_error)?;
    io::Write::write_all(&mut file, text.as_bytes()).map_err(io_error)
}

/// A cluster's certificate authority: it issues every node's certificate,
/// and every node trusts exactly the certificates it issued.
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256) named after `cluster_name`.
    pub fn generate(cluster_name: &str) -> Result<Self, CertError> {
        let generate = |e: rcgen::Error| CertError::Generate(e.to_string());
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Rafter CA {cluster_name}"));
        // Path length 0: the CA signs node certificates only, no sub-CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.self_signed(&key).map_err(generate)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and key (PEM), as written by
    /// [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`].
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Pem {
            what: "CA key",
            detail: e.to_string(),
        })?;
        let der = cert_der_from_pem(cert_pem, "CA certificate")?;
        check_key_matches(&der, &key, "CA")?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(|e| CertError::Pem {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate (PEM): every node needs it to trust its peers.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (PEM). Secret: whoever holds it can join the
    /// cluster as any node.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues the certificate of node `id` (ECDSA P-256, usable as TLS
    /// client and server), naming it `node-<id>.rafter`.
    pub fn issue_node_cert(&self, id: NodeId) -> Result<NodeCert, CertError> {
        if id == 0 {
            return Err(CertError::ZeroNodeId);
        }
        let generate = |e: rcgen::Error| CertError::Generate(e.to_string());
        let mut params = CertificateParams::new(vec![node_server_name(id)]).map_err(generate)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("rafter node {id}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        let node = NodeCert::from_pem(&self.cert_pem, &cert.pem(), &key.serialize_pem())?;
        assert_eq!(
            node.id, id,
            "issued certificate names node {} instead of {id}",
            node.id
        );
        Ok(node)
    }

    /// Writes `ca.pem` and `ca.key.pem` (mode 0600) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write(&dir.join("ca.key.pem"), &self.key_pem, true)
    }

    /// Reads `ca.pem` and `ca.key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        Self::from_pem(&read(&dir.join("ca.pem"))?, &read(&dir.join("ca.key.pem"))?)
    }
}

/// One node's credentials: its certificate and key, and the CA certificate
/// it trusts peers by.
///
/// Invariant: `cert` chains to `ca_cert` (when issued by [`ClusterCa`]),
/// names exactly node `id`, and `key` is its private key.
#[derive(Clone)]
pub struct NodeCert {
    id: NodeId,
    ca_cert_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("NodeCert")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Builds credentials from PEM text, checking that the certificate names
    /// one node and that the key belongs to it. Whether the certificate
    /// chains to the CA is checked by the peers' TLS, not here.
    pub fn from_pem(ca_cert_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        cert_der_from_pem(ca_cert_pem, "CA certificate")?;
        let der = cert_der_from_pem(cert_pem, "node certificate")?;
        let id = node_id_of(&der)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Pem {
            what: "node key",
            detail: e.to_string(),
        })?;
        check_key_matches(&der, &key, "node")?;
        Ok(Self {
            id,
            ca_cert_pem: ca_cert_pem.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The node id the certificate names.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The CA certificate (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The node's certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The node's private key (PEM). Secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes `ca.pem`, `node-<id>.pem` and `node-<id>.key.pem` (mode 0600)
    /// into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.ca_cert_pem, false)?;
        write(
            &dir.join(format!("node-{}.pem", self.id)),
            &self.cert_pem,
            false,
        )?;
        write(
            &dir.join(format!("node-{}.key.pem", self.id)),
            &self.key_pem,
            true,
        )
    }

    /// Reads node `id`'s credentials from `dir` (as written by
    /// [`NodeCert::save`]) and checks the certificate names `id`.
    pub fn load(dir: &Path, id: NodeId) -> Result<Self, CertError> {
        let node = Self::from_pem(
            &read(&dir.join("ca.pem"))?,
            &read(&dir.join(format!("node-{id}.pem")))?,
            &read(&dir.join(format!("node-{id}.key.pem")))?,
        )?;
        if node.id != id {
            return Err(CertError::SeveralNodeIds {
                first: id,
                second: node.id,
            });
        }
        Ok(node)
    }

    pub(crate) fn ca_cert_der(&self) -> Result<CertificateDer<'static>, CertError> {
        cert_der_from_pem(&self.ca_cert_pem, "CA certificate")
    }

    pub(crate) fn cert_der(&self) -> Result<CertificateDer<'static>, CertError> {
        cert_der_from_pem(&self.cert_pem, "node certificate")
    }

    pub(crate) fn key_der(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| CertError::Pem {
            what: "node key",
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_parse_one_spelling_only() {
        assert_eq!(parse_node_name(&node_server_name(42)), Some(42));
        for bad in [
            "node-0.rafter",
            "node-01.rafter",
            "node-+1.rafter",
            "node-1.other",
            "x",
        ] {
            assert_eq!(parse_node_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn issued_certificate_names_its_node_and_survives_a_save_and_load() {
        let ca = ClusterCa::generate("test").unwrap();
        let node = ca.issue_node_cert(7).unwrap();
        assert_eq!(node.node_id(), 7);
        assert_eq!(node_id_of(&node.cert_der().unwrap()).unwrap(), 7);
        assert!(matches!(ca.issue_node_cert(0), Err(CertError::ZeroNodeId)));

        let dir = tempfile::tempdir().unwrap();
        ca.save(dir.path()).unwrap();
        node.save(dir.path()).unwrap();
        let ca_again = ClusterCa::load(dir.path()).unwrap();
        assert_eq!(ca_again.issue_node_cert(8).unwrap().node_id(), 8);
        assert_eq!(NodeCert::load(dir.path(), 7).unwrap().node_id(), 7);
        assert!(NodeCert::load(dir.path(), 8).is_err());
    }

    #[test]
    fn mismatched_key_and_garbage_are_refused() {
        let ca = ClusterCa::generate("test").unwrap();
        let a = ca.issue_node_cert(1).unwrap();
        let b = ca.issue_node_cert(2).unwrap();
        assert!(matches!(
            NodeCert::from_pem(ca.cert_pem(), a.cert_pem(), b.key_pem()),
            Err(CertError::KeyMismatch { .. })
        ));
        assert!(node_id_of(b"not a certificate").is_err());
        let other = ClusterCa::generate("other").unwrap();
        assert!(matches!(
            ClusterCa::from_pem(ca.cert_pem(), other.key_pem()),
            Err(CertError::KeyMismatch { .. })
        ));
    }
}
