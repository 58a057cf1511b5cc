//! `tls://` listeners: rustls (ring provider) with the server certificate of `[server.tls]`
//! and, with `client_ca`, mandatory client certificates. A client without a certificate,
//! with one from another CA or an expired one is refused during the handshake, with the TLS
//! alert that makes its error readable (`tls: unknown certificate authority`,
//! `tls: expired certificate`, `tls: certificate required`).
//!
//! The certificate, key and CA files are reloaded when they change (checked on accept, at
//! most once a second): renewing a certificate needs no restart, and a renewal that fails
//! to load keeps the previous certificate serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsConfig, UserFrom};
use crate::identity::watch::Watched;
use crate::identity::{cert, Proof};

/// Why the TLS configuration cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: {message}")]
    File {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The TLS side of `tls://` listeners (shared by all of them).
pub struct TlsSetup {
    acceptor: Watched<TlsAcceptor, TlsError>,
    mutual: bool,
    user_from: UserFrom,
}

impl TlsSetup {
    /// Loads `[server.tls]`; relative paths are resolved against the config file's folder.
    pub fn from_config(config: &Config, tls: &TlsConfig) -> Result<Self, TlsError> {
        let cert = config.base_dir.join(&tls.cert);
        let key = config.base_dir.join(&tls.key);
        let ca = tls.client_ca.as_ref().map(|p| config.base_dir.join(p));
        let mut paths = vec![cert.clone(), key.clone()];
        paths.extend(ca.clone());
        let acceptor = Watched::new("TLS certificates", paths, move || {
            build(&cert, &key, ca.as_deref()).map(|c| TlsAcceptor::from(Arc::new(c)))
        })?;
        Ok(Self {
            acceptor,
            mutual: tls.client_ca.is_some(),
            user_from: tls.user_from,
        })
    }

    /// The acceptor with the current certificates.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.get()
    }

    /// What a finished handshake proves about the client.
    pub fn proof(&self, conn: &rustls::ServerConnection) -> Proof {
        if !self.mutual {
            return Proof::Nothing;
        }
        match conn.peer_certificates().and_then(|c| c.first()) {
            Some(leaf) => Proof::Certificate(cert::identity(leaf.as_ref(), self.user_from)),
            // rustls refuses clients without a certificate when a client CA is set.
            None => Proof::Nothing,
        }
    }
}

fn file_err<'a>(key: &'static str, path: &'a Path) -> impl Fn(String) -> TlsError + 'a {
    move |message| TlsError::File {
        key,
        path: path.to_owned(),
        message,
    }
}

/// Builds the rustls server configuration from PEM files.
pub fn build(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let certs = read_certs("server.tls.cert", cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| file_err("server.tls.key", key)(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs("server.tls.client_ca", ca)? {
                roots
                    .add(c)
                    .map_err(|e| file_err("server.tls.client_ca", ca)(e.to_string()))?;
            }
            // No CA names in the certificate request: Go clients (the docker CLI) then send
            // their certificate even when another CA issued it, and learn "unknown certificate
            // authority" instead of a puzzling "certificate required".
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .clear_root_hint_subjects()
                .build()
                .map_err(|e| file_err("server.tls.client_ca", ca)(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key_der)
        .map_err(|e| file_err("server.tls.key", key)(format!("does not fit the certificate: {e}")))
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = file_err(key, path);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::devca;

    #[test]
    fn builds_from_certs_init_output_and_names_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        devca::init(d, &[]).unwrap();
        build(
            &d.join("server/cert.pem"),
            &d.join("server/key.pem"),
            Some(&d.join("ca.pem")),
        )
        .unwrap();
        build(&d.join("server/cert.pem"), &d.join("server/key.pem"), None).unwrap();
        let err = build(&d.join("server/key.pem"), &d.join("server/key.pem"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls.cert"), "{err}");
        let err = build(&d.join("server/cert.pem"), &d.join("ca.pem"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.tls.key"), "{err}");
        let err = build(&d.join("server/cert.pem"), &d.join("ca-key.pem"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
