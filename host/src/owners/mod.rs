//! The gateway's own record of who owns the names that labels cannot protect: image
//! repositories, and BuildKit's sessions and builds ([`Builds`]).
//!
//! # Why the gateway keeps the record
//!
//! Containers, volumes, networks and swarm objects carry their owner in a label the gateway
//! stamps when it forwards their create, and clients can never set that label themselves. An
//! image's labels, though, come from whoever made the image: a Dockerfile's
//! `LABEL io.portcullis.owner=alice`, a crafted `docker load` tarball or `docker import
//! --change`. And a tag is a *name*, not an object: `docker tag` or `docker build -t` points it
//! at another image without touching the one it named before. So who owns `alice-app:latest`
//! cannot be read off any image; the gateway writes it down instead, in a store of its own,
//! keyed by the authenticated caller it forwarded the request for.
//!
//! # What is recorded
//!
//! The unit is the repository (`alice-app`, `registry:5000/team/app`): the first caller to
//! create a tag in a repository that neither exists on the engine nor has a record becomes
//! its owner, and every tag in it is theirs. Owning tags one by one would let a second user
//! create `alice-app:v2` before alice does, and alice's next deployment would run it. For the
//! same reason a record outlives the repository's last tag. The claim is written (and
//! flushed) *before* the request that creates the tag is forwarded: written after, a build
//! that takes minutes would leave the name open to anyone for as long.
//!
//! Repositories that exist on the engine without a record (made before the gateway, or
//! directly on the engine) belong to nobody: they are the host's shared base images.

mod builds;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::StatusCode;

pub use crate::config::OwnersConfig;
use crate::error::{DockerError, IntoDockerError};
pub use builds::{Builds, BuildsError, SessionClaim};

/// Why the record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OwnersError {
    /// The store cannot be opened.
    #[error("cannot open the repository owners' store {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    /// A read or write failed (full disk, I/O error).
    #[error("the repository owners' store failed: {0}")]
    Store(String),
    /// The store holds as many repositories as it may.
    #[error("the gateway records at most {limit} image repositories (owners.max_repositories); ask an administrator")]
    Full { limit: usize },
    /// Another request claimed the repository between the plugins' judgement and the claim.
    #[error(
        "image repository {repository:?} was claimed by another user while this request was judged"
    )]
    Taken { repository: String },
}

impl IntoDockerError for OwnersError {
    fn to_docker_error(&self) -> DockerError {
        let status = match self {
            OwnersError::Open { .. } | OwnersError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            OwnersError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            OwnersError::Taken { .. } => StatusCode::CONFLICT,
        };
        DockerError::new(status, format!("portcullis: {self}"))
    }
}

/// The record: repository → owner (a user name).
pub struct Owners {
    db: sled::Db,
    /// Where it is kept; none for a record that lives only as long as the process.
    path: Option<PathBuf>,
    limit: usize,
    count: AtomicUsize,
}

impl Owners {
    /// Opens the record `config` names (relative to `base_dir`), or, without one, a record
    /// kept in memory until the gateway stops.
    pub fn open(config: Option<&OwnersConfig>, base_dir: &Path) -> Result<Self, OwnersError> {
        let (sled_config, path, limit) = match config {
            Some(c) => {
                let path = base_dir.join(&c.path);
                (
                    sled::Config::new().path(&path),
                    Some(path),
                    c.max_repositories,
                )
            }
            None => (
                sled::Config::new().temporary(true),
                None,
                crate::config::default_max_repositories(),
            ),
        };
        let shown = path.clone().unwrap_or_else(|| PathBuf::from("(in memory)"));
        let open_err = |reason: String| OwnersError::Open {
            path: shown.clone(),
            reason,
        };
        // sled can panic on some damaged files instead of returning an error.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sled_config.open()))
            .map_err(|_| open_err("the database could not be read".into()))?
            .map_err(|e| open_err(e.to_string()))?;
        let count = AtomicUsize::new(db.len());
        Ok(Owners {
            db,
            path,
            limit,
            count,
        })
    }

    /// Where the record is kept (none: in memory).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The owner of `repository` (the engine's short form, `busybox`, `team/app`).
    pub fn owner(&self, repository: &str) -> Result<Option<String>, OwnersError> {
        let value = self
            .db
            .get(repository.as_bytes())
            .map_err(|e| OwnersError::Store(e.to_string()))?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Makes `user` the owner of `repository`, which had no owner when the request was
    /// judged; on disk when this returns. Claiming one's own repository again is a no-op.
    pub async fn claim(&self, repository: &str, user: &str) -> Result<(), OwnersError> {
        let store = |e: sled::Error| OwnersError::Store(e.to_string());
        if self.count.load(Ordering::Relaxed) >= self.limit {
            return Err(OwnersError::Full { limit: self.limit });
        }
        let swapped = self
            .db
            .compare_and_swap(
                repository.as_bytes(),
                None as Option<&[u8]>,
                Some(user.as_bytes()),
            )
            .map_err(store)?;
        match swapped {
            Ok(()) => {
                self.count.fetch_add(1, Ordering::Relaxed);
                self.db.flush_async().await.map_err(store)?;
                Ok(())
            }
            Err(e) if e.current.as_deref() == Some(user.as_bytes()) => Ok(()),
            Err(_) => Err(OwnersError::Taken {
                repository: repository.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_claim_wins_and_is_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let config = OwnersConfig {
            path: "owners".into(),
            max_repositories: 2,
        };
        {
            let owners = Owners::open(Some(&config), dir.path()).unwrap();
            assert_eq!(owners.owner("alice-app").unwrap(), None);
            owners.claim("alice-app", "alice").await.unwrap();
            owners.claim("alice-app", "alice").await.unwrap();
            assert!(matches!(
                owners.claim("alice-app", "bob").await,
                Err(OwnersError::Taken { .. })
            ));
            owners.claim("bob-app", "bob").await.unwrap();
            // Bounded: a third repository does not fit.
            assert!(matches!(
                owners.claim("carol-app", "carol").await,
                Err(OwnersError::Full { limit: 2 })
            ));
        }
        let owners = Owners::open(Some(&config), dir.path()).unwrap();
        assert_eq!(owners.owner("alice-app").unwrap().as_deref(), Some("alice"));
        assert_eq!(owners.owner("bob-app").unwrap().as_deref(), Some("bob"));
        assert_eq!(owners.path(), Some(dir.path().join("owners").as_path()));
    }

    #[tokio::test]
    async fn without_a_path_the_record_lives_in_memory() {
        let owners = Owners::open(None, Path::new("/nonexistent")).unwrap();
        owners.claim("x", "alice").await.unwrap();
        assert_eq!(owners.owner("x").unwrap().as_deref(), Some("alice"));
        assert_eq!(owners.path(), None);
    }
}
