//! The `[server]` keys that decide who a caller is: the unix socket's owner and group, TLS
//! (`[server.tls]`), the tokens file, the anonymous identity and the plain-TCP switch, and
//! their checks that types cannot express.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Address, Config};

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

/// Checks the identity keys of `[server]` that types cannot: the error names the key.
pub(super) fn validate(config: &Config) -> Result<(), (&'static str, String)> {
    let s = &config.server;
    if let Some(owner) = &s.socket_owner {
        if uid_of(owner).is_none() {
            return Err(("server.socket_owner", format!("no such user {owner:?}")));
        }
    }
    if let Some(group) = &s.socket_group {
        if gid_of(group).is_none() {
            return Err(("server.socket_group", format!("no such group {group:?}")));
        }
    }
    if let Some(a) = &s.anonymous {
        if a.user.is_empty() {
            return Err(("server.anonymous.user", "must not be empty".into()));
        }
    }
    if s.tls.is_none() && s.listen.iter().any(|a| matches!(a, Address::Tls(_))) {
        return Err((
            "server.tls",
            "a tls:// listen address needs [server.tls] cert and key (or --tls-cert/--tls-key)"
                .into(),
        ));
    }
    if let Some(tls) = &s.tls {
        for (key, path) in [
            ("server.tls.cert", Some(&tls.cert)),
            ("server.tls.key", Some(&tls.key)),
            ("server.tls.client_ca", tls.client_ca.as_ref()),
        ] {
            if let Some(path) = path {
                let path = config.base_dir.join(path);
                if let Err(e) = std::fs::metadata(&path) {
                    return Err((key, format!("{}: {e}", path.display())));
                }
            }
        }
    }
    if let Some(path) = &s.tokens_file {
        let path = config.base_dir.join(path);
        if let Err(e) = super::tokens::Tokens::load(&path) {
            return Err(("server.tokens_file", e.to_string()));
        }
    }
    Ok(())
}

/// A uid from a user name or a number, for `server.socket_owner`.
pub fn uid_of(spec: &str) -> Option<u32> {
    spec.parse()
        .ok()
        .or_else(|| uzers::get_user_by_name(spec).map(|u| u.uid()))
}

/// A gid from a group name or a number, for `server.socket_group`.
pub fn gid_of(spec: &str) -> Option<u32> {
    spec.parse()
        .ok()
        .or_else(|| uzers::get_group_by_name(spec).map(|g| g.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_group_specs() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("1234"), Some(1234));
        assert_eq!(gid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-portcullis"), None);
    }
}
