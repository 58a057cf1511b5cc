//! Who opened each BuildKit session and who started each build, as the gateway forwarded
//! them.
//!
//! BuildKit names a build's session (the client's files, secrets and SSH agent) by a
//! client-chosen id, and a build by a client-chosen ref. The engine serves any session or
//! ref to anyone who names it, so the gateway keeps who opened or started each one: a Solve
//! may use only the caller's own session, and a build's status or history only its
//! starter. The record lives in memory: sessions end with their connection, and a ref that
//! is forgotten (the oldest, beyond the bound, or after a restart) belongs to nobody, which
//! refuses rather than shows.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Sessions open at once, across all callers.
const MAX_SESSIONS: usize = 4096;
/// Build refs remembered (the oldest are forgotten first).
const MAX_REFS: usize = 16384;

/// Why a session or a ref cannot be recorded for a caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildsError {
    /// Another caller has an open session of this id.
    #[error("BuildKit session {id:?} is open for another user")]
    SessionTaken { id: String },
    /// Too many sessions are open.
    #[error("too many BuildKit sessions are open ({limit}); try again later")]
    TooManySessions { limit: usize },
    /// Another caller started a build of this ref.
    #[error("build {reference:?} was started by another user")]
    RefTaken { reference: String },
}

/// The record of sessions and builds (one per gateway).
pub struct Builds {
    sessions: Mutex<HashMap<String, Open>>,
    refs: Mutex<lru::LruCache<String, String>>,
    /// Woken whenever a session opens or a ref is recorded.
    changed: Notify,
}

struct Open {
    user: String,
    /// Connections of the same caller with this id (a client reconnecting).
    count: usize,
}

impl Default for Builds {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            refs: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(MAX_REFS).unwrap_or(NonZeroUsize::MIN),
            )),
            changed: Notify::new(),
        }
    }
}

/// A session held open for its caller; dropping it (the tunnel closed, or the request was
/// refused) ends the claim.
pub struct SessionClaim {
    builds: Arc<Builds>,
    id: String,
}

impl SessionClaim {
    /// The session's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        if let Ok(mut sessions) = self.builds.sessions.lock() {
            if let Some(open) = sessions.get_mut(&self.id) {
                open.count -= 1;
                if open.count == 0 {
                    sessions.remove(&self.id);
                }
            }
        }
    }
}

impl Builds {
    /// Records that `user` opens the session `id`, before the request that opens it is
    /// forwarded.
    pub fn open_session(
        self: &Arc<Self>,
        id: &str,
        user: &str,
    ) -> Result<SessionClaim, BuildsError> {
        let mut sessions = self
            .sessions
            .lock()
            .map_err(|_| BuildsError::TooManySessions { limit: 0 })?;
        let full = sessions.len() >= MAX_SESSIONS;
        match sessions.get_mut(id) {
            Some(open) if open.user != user => {
                return Err(BuildsError::SessionTaken { id: id.to_owned() })
            }
            Some(open) => open.count += 1,
            None if full => {
                return Err(BuildsError::TooManySessions {
                    limit: MAX_SESSIONS,
                })
            }
            None => {
                sessions.insert(
                    id.to_owned(),
                    Open {
                        user: user.to_owned(),
                        count: 1,
                    },
                );
            }
        }
        drop(sessions);
        self.changed.notify_waiters();
        Ok(SessionClaim {
            builds: self.clone(),
            id: id.to_owned(),
        })
    }

    /// Who has the session `id` open now.
    pub fn session_owner(&self, id: &str) -> Option<String> {
        let sessions = self.sessions.lock().ok()?;
        sessions.get(id).map(|o| o.user.clone())
    }

    /// Records that `user` starts the build `reference`, before its Solve is forwarded. A
    /// caller may solve its own ref again (a client retrying).
    pub fn start_build(&self, reference: &str, user: &str) -> Result<(), BuildsError> {
        let mut refs = self.refs.lock().map_err(|_| BuildsError::RefTaken {
            reference: reference.to_owned(),
        })?;
        match refs.get(reference) {
            Some(owner) if owner != user => {
                return Err(BuildsError::RefTaken {
                    reference: reference.to_owned(),
                })
            }
            Some(_) => {}
            None => {
                refs.put(reference.to_owned(), user.to_owned());
            }
        }
        drop(refs);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Who started the build `reference`, if the gateway remembers it.
    pub fn build_owner(&self, reference: &str) -> Option<String> {
        self.refs.lock().ok()?.peek(reference).cloned()
    }

    /// Waits (at most `limit`) until `find` answers: clients open a session and ask for a
    /// build's status concurrently with the Solve that uses them, so either may arrive
    /// first.
    pub async fn wait_for(
        &self,
        limit: Duration,
        find: impl Fn(&Self) -> Option<String>,
    ) -> Option<String> {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if let Some(found) = find(self) {
                    return found;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_its_openers_until_closed() {
        let b = Arc::new(Builds::default());
        let alice = b.open_session("s1", "alice").unwrap();
        assert_eq!(b.session_owner("s1").as_deref(), Some("alice"));
        assert_eq!(
            b.open_session("s1", "bob").err(),
            Some(BuildsError::SessionTaken { id: "s1".into() })
        );
        let again = b.open_session("s1", "alice").unwrap();
        drop(alice);
        assert_eq!(b.session_owner("s1").as_deref(), Some("alice"));
        drop(again);
        assert_eq!(b.session_owner("s1"), None);
        assert!(b.open_session("s1", "bob").is_ok());
    }

    #[test]
    fn a_ref_is_its_starters() {
        let b = Builds::default();
        b.start_build("r1", "alice").unwrap();
        b.start_build("r1", "alice").unwrap();
        assert!(b.start_build("r1", "bob").is_err());
        assert_eq!(b.build_owner("r1").as_deref(), Some("alice"));
        assert_eq!(b.build_owner("r2"), None);
    }

    #[tokio::test]
    async fn waiting_sees_a_later_open() {
        let b = Arc::new(Builds::default());
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            b2.wait_for(Duration::from_secs(5), |b| b.session_owner("s"))
                .await
        });
        tokio::task::yield_now().await;
        let _claim = b.open_session("s", "alice").unwrap();
        assert_eq!(waiter.await.unwrap().as_deref(), Some("alice"));
        let none = b
            .wait_for(Duration::from_millis(20), |b| b.session_owner("t"))
            .await;
        assert_eq!(none, None);
    }
}
