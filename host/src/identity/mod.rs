//! Who is calling. The listener records what the transport proves about the peer (unix
//! peer credentials, a verified client certificate, a TCP address); a request may add a
//! bearer token. This module turns that into the [`Caller`] every later stage (plugins,
//! audit) sees, or refuses the request when nothing names the caller and the config names
//! no anonymous identity.
//!
//! - [`users`]: uid → user name and groups through the system user database (cached briefly).
//! - [`cert`]: client certificate → user (CN or a SAN) and groups (O, OU).
//! - [`tokens`]: `Authorization: Bearer` tokens, stored hashed in a tokens file.
//! - [`devca`]: `portcullis certs init`, a development CA and certificates.
//! - [`watch`]: files reloaded when they change (certificates, tokens).

pub mod cert;
pub mod devca;
pub use crate::config::tokens;
pub mod users;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, HeaderMap, StatusCode};
use serde::Serialize;

use crate::config::{AnonymousIdentity, Config};
use crate::error::{DockerError, IntoDockerError};
use tokens::{Tokens, TokensError};
use watch::Watched;

/// What the transport tells about the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Peer {
    /// A unix socket peer, with the kernel's view of the process (SO_PEERCRED).
    Unix {
        uid: Option<u32>,
        gid: Option<u32>,
        pid: Option<i32>,
    },
    /// A plain TCP peer.
    Tcp { addr: SocketAddr },
    /// A TLS peer.
    Tls { addr: SocketAddr },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { uid, pid, .. } => {
                write!(f, "unix(uid={}", uid.map_or("?".into(), |u| u.to_string()))?;
                if let Some(pid) = pid {
                    write!(f, ", pid={pid}")?;
                }
                write!(f, ")")
            }
            Peer::Tcp { addr } => write!(f, "tcp({addr})"),
            Peer::Tls { addr } => write!(f, "tls({addr})"),
        }
    }
}

/// How the caller's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Kernel-verified unix socket credentials.
    PeerCredentials,
    /// A client certificate verified against the configured client CA.
    MutualTls,
    /// A bearer token from the tokens file.
    Token,
    /// No proof of identity: the configured anonymous identity.
    None,
}

/// The identity every plugin and audit record sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// User name (from the user database for unix peers, the certificate, the token entry,
    /// or the configured anonymous user).
    pub user: String,
    /// Group names.
    pub groups: Vec<String>,
    /// How the identity was established.
    pub auth: AuthMethod,
    /// The transport-level peer.
    pub peer: Peer,
}

impl Caller {
    /// The caller the transport alone proves, with no user database lookup and no
    /// configuration: `uid:N` for unix peers, `anonymous` otherwise. Kept for tools and
    /// tests; the gateway uses [`Resolver`].
    pub fn from_peer(peer: Peer) -> Self {
        match &peer {
            Peer::Unix { uid: Some(uid), .. } => Caller {
                user: format!("uid:{uid}"),
                groups: Vec::new(),
                auth: AuthMethod::PeerCredentials,
                peer,
            },
            _ => Caller {
                user: "anonymous".into(),
                groups: Vec::new(),
                auth: AuthMethod::None,
                peer,
            },
        }
    }
}

/// What a connection's transport proved, before any request arrived.
#[derive(Debug, Clone)]
pub enum Proof {
    /// Nothing (plain TCP, a TLS client without certificate, failed SO_PEERCRED).
    Nothing,
    /// A unix peer's uid.
    Uid(u32),
    /// A verified client certificate's user and groups, or why it names nobody.
    Certificate(Result<(String, Vec<String>), cert::CertError>),
}

/// Why a request has no caller.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("who is calling? this connection proves no identity: use the unix socket, a client certificate or a bearer token")]
    Anonymous,
    #[error("invalid bearer token")]
    BadToken,
    #[error("bearer tokens are not accepted here (no tokens file is configured)")]
    NoTokens,
    #[error(transparent)]
    Certificate(#[from] cert::CertError),
}

impl IntoDockerError for IdentityError {
    fn to_docker_error(&self) -> DockerError {
        DockerError::new(StatusCode::UNAUTHORIZED, format!("portcullis: {self}"))
    }
}

