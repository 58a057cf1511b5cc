//! `[owners]`: where the gateway keeps its record of image repository owners.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[owners]` table. Without it the record lives in memory: after a restart every
/// repository made through the gateway belongs to nobody (a shared image only administrators
/// change) until it is claimed again, which is safe but surprising.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OwnersConfig {
    /// The store's directory (created if missing); relative to the config file.
    pub path: PathBuf,
    /// Repositories recorded at most (default 100000); a claim beyond is refused.
    #[serde(default = "default_max_repositories")]
    pub max_repositories: usize,
}

pub(crate) fn default_max_repositories() -> usize {
    100_000
}

impl OwnersConfig {
    /// The key and reason of the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("owners.path", "must not be empty".into()));
        }
        if self.max_repositories == 0 {
            return Err(("owners.max_repositories", "must be at least 1".into()));
        }
        Ok(())
    }
}
