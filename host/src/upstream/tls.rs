//! TLS to a `tcp://` engine, the way the docker CLI does it with `DOCKER_TLS_VERIFY`: the
//! engine's certificate is verified against `ca.pem` of the certificate folder, and
//! `cert.pem`/`key.pem` from the same folder are presented as the client certificate when
//! they exist. The engine's host name (or IP address) must be in its certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Why the engine's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("engine TLS ({path}): {message}")]
pub struct EngineTlsError {
    path: PathBuf,
    message: String,
}

/// A TLS client for one engine address.
#[derive(Clone)]
pub struct EngineTls {
    /// The rustls connector.
    pub connector: TlsConnector,
    /// The name the engine's certificate must carry.
    pub name: ServerName<'static>,
}

impl EngineTls {
    /// Reads `dir/ca.pem` and, if present, `dir/cert.pem` + `dir/key.pem`, for the engine
    /// at `hostport`.
    pub fn load(dir: &Path, hostport: &str) -> Result<Self, EngineTlsError> {
        let err = |path: &Path, message: String| EngineTlsError {
            path: path.to_owned(),
            message,
        };
        let ca = dir.join("ca.pem");
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&ca).map_err(|e| err(&ca, e.to_string()))? {
            roots
                .add(c.map_err(|e| err(&ca, e.to_string()))?)
                .map_err(|e| err(&ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(err(&ca, "no CA certificate in the file".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(dir, e.to_string()))?
            .with_root_certificates(roots);
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let config = if cert.exists() && key.exists() {
            let chain = CertificateDer::pem_file_iter(&cert)
                .map_err(|e| err(&cert, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(&cert, e.to_string()))?;
            let key_der =
                PrivateKeyDer::from_pem_file(&key).map_err(|e| err(&key, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| err(&key, e.to_string()))?
        } else {
            builder.with_no_client_auth()
        };
        let host = hostport
            .rsplit_once(':')
            .map_or(hostport, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| err(dir, format!("engine host {host:?}: {e}")))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}
