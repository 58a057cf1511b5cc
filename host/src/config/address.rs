//! Listen and engine addresses as URLs, the way Docker clients write them
//! (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where to listen or where the engine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
    /// A TLS-over-TCP `host:port` (listen side; see `[server.tls]`).
    Tls(String),
}

/// An address that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error(
        "address {0:?}: unsupported scheme (use unix:///path, tcp://host:port or tls://host:port)"
    )]
    Scheme(String),
    #[error("address {0:?}: a unix address needs an absolute path (unix:///path)")]
    UnixPath(String),
    #[error("address {0:?}: a tcp address needs host:port")]
    HostPort(String),
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(AddressError::UnixPath(s.into()));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        let (rest, tls) = match (s.strip_prefix("tcp://"), s.strip_prefix("tls://")) {
            (Some(rest), _) => (Some(rest), false),
            (None, Some(rest)) => (Some(rest), true),
            (None, None) => (None, false),
        };
        if let Some(rest) = rest {
            let hostport = rest.trim_end_matches('/');
            match hostport.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                    Ok(if tls {
                        Address::Tls(hostport.into())
                    } else {
                        Address::Tcp(hostport.into())
                    })
                }
                _ => Err(AddressError::HostPort(s.into())),
            }
        } else {
            Err(AddressError::Scheme(s.into()))
        }
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(hp) => write!(f, "tcp://{hp}"),
            Address::Tls(hp) => write!(f, "tls://{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_urls() {
        assert_eq!(
            "unix:///var/run/docker.sock".parse(),
            Ok(Address::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            "tcp://127.0.0.1:2375".parse(),
            Ok(Address::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            "tcp://[::1]:2375".parse(),
            Ok(Address::Tcp("[::1]:2375".into()))
        );
        assert!(matches!(
            "unix://rel".parse::<Address>(),
            Err(AddressError::UnixPath(_))
        ));
        assert!(matches!(
            "tcp://host".parse::<Address>(),
            Err(AddressError::HostPort(_))
        ));
        assert!(matches!(
            "http://x".parse::<Address>(),
            Err(AddressError::Scheme(_))
        ));
        assert_eq!(
            "tls://127.0.0.1:2376".parse(),
            Ok(Address::Tls("127.0.0.1:2376".into()))
        );
        assert!(matches!(
            "tls://host".parse::<Address>(),
            Err(AddressError::HostPort(_))
        ));
    }
}
