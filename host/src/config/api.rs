//! `[api]`: which parts of the Engine API clients may use at all, before any plugin runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// An Engine API version, `major.minor` (`1.41`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u16, pub u16);

impl FromStr for ApiVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an API version such as \"1.41\"");
        let (major, minor) = s.split_once('.').ok_or_else(bad)?;
        Ok(ApiVersion(
            major.parse().map_err(|_| bad())?,
            minor.parse().map_err(|_| bad())?,
        ))
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The oldest API version a client may name in a `/vX.Y` path prefix. Before 1.24,
    /// `container start` could carry a HostConfig (privileges, binds) of its own: a second
    /// door that every policy would have to guard, so it stays shut by default.
    #[serde(default = "default_min_version")]
    pub min_version: ApiVersion,
    /// The newest API version accepted; by default whatever the engine serves.
    #[serde(default)]
    pub max_version: Option<ApiVersion>,
    /// What becomes of BuildKit's `/session` and `/grpc` tunnels (`docker build` with
    /// buildx, `docker buildx build`, `docker compose build`): judged call by call
    /// (`mediate`), refused (`deny`), or passed through unread (`pass`).
    #[serde(default)]
    pub buildkit: BuildkitMode,
    /// Resolve symlinks in host paths of bind mounts (container and service mounts,
    /// `local` volumes bound to a device path) before plugins judge them, and forward the
    /// resolved path, so that a link to `/` cannot pass as an allowed directory. Needs the
    /// gateway to see the host's filesystem as the engine does.
    #[serde(default = "yes")]
    pub resolve_bind_sources: bool,
    /// Forward requests to endpoints the gateway does not know (newer API additions,
    /// experimental paths) instead of refusing them with 403 "unknown endpoint". Plugins
    /// still run and see the endpoint name `unknown`, but never the request body, which the
    /// gateway cannot canonicalize: a policy can judge only method, path and query.
    #[serde(default)]
    pub pass_unknown_endpoints: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            min_version: default_min_version(),
            max_version: None,
            buildkit: BuildkitMode::default(),
            resolve_bind_sources: true,
            pass_unknown_endpoints: false,
        }
    }
}

/// `[api] buildkit`: how BuildKit's HTTP/2 tunnels are served (docs/builds.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildkitMode {
    /// The gateway speaks HTTP/2 to both sides and judges every gRPC call: a Solve goes
    /// through the plugin chain as `build.solve`, the way a classic build does as
    /// `image.build`.
    #[default]
    Mediate,
    /// Both tunnels are refused with 403: clients fall back to the classic builder
    /// (`DOCKER_BUILDKIT=0`).
    Deny,
    /// The tunnels are passed through as bytes once the engine agreed to switch: builds
    /// escape every plugin. For a gateway whose callers are all trusted with the engine.
    Pass,
}

fn default_min_version() -> ApiVersion {
    ApiVersion(1, 24)
}

fn yes() -> bool {
    true
}
