//! Unix peers by name: the uid the kernel reports (SO_PEERCRED) looked up in the system's
//! user database (`getpwuid_r`, `getgrouplist`, so NSS sources such as LDAP count too).
//!
//! Lookups are cached, because a docker CLI opens several connections per command and NSS
//! can be slow, but only briefly ([`TTL`]): someone added to a group is seen by the gateway
//! within seconds, without a restart. The cache holds at most [`CAPACITY`] users.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a lookup is trusted. Short so group changes take effect quickly.
pub const TTL: Duration = Duration::from_secs(5);
/// Most users kept in the cache.
pub const CAPACITY: usize = 1024;

/// A unix user as the user database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixUser {
    /// The login name, or `uid:N` when the uid has no entry.
    pub name: String,
    /// Names of the primary group and every supplementary group (a gid without a name
    /// appears as `gid:N`).
    pub groups: Vec<String>,
}

/// A bounded, short-lived cache in front of the user database.
#[derive(Default)]
pub struct UserDb {
    cache: Mutex<HashMap<u32, (Instant, Arc<UnixUser>)>>,
}

impl UserDb {
    /// The user for `uid`, from the cache when fresh.
    pub fn lookup(&self, uid: u32) -> Arc<UnixUser> {
        let now = Instant::now();
        if let Some((at, user)) = self.lock().get(&uid) {
            if now.duration_since(*at) < TTL {
                return user.clone();
            }
        }
        // Looked up without holding the lock: NSS may take a while.
        let user = Arc::new(lookup_uncached(uid));
        let mut cache = self.lock();
        if cache.len() >= CAPACITY {
            cache.retain(|_, (at, _)| now.duration_since(*at) < TTL);
            if cache.len() >= CAPACITY {
                // Every entry is fresh: many distinct users within one TTL. Dropping them
                // all keeps the bound without bookkeeping; they are looked up again.
                cache.clear();
            }
        }
        cache.insert(uid, (now, user.clone()));
        user
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Instant, Arc<UnixUser>)>> {
        // A panic while holding the lock leaves a valid map: keep using it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the user database directly.
pub fn lookup_uncached(uid: u32) -> UnixUser {
    let Some(user) = uzers::get_user_by_uid(uid) else {
        return UnixUser {
            name: format!("uid:{uid}"),
            groups: Vec::new(),
        };
    };
    let name = user.name().to_string_lossy().into_owned();
    let primary = user.primary_group_id();
    let mut gids: Vec<u32> = uzers::get_user_groups(user.name(), primary)
        .unwrap_or_default()
        .iter()
        .map(|g| g.gid())
        .collect();
    // getgrouplist puts the primary group in; make sure of it and of its place (first).
    gids.retain(|g| *g != primary);
    gids.insert(0, primary);
    let groups = gids
        .into_iter()
        .map(|gid| {
            uzers::get_group_by_gid(gid)
                .map(|g| g.name().to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("gid:{gid}"))
        })
        .collect();
    UnixUser { name, groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_group() {
        let root = lookup_uncached(0);
        assert_eq!(root.name, "root");
        assert_eq!(root.groups.first().map(String::as_str), Some("root"));
    }

    #[test]
    fn unknown_uids_get_a_numeric_name() {
        let u = lookup_uncached(3_999_999_999);
        assert_eq!(u.name, "uid:3999999999");
        assert!(u.groups.is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let db = UserDb::default();
        for uid in 4_000_000_000..4_000_000_000 + CAPACITY as u32 + 10 {
            db.lookup(uid);
        }
        assert!(db.lock().len() <= CAPACITY);
        // Cached: the same Arc comes back.
        let a = db.lookup(0);
        assert!(Arc::ptr_eq(&a, &db.lookup(0)));
    }
}
