//! TLS for the MCP server, with the certificate read again when its files change: a
//! Secret rotated by cert-manager (or by hand) is mounted as new files, and a server that
//! kept the certificate it read at start would serve an expired one.
//!
//! rustls picks the certificate per handshake through a resolver; this one looks at the
//! files' modification times at most every few seconds and loads them again when they
//! moved. A pair that does not load (a half-written update, a key that does not match)
//! is reported and the last good one kept. [`crate::incoming`] accepts the connections.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often at most the files are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// A certificate and key, PEM.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the certificate file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key is not a PEM private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| format!("the key does not fit: {e}"))?;
    Ok(certified)
}

/// The files a certificate came from, and when they were last looked at.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    seen: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

/// Resolves every handshake to the current certificate, loading the files again when
/// they changed.
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<Mutex<Files>>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloading {
    /// `files`: where `first` came from, to be read again when they change.
    pub fn new(first: CertifiedKey, files: Option<(PathBuf, PathBuf)>) -> Reloading {
        Reloading {
            current: RwLock::new(Arc::new(first)),
            files: files.map(|(cert, key)| {
                let seen = modified(&cert).zip(modified(&key));
                Mutex::new(Files {
                    cert,
                    key,
                    seen,
                    checked: Instant::now(),
                })
            }),
        }
    }

    fn reload_if_changed(&self) {
        let Some(files) = &self.files else { return };
        let Ok(mut files) = files.try_lock() else { return };
        if files.checked.elapsed() < CHECK_EVERY {
            return;
        }
        files.checked = Instant::now();
        let now = modified(&files.cert).zip(modified(&files.key));
        if now.is_none() || now == files.seen {
            return;
        }
        let loaded = std::fs::read(&files.cert)
            .and_then(|cert| Ok((cert, std::fs::read(&files.key)?)))
            .map_err(|e| e.to_string())
            .and_then(|(cert, key)| certified_key(&cert, &key));
        match loaded {
            Ok(certified) => {
                files.seen = now;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
                tracing::info!(cert = %files.cert.display(), "the MCP server's certificate changed on disk: serving the new one");
            }
            Err(e) => {
                tracing::warn!(cert = %files.cert.display(), "the MCP server's certificate changed on disk but cannot be used ({e}); serving the last good one and trying again")
            }
        }
    }
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloading")
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The acceptor: TLS 1.2 and 1.3 with ring, HTTP/2 by ALPN, the certificate from
/// `resolver`; with `client_ca_pem`, only clients presenting a certificate that CA
/// issued are served.
pub fn acceptor(
    resolver: Arc<Reloading>,
    client_ca_pem: Option<&[u8]>,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("the client CA is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the client CA is not a usable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("no certificate in the client CA file".into());
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
