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
//! Certificates are renewed (Let's Encrypt every 60-90 days) without a
//! restart: [`Tls::watch`] re-reads the two files when either one's
//! modification time changes, and new handshakes use the new pair. A pair
//! that does not load (half-written, a key that does not match) is logged
//! and the old one kept.
//!
//! rustls' aws-lc-rs provider is the one libp2p's QUIC already links; its
//! cipher order puts AES-GCM first, which this machine class runs with
//! AES-NI. TLS 1.2 stays on for older SDKs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures_rustls::TlsAcceptor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM item of the kind wanted, or a broken one.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("the certificate and key cannot be used: {0}")]
    Config(String),
}

/// The certificate handshakes are answered with; swapped on renewal.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole pair: swaps replace the Arc.
        Some(match self.0.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// The gateway's TLS side: accepts handshakes with one certificate chain,
/// re-read from its files by [`Tls::watch`].
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    /// The PEM files, if it was loaded from files.
    files: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

/// Reads a PEM certificate chain and key file into DER.
fn read_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
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
    Ok((chain, key_der))
}

/// The later of two files' modification times (none: one is unreadable).
fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some(m(cert)?.max(m(key)?))
}

impl Tls {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let (chain, key_der) = read_pair(cert, key)?;
        let mut tls = Self::new(chain, key_der)?;
        tls.files = Some((cert.to_path_buf(), key.to_path_buf()));
        Ok(tls)
    }

    /// A TLS side serving `chain` (leaf first) with `key`.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The server speaks HTTP/1.1 only (hyper's http1 connection).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            provider,
            files: None,
        })
    }

    /// Re-reads the certificate and key files now; on success new
    /// handshakes use them, on failure the current pair stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(());
        };
        let (chain, key_der) = read_pair(cert, key)?;
        let certified = CertifiedKey::from_der(chain, key_der, &self.provider)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let fresh = Arc::new(certified);
        match self.current.0.write() {
            Ok(mut k) => *k = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }

    /// Checks the files every `every` and reloads them when either has
    /// changed, until the returned task is aborted. A pair that does not
    /// load is logged and retried at the next change.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let Some((cert, key)) = tls.files.clone() else {
                return;
            };
            let mut seen = modified(&cert, &key);
            loop {
                tokio::time::sleep(every).await;
                let now = modified(&cert, &key);
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded from {}", cert.display()),
                    Err(e) => {
                        tracing::warn!("TLS certificate not reloaded, keeping the old one: {e}")
                    }
                }
            }
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
