//! The client side of the admin listener, for the commands that act on a running gateway
//! (`reload`, and `audit …` while the gateway holds the store). It speaks plain HTTP/1 over
//! the admin address, through the same client the gateway uses for the engine.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;

use super::CliError;
use crate::body::Body;
use crate::config::{Address, EngineConfig};
use crate::upstream::Upstream;

/// A connection to one gateway's admin listener.
pub struct AdminClient {
    client: Upstream,
}

/// An answer of the admin API.
pub struct Answer {
    pub status: StatusCode,
    pub body: hyper::body::Incoming,
}

impl AdminClient {
    /// A client for the admin listener at `address` (connects per request).
    pub fn new(address: &Address) -> Result<Self, CliError> {
        let config = EngineConfig {
            url: address.clone(),
            max_idle_connections: 0,
            connect_timeout: std::time::Duration::from_secs(5),
            cert_path: None,
        };
        let client = Upstream::new(&config)
            .map_err(|e| CliError::context(format!("admin listener {address}"), e))?;
        Ok(Self { client })
    }

    /// Sends `method path` and returns the answer, its body unread (an export streams).
    pub async fn send(&self, method: Method, path: &str) -> Result<Answer, CliError> {
        let mut req = Request::new(Body::empty());
        *req.method_mut() = method;
        *req.uri_mut() = path
            .parse()
            .map_err(|e| CliError::context(format!("admin path {path}"), e))?;
        req.headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_static("admin"));
        let resp = self.client.send(req).await.map_err(|e| {
            CliError::context(
                format!("the gateway's admin listener at {}", self.client.address()),
                e,
            )
        })?;
        let status = resp.status();
        Ok(Answer {
            status,
            body: resp.into_body(),
        })
    }

    /// Sends `method path` and reads the whole answer; a failure status becomes the
    /// message the gateway gave.
    pub async fn call(&self, method: Method, path: &str) -> Result<Bytes, CliError> {
        let answer = self.send(method, path).await?;
        let status = answer.status;
        let body = answer.read().await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(CliError::Message(message_of(&body).unwrap_or_else(|| {
            format!("the gateway answered {status} to {path}")
        })))
    }
}

impl Answer {
    /// The whole body.
    pub async fn read(self) -> Result<Bytes, CliError> {
        Ok(self
            .body
            .collect()
            .await
            .map_err(|e| CliError::context("reading the admin listener's answer", e))?
            .to_bytes())
    }
}

/// The `message` of a Docker-style error body.
pub fn message_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("message")?.as_str().map(str::to_owned)
}
