//! The `[server]` keys that decide who a caller is: the unix socket's owner and group, TLS
//! (`[server.tls]`), the tokens file, the anonymous identity and the plain-TCP switch.

use std::path::PathBuf;

use serde::Deserialize;

/// `[server.tls]`: the certificate of `tls://` listeners and, with `client_ca`, mutual TLS.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates must chain to. When set, every TLS client
    /// must present a valid certificate (mutual TLS); the caller is read from it.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Where the user name is taken from in a client certificate.
    #[serde(default)]
    pub user_from: UserFrom,
}

/// The part of a client certificate that names the user. Groups always come from the
/// subject's `O` and `OU` values, the convention Kubernetes uses.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UserFrom {
    /// The subject's common name (`CN`).
    #[default]
    Cn,
    /// The first e-mail (rfc822Name) subject alternative name.
    SanEmail,
    /// The first DNS subject alternative name.
    SanDns,
    /// The first URI subject alternative name (SPIFFE IDs, for instance).
    SanUri,
}

/// `[server] anonymous = { user = ..., groups = [...] }`: the identity of callers that
/// prove none (plain TCP without a token). Without it such callers are refused.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnonymousIdentity {
    /// The user name plugins see.
    pub user: String,
    /// The groups plugins see.
    #[serde(default)]
    pub groups: Vec<String>,
}
