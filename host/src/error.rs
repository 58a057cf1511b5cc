//! The one conversion from a failure to what a Docker client expects: the engine's own error
//! format, `{"message": "..."}` with an HTTP status, so the docker CLI prints
//! `Error response from daemon: <message>`. Internal details stay in the logs.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// A failure as a Docker client should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerError {
    /// HTTP status of the answer.
    pub status: StatusCode,
    /// Human-readable reason; shown verbatim by the docker CLI.
    pub message: String,
}

impl DockerError {
    /// An error with the given status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// The JSON body dockerd sends for errors.
    pub fn body(&self) -> Bytes {
        let json = serde_json::json!({ "message": self.message });
        Bytes::from(json.to_string())
    }

    /// The complete HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let body = self.body();
        let mut resp = Response::new(Body::full(body));
        *resp.status_mut() = self.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Implemented by each layer's error type: the status and the client-safe message.
pub trait IntoDockerError {
    /// Converts to the client-facing error. Must not leak internals such as file paths of
    /// the gateway or secrets; those go to the log with the request id instead.
    fn to_docker_error(&self) -> DockerError;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_docker_json_and_escapes() {
        let e = DockerError::new(StatusCode::FORBIDDEN, "no \"privileged\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["message"], "no \"privileged\"");
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}
