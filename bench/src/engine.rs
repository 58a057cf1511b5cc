//! Fixtures, set up and torn down directly on the engine (never through a proxy): the test
//! image check, the labelled containers the scenarios need, and their removal.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};

use crate::client;

/// The label on every container the benchmark creates, its value the creating run's process
/// id: leftovers of an interrupted run are found and removed, and two runs on one engine do
/// not remove each other's containers.
pub const LABEL: &str = "portcullis-bench";

/// This run's label value.
pub fn run_id() -> String {
    std::process::id().to_string()
}
/// The image every benchmark container is created from.
pub const IMAGE: &str = "portcullis/busybox:latest";

/// The body of a small `POST /containers/create`, like `docker create IMAGE true` sends.
pub fn create_body() -> Bytes {
    Bytes::from(
        json!({
            "Image": IMAGE,
            "Cmd": ["true"],
            "Labels": { LABEL: run_id() },
            "HostConfig": { "NetworkMode": "none" },
        })
        .to_string(),
    )
}

/// A create every policy configuration of the bench refuses: a privileged container (denied
/// by the default chain's `baseline`) from a repository outside the allowed list (denied by the
/// owner policy of `portcullis-python` and `portcullis-js`). The image does not exist on the
/// engine either, and the container would carry the run's label: should a configuration let
/// it through, the engine answers 404 and nothing is left behind.
pub fn denied_create_body() -> Bytes {
    Bytes::from(
        json!({
            "Image": DENIED_IMAGE,
            "Cmd": ["true"],
            "Labels": { LABEL: run_id() },
            "HostConfig": { "NetworkMode": "none", "Privileged": true },
        })
        .to_string(),
    )
}

/// The image of [`denied_create_body`]: not in any allowed repository, not on the engine.
pub const DENIED_IMAGE: &str = "portcullis/bench-denied:latest";

/// The owner label the default chain's `tenancy` plugin stamps, with the user this harness runs
/// as (what the gateway learns from the socket's peer credentials), so that the containers the
/// harness creates directly are the caller's own through `portcullis-default` too.
fn owned_create_body() -> Bytes {
    static USER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let user = USER.get_or_init(|| {
        std::process::Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    });
    Bytes::from(
        json!({
            "Image": IMAGE,
            "Cmd": ["true"],
            "Labels": { LABEL: run_id(), "io.portcullis.owner": user },
            "HostConfig": { "NetworkMode": "none" },
        })
        .to_string(),
    )
}

/// One connection to the engine's own socket.
pub struct Engine {
    socket: PathBuf,
    sender: SendRequest<Full<Bytes>>,
}

impl Engine {
    pub async fn connect(socket: &Path) -> Result<Self> {
        let sender = client::connect(socket)
            .await
            .context("the Docker engine is not reachable (scripts/dev-engine start)")?;
        Ok(Self {
            socket: socket.to_owned(),
            sender,
        })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.is_closed() {
            self.sender = client::connect(&self.socket).await?;
        }
        client::send(&mut self.sender, client::request(method, path, body)).await
    }

    async fn json(&mut self, path: &str) -> Result<Value> {
        let (status, body) = self.call(Method::GET, path, None).await?;
        if status != StatusCode::OK {
            bail!("GET {path}: {status}");
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// `GET /version`.
    pub async fn version(&mut self) -> Result<Value> {
        self.json("/version").await
    }

    /// Fails with a hint when the test image is missing.
    pub async fn require_image(&mut self) -> Result<()> {
        let (status, _) = self
            .call(Method::GET, &format!("/images/{IMAGE}/json"), None)
            .await?;
        if status != StatusCode::OK {
            bail!("the engine has no {IMAGE} image (scripts/test-images builds it)");
        }
        Ok(())
    }

    /// Creates a stopped, labelled container; returns its id.
    pub async fn create(&mut self) -> Result<String> {
        let (status, body) = self
            .call(
                Method::POST,
                "/containers/create",
                Some(owned_create_body()),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating a container: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let v: Value = serde_json::from_slice(&body)?;
        Ok(v["Id"].as_str().context("no Id")?.to_owned())
    }

    /// Creates, runs and waits for a labelled container that writes `bytes` bytes to its
    /// stdout, in lines of `line` bytes (`x`s and a newline), for the logs scenario; returns
    /// its id. The engine keeps the output in its log (json-file) after the container exits.
    pub async fn create_logger(&mut self, bytes: u64, line: u64) -> Result<String> {
        let mut body: Value = serde_json::from_slice(&owned_create_body())?;
        body["Cmd"] = json!([
            "sh",
            "-c",
            format!(
                "s=$(head -c {} /dev/zero | tr '\\0' x); yes \"$s\" | head -c {bytes}",
                line.saturating_sub(1)
            )
        ]);
        let (status, answer) = self
            .call(
                Method::POST,
                "/containers/create",
                Some(Bytes::from(body.to_string())),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "creating the logging container: {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let id = serde_json::from_slice::<Value>(&answer)?["Id"]
            .as_str()
            .context("no Id")?
            .to_owned();
        let (status, answer) = self
            .call(Method::POST, &format!("/containers/{id}/start"), None)
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!(
                "starting the logging container: {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let (status, answer) = self
            .call(Method::POST, &format!("/containers/{id}/wait"), None)
            .await?;
        let code = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v["StatusCode"].as_i64());
        if status != StatusCode::OK || code != Some(0) {
            bail!(
                "the logging container failed: {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(id)
    }

    /// Creates and removes a labelled container: the events the event streams wait for.
    pub async fn emit_events(&mut self) -> Result<()> {
        let id = self.create().await?;
        let (status, body) = self
            .call(Method::DELETE, &format!("/containers/{id}?force=1"), None)
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!(
                "removing {id}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// How many containers `GET /containers/json?all=1` lists (other users' included).
    pub async fn count_containers(&mut self) -> Result<usize> {
        Ok(self
            .json("/containers/json?all=1")
            .await?
            .as_array()
            .map_or(0, Vec::len))
    }

    /// Removes this run's containers, and those of earlier runs that are no longer running;
    /// returns how many.
    pub async fn remove_labelled(&mut self) -> Result<usize> {
        let filter = format!(r#"{{"label":["{LABEL}"]}}"#);
        let list = self
            .json(&format!(
                "/containers/json?all=1&filters={}",
                form_encode(&filter)
            ))
            .await?;
        let own = run_id();
        let ids: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                let run = c["Labels"][LABEL].as_str().unwrap_or("");
                run == own || !Path::new("/proc").join(run).is_dir() || run.parse::<u32>().is_err()
            })
            .filter_map(|c| c["Id"].as_str().map(str::to_owned))
            .collect();
        for id in &ids {
            let (status, body) = self
                .call(Method::DELETE, &format!("/containers/{id}?force=1"), None)
                .await?;
            if status != StatusCode::NO_CONTENT && status != StatusCode::NOT_FOUND {
                bail!(
                    "removing {id}: {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        }
        Ok(ids.len())
    }
}

/// Percent-encodes a query value (pub: the event streams' filter) (everything but unreserved characters).
pub fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