/// Errors setting up identification.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tokens(#[from] TokensError),
}

/// Turns transport proofs and request credentials into callers.
pub struct Resolver {
    users: users::UserDb,
    tokens: Option<Watched<Tokens, TokensError>>,
    anonymous: Option<AnonymousIdentity>,
}

/// A connection's callers: the one its transport proves (computed once per connection),
/// and what a request's bearer token may replace it with.
pub struct Connection {
    resolver: Arc<Resolver>,
    peer: Peer,
    caller: Result<Arc<Caller>, IdentityError>,
}

impl Resolver {
    /// Built from `[server]`; reads the tokens file (an unreadable one stops the start-up).
    pub fn from_config(config: &Config) -> Result<Self, SetupError> {
        let tokens = match &config.server.tokens_file {
            Some(path) => {
                let path = config.base_dir.join(path);
                let p = path.clone();
                Some(Watched::new("tokens file", vec![path], move || {
                    Tokens::load(&p)
                })?)
            }
            None => None,
        };
        Ok(Self {
            users: users::UserDb::default(),
            tokens,
            anonymous: config.server.anonymous.clone(),
        })
    }

    /// The caller of a connection whose transport proved `proof`. The user database is
    /// consulted here, once per connection (and through a short-lived cache).
    pub fn connection(self: &Arc<Self>, peer: Peer, proof: Proof) -> Connection {
        let caller = match proof {
            Proof::Uid(uid) => {
                let user = self.users.lookup(uid);
                Ok(Caller {
                    user: user.name.clone(),
                    groups: user.groups.clone(),
                    auth: AuthMethod::PeerCredentials,
                    peer: peer.clone(),
                })
            }
            Proof::Certificate(Ok((user, groups))) => Ok(Caller {
                user,
                groups,
                auth: AuthMethod::MutualTls,
                peer: peer.clone(),
            }),
            Proof::Certificate(Err(e)) => Err(e.into()),
            Proof::Nothing => match &self.anonymous {
                Some(a) => Ok(Caller {
                    user: a.user.clone(),
                    groups: a.groups.clone(),
                    auth: AuthMethod::None,
                    peer: peer.clone(),
                }),
                None => Err(IdentityError::Anonymous),
            },
        };
        Connection {
            resolver: self.clone(),
            peer,
            caller: caller.map(Arc::new),
        }
    }
}

impl Connection {
    /// The transport peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Who the connection itself says is calling (its peer credentials or client
    /// certificate), without a request's headers: for requests too malformed to have any.
    pub fn connection_caller(&self) -> Option<Arc<Caller>> {
        self.caller.as_ref().ok().cloned()
    }

