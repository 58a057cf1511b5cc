//! Who is calling. The listener records what the transport proves about the peer (unix
//! peer credentials, a TCP address); this module turns that into the [`Caller`] that
//! every later stage (plugins, audit) sees.

use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

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
    /// A TCP peer.
    Tcp { addr: SocketAddr },
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
        }
    }
}

/// How the caller's identity was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Kernel-verified unix socket credentials.
    PeerCredentials,
    /// No proof of identity (plain loopback TCP).
    None,
}

/// The identity every plugin and audit record sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// User name (from the user database for unix peers), or `anonymous`.
    pub user: String,
    /// Group names.
    pub groups: Vec<String>,
    /// How the identity was established.
    pub auth: AuthMethod,
    /// The transport-level peer.
    pub peer: Peer,
}

impl Caller {
    /// Derives the caller from what the transport proved.
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
