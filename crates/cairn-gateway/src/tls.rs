//! HTTPS for the S3 endpoint: the certificate chain and private key an
//! operator gives (`--tls-cert`, `--tls-key`, PEM files) as a rustls server
//! configuration, and the handshake that [`crate::server`] runs on each
//! accepted connection before HTTP.
//!
//! S3 clients send their signing key's signatures, object bytes and
//! (for SSE-C) keys over this connection; off loopback the gateway should
//! serve TLS itself or sit behind a proxy that does. A request that came
//! over TLS is `aws:SecureTransport` true to bucket policies.
//!
//! rustls' aws-lc-rs provider is the one libp2p's QUIC already links; its
//! cipher order puts AES-GCM first, which this machine class runs with
//! AES-NI. TLS 1.2 stays on for older SDKs.

use std::path::Path;
use std::sync::Arc;

use futures_rustls::TlsAcceptor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM item of the kind wanted, or a broken one.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("the certificate and key cannot be used: {0}")]
    Config(String),
}

/// The gateway's TLS side: accepts handshakes with one certificate chain.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let pem_error = |path: &Path, why: String| TlsError::Pem {
            path: path.to_path_buf(),
            why,
        };
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, format!("not a PEM certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(pem_error(
                cert,
                "holds no certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let key_pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_error(key, format!("holds no usable PEM private key: {e}")))?;
        Self::new(chain, key_der)
    }

    /// A TLS side serving `chain` (leaf first) with `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // The server speaks HTTP/1.1 only (hyper's http1 connection).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The handshake on an accepted connection.
    pub(crate) fn accept<IO>(&self, io: IO) -> futures_rustls::Accept<IO>
    where
        IO: futures::AsyncRead + futures::AsyncWrite + Unpin,
    {
        self.acceptor.accept(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_a_certificate_and_key_are_refused_with_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let missing = Tls::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(missing, TlsError::Read { .. }), "{missing}");
        assert!(missing.to_string().contains("cert.pem"), "{missing}");

        std::fs::write(&cert, "not pem at all").unwrap();
        std::fs::write(&key, "neither").unwrap();
        let empty = Tls::from_pem_files(&cert, &key).unwrap_err();
        assert!(matches!(empty, TlsError::Pem { .. }), "{empty}");
        assert!(empty.to_string().contains("no certificate"), "{empty}");
    }
}
