//! BuildKit's tunnels, mediated: `docker build` with buildx, `docker buildx build` and
//! `docker compose build` speak BuildKit's gRPC API over two HTTP/2 connections the engine
//! switches to (`POST /grpc`, `POST /session`, `Upgrade: h2c`). Once the engine answered
//! `101`, the listener hands such a connection here instead of copying bytes: the gateway
//! speaks HTTP/2 to both sides and forwards call by call, so nothing reaches the engine
//! that was not judged.
//!
//! - [`methods`]: the method table; a method not in it is refused.
//! - [`proto`]: the judged messages and gRPC's framing.
//! - [`solve`]: a Solve as the JSON body of a `build.solve` request.
//! - `call`: one call's trip: decode, check the session and the ref, run the plugin chain,
//!   claim the tags, forward what was judged, record.
//! - `relay`: the HTTP/2 connections on both sides.
//!
//! On `/grpc` the client calls the engine; on `/session` the engine calls the client's
//! session services (its build context, secrets, credentials): there the gateway is the
//! server towards the engine and the client towards the caller. docs/builds.md is the
//! operator's account of all of it.

mod call;
pub mod methods;
pub mod proto;
mod relay;
pub mod solve;

pub use relay::serve;

use http::StatusCode;

use crate::error::IntoDockerError;
use crate::owners::BuildsError;
use crate::pipeline::{ChainError, TagError};
use proto::FrameError;

/// Why a call was refused or failed; sent to the client as a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum BuildkitError {
    #[error("portcullis: {method} is not a BuildKit method the gateway knows; it is refused")]
    UnknownMethod { method: String },
    #[error("portcullis: {method} is refused: {why}")]
    Refused { method: String, why: &'static str },
    #[error("portcullis: {method}: {source}")]
    Frame { method: String, source: FrameError },
    #[error("portcullis: {method}: the request is larger than the {limit}-byte limit (limits.max_body_bytes)")]
    TooLarge { method: String, limit: usize },
    #[error("portcullis: {method}: error reading the request: {reason}")]
    Read { method: String, reason: String },
    #[error("portcullis: the build's session {session:?} {why}")]
    Session { session: String, why: String },
    #[error("portcullis: build {reference:?} {why}")]
    NotYours {
        reference: String,
        why: &'static str,
    },
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Tags(#[from] TagError),
    #[error("portcullis: {0}")]
    Builds(#[from] BuildsError),
    #[error("portcullis: {0}")]
    Unusable(#[from] solve::Unusable),
    #[error("portcullis: the engine's BuildKit cannot be reached: {0}")]
    Engine(String),
    #[error("{0}")]
    Audit(String),
}

/// gRPC status codes (`google.golang.org/grpc/codes`).
pub mod code {
    pub const INVALID_ARGUMENT: u16 = 3;
    pub const NOT_FOUND: u16 = 5;
    pub const ALREADY_EXISTS: u16 = 6;
    pub const PERMISSION_DENIED: u16 = 7;
    pub const RESOURCE_EXHAUSTED: u16 = 8;
    pub const UNIMPLEMENTED: u16 = 12;
    pub const INTERNAL: u16 = 13;
    pub const UNAVAILABLE: u16 = 14;
}

impl BuildkitError {
    /// The gRPC status code and message the client gets; plugin messages as they are,
    /// as a classic build shows them.
    pub fn status(&self) -> (u16, String) {
        let from_http = |s: StatusCode| match s.as_u16() {
            400 | 422 => code::INVALID_ARGUMENT,
            401 | 403 => code::PERMISSION_DENIED,
            404 => code::NOT_FOUND,
            409 => code::ALREADY_EXISTS,
            413 | 429 | 507 => code::RESOURCE_EXHAUSTED,
            502..=504 => code::UNAVAILABLE,
            _ => code::INTERNAL,
        };
        let c = match self {
            BuildkitError::UnknownMethod { .. } => code::UNIMPLEMENTED,
            BuildkitError::Refused { .. }
            | BuildkitError::Session { .. }
            | BuildkitError::NotYours { .. }
            | BuildkitError::Builds(
                BuildsError::SessionTaken { .. } | BuildsError::RefTaken { .. },
            ) => code::PERMISSION_DENIED,
            BuildkitError::Builds(BuildsError::TooManySessions { .. }) => code::RESOURCE_EXHAUSTED,
            BuildkitError::Frame { .. }
            | BuildkitError::Read { .. }
            | BuildkitError::Unusable(_) => code::INVALID_ARGUMENT,
            BuildkitError::TooLarge { .. } => code::RESOURCE_EXHAUSTED,
            BuildkitError::Chain(e) => {
                let d = e.to_docker_error();
                return (from_http(d.status), d.message);
            }
            BuildkitError::Tags(e) => {
                let d = e.to_docker_error();
                return (from_http(d.status), d.message);
            }
            BuildkitError::Engine(_) | BuildkitError::Audit(_) => code::UNAVAILABLE,
        };
        (c, self.to_string())
    }

    /// Whether the policy refused the call (rather than the call failing).
    pub fn denied(&self) -> bool {
        matches!(
            self,
            BuildkitError::UnknownMethod { .. }
                | BuildkitError::Refused { .. }
                | BuildkitError::Session { .. }
                | BuildkitError::NotYours { .. }
                | BuildkitError::Builds(_)
                | BuildkitError::Chain(ChainError::Denied { .. })
        )
    }

    /// The HTTP status the record keeps for it (the record's `status` is HTTP's).
    pub fn http_status(&self) -> u16 {
        match self.status().0 {
            code::INVALID_ARGUMENT => 400,
            code::NOT_FOUND => 404,
            code::ALREADY_EXISTS => 409,
            code::PERMISSION_DENIED => 403,
            code::RESOURCE_EXHAUSTED => 413,
            code::UNIMPLEMENTED => 403,
            code::UNAVAILABLE => 503,
            _ => 500,
        }
    }
}

/// `grpc-message` is percent-encoded: everything outside printable ASCII, and `%`.
pub fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("a b: 100%"), "a b: 100%25");
        assert_eq!(grpc_message("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn refusals_are_permission_denied() {
        let e = BuildkitError::NotYours {
            reference: "r".into(),
            why: "was started by another user",
        };
        assert_eq!(e.status().0, code::PERMISSION_DENIED);
        assert!(e.denied());
        assert_eq!(e.http_status(), 403);
        let e = BuildkitError::Frame {
            method: "m".into(),
            source: FrameError::Empty,
        };
        assert_eq!(e.status().0, code::INVALID_ARGUMENT);
        assert!(!e.denied());
    }
}
