//! Per-caller concurrency (`limits.max_requests_per_caller`): how many requests each user
//! has in flight, streams and tunnels included. A slot is taken before anything else is
//! done for a request and travels with the response body (or the tunnel), so a `docker
//! logs -f` holds its slot until the client hangs up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// In-flight counts by user; a user's entry is removed when its count drops to zero, so
/// the map holds only callers with requests in flight.
#[derive(Debug)]
pub struct CallerSlots {
    limit: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl CallerSlots {
    /// At most `limit` requests in flight per user.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `user`, or `None` when the user already has `limit` requests in flight.
    pub fn take(self: &Arc<Self>, user: &str) -> Option<CallerSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before inserting: a caller already in flight costs no key allocation.
        match counts.get_mut(user) {
            Some(n) if *n >= self.limit => return None,
            Some(n) => *n += 1,
            None => {
                counts.insert(user.to_owned(), 1);
            }
        }
        Some(CallerSlot {
            slots: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Requests `user` has in flight.
    #[cfg(test)]
    fn in_flight(&self, user: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(user).copied().unwrap_or(0)
    }

    /// The configured bound.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// One request's place in its caller's count; given back when dropped.
#[derive(Debug)]
pub struct CallerSlot {
    slots: Arc<CallerSlots>,
    user: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_caller_is_bounded_separately_and_slots_come_back() {
        let slots = CallerSlots::new(2);
        let a1 = slots.take("alice").unwrap();
        let _a2 = slots.take("alice").unwrap();
        assert!(
            slots.take("alice").is_none(),
            "a third request from alice is refused"
        );
        let _b1 = slots
            .take("bob")
            .expect("bob is not limited by alice's requests");
        drop(a1);
        assert_eq!(slots.in_flight("alice"), 1);
        assert!(
            slots.take("alice").is_some(),
            "a finished request frees its slot"
        );
    }

    #[test]
    fn idle_callers_leave_no_entry() {
        let slots = CallerSlots::new(1);
        drop(slots.take("carol").unwrap());
        assert!(slots.counts.lock().unwrap().is_empty());
    }
}
