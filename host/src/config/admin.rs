//! `[admin]`: where the admin listener (the audit queries over HTTP) listens. It has no
//! authentication of its own, so only a unix socket or a loopback address is accepted.

use std::net::SocketAddr;

use serde::Deserialize;

use super::Address;

/// The `[admin]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `unix:///path` or a loopback `tcp://127.0.0.1:port`.
    pub listen: Address,
}

impl AdminConfig {
    /// Checks what types cannot: the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        match &self.listen {
            Address::Unix(_) => Ok(()),
            Address::Tcp(hp) if is_loopback(hp) => Ok(()),
            Address::Tcp(hp) => Err((
                "admin.listen",
                format!("{hp} is not a loopback address: the admin listener has no authentication, use unix:///path or tcp://127.0.0.1:PORT"),
            )),
            Address::Tls(_) => Err((
                "admin.listen",
                "tls:// is not supported here: use unix:///path or a loopback tcp:// address".into(),
            )),
        }
    }
}

fn is_loopback(hostport: &str) -> bool {
    match hostport.parse::<SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => hostport
            .rsplit_once(':')
            .is_some_and(|(h, _)| h == "localhost"),
    }
}
