//! TLS on the one port: HTTPS and gRPC over TLS (ALPN offers h2 and http/1.1), with
//! client certificates required when a client CA is given (mTLS, how services in a mesh
//! without a sidecar prove who they are). The certificate and key are read again on
//! `reload` (SIGHUP): new connections get the new ones, open connections keep theirs,
//! and a reload that fails keeps the old configuration and says why.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Where the PEM files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to; absent: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// The current TLS configuration, replaceable while serving.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<TlsAcceptor>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; an error says which file and why.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let acceptor = acceptor(&files)?;
        Ok(Self {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(acceptor)),
        })
    }

    /// Reads the files again; new connections use them from now on. On error the old
    /// configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let acceptor = acceptor(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = acceptor;
        }
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> Option<TlsAcceptor> {
        self.current.read().ok().map(|a| a.clone())
    }
}

fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("cannot read the private key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read the client CA {}: {e}", ca.display()))?;
            for cert in cas {
                roots
                    .add(cert)
                    .map_err(|e| format!("a bad client CA in {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("the client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