    /// The caller of one request. A bearer token, when present, names the caller (it is a
    /// credential the client chose to send) and must be valid. The `Authorization` header
    /// is removed here, whatever it holds: it belongs to the gateway, so no plugin, log
    /// line or engine ever sees it.
    pub fn caller(&self, headers: &mut HeaderMap) -> Result<Arc<Caller>, IdentityError> {
        let several = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some();
        // `remove` drops every value of the header and returns the first.
        let Some(value) = headers.remove(header::AUTHORIZATION) else {
            return self.caller.clone();
        };
        if several {
            // Which one would count is ambiguous: refuse.
            return Err(IdentityError::BadToken);
        }
        let Some(token) = tokens::bearer(&value) else {
            // Not a bearer token (Basic, ...): not ours to judge; the transport decides.
            return self.caller.clone();
        };
        let tokens = self
            .resolver
            .tokens
            .as_ref()
            .ok_or(IdentityError::NoTokens)?;
        let tokens = tokens.get();
        let entry = tokens.find(token).ok_or(IdentityError::BadToken)?;
        Ok(Arc::new(Caller {
            user: entry.user.clone(),
            groups: entry.groups.clone(),
            auth: AuthMethod::Token,
            peer: self.peer.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn resolver(config: &str, dir: &std::path::Path) -> Arc<Resolver> {
        let c = Config::parse(config, &dir.join("c.toml")).unwrap();
        Arc::new(Resolver::from_config(&c).unwrap())
    }

    fn tcp() -> Peer {
        Peer::Tcp {
            addr: "127.0.0.1:5555".parse().unwrap(),
        }
    }

    #[test]
    fn no_proof_is_refused_unless_anonymous_is_configured() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver("", dir.path());
        let conn = r.connection(tcp(), Proof::Nothing);
        assert_eq!(
            conn.caller(&mut HeaderMap::new()),
            Err(IdentityError::Anonymous)
        );
        let r = resolver(
            "[server]\nanonymous = { user = \"guest\", groups = [\"g\"] }\n",
            dir.path(),
        );
        let c = r
            .connection(tcp(), Proof::Nothing)
            .caller(&mut HeaderMap::new())
            .unwrap();
        assert_eq!((c.user.as_str(), c.auth), ("guest", AuthMethod::None));
        assert_eq!(c.groups, ["g"]);
    }

    #[test]
    fn unix_peers_are_named_from_the_user_database() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver("", dir.path());
        let peer = Peer::Unix {
            uid: Some(0),
            gid: Some(0),
            pid: Some(1),
        };
        let c = r
            .connection(peer, Proof::Uid(0))
            .caller(&mut HeaderMap::new())
            .unwrap();
        assert_eq!(
            (c.user.as_str(), c.auth),
            ("root", AuthMethod::PeerCredentials)
        );
        assert!(c.groups.contains(&"root".to_owned()));
    }

    #[test]
    fn tokens_name_the_caller_and_the_header_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens.toml");
        let token = tokens::add(&file, "ci", &["builders".into()]).unwrap();
        let r = resolver("[server]\ntokens_file = \"tokens.toml\"\n", dir.path());
        let conn = r.connection(tcp(), Proof::Nothing);
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let c = conn.caller(&mut h).unwrap();
        assert_eq!((c.user.as_str(), c.auth), ("ci", AuthMethod::Token));
        assert!(
            h.get(header::AUTHORIZATION).is_none(),
            "the token would be forwarded"
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer pcl_nope"),
        );
        assert_eq!(conn.caller(&mut h), Err(IdentityError::BadToken));
        assert!(h.is_empty());
        // Without a tokens file a bearer token is refused, and still never forwarded.
        let r = resolver("", dir.path());
        let conn = r.connection(
            Peer::Unix {
                uid: Some(0),
                gid: None,
                pid: None,
            },
            Proof::Uid(0),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(conn.caller(&mut h), Err(IdentityError::NoTokens));
        assert!(h.is_empty());
    }

    #[test]
    fn certificate_problems_reach_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let r = resolver("", dir.path());
        let conn = r.connection(
            Peer::Tls {
                addr: "127.0.0.1:1".parse().unwrap(),
            },
            Proof::Certificate(Err(cert::CertError::NoUser("common name (CN)"))),
        );
        let err = conn.caller(&mut HeaderMap::new()).unwrap_err();
        assert!(err.to_string().contains("common name"), "{err}");
        assert_eq!(err.to_docker_error().status, StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let err = Config::parse("[server]\nlisten = [\"tls://127.0.0.1:2376\"]\n", &p).unwrap_err();
        assert!(err.to_string().contains("server.tls"), "{err}");
        let err =
            Config::parse("[server.tls]\ncert = \"nope.pem\"\nkey = \"k.pem\"\n", &p).unwrap_err();
        assert!(err.to_string().contains("server.tls.cert"), "{err}");
        let err = Config::parse("[server]\nsocket_group = \"no-such-group-pc\"\n", &p).unwrap_err();
        assert!(err.to_string().contains("server.socket_group"), "{err}");
        let err = Config::parse("[server]\ntokens_file = \"missing.toml\"\n", &p).unwrap_err();
        assert!(err.to_string().contains("server.tokens_file"), "{err}");
        let err = Config::parse(
            "[server.tls]\ncert = \"a\"\nkey = \"b\"\nuser_from = \"ou\"\n",
            &p,
        )
        .unwrap_err();
        assert!(err.to_string().contains("user_from"), "{err}");
    }
}
