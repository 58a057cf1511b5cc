//! `audit list`: filters over the store, answered from the indexes newest first. The most
//! selective index present in the query drives the scan (user, then object, then endpoint,
//! then decision); a time range becomes a sequence range (times never decrease along the
//! sequence); the other filters are checked on each record read. So
//! `--user alice --limit 100` reads alice's newest 100 records, whatever the store's size.

use std::time::SystemTime;

use globset::{Glob, GlobMatcher};

use super::record::{Decision, Record, Stage};
use super::store::{millis, Index, Store};
use super::AuditError;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Records written at or after this time.
    pub since: Option<SystemTime>,
    /// Records written at or before this time.
    pub until: Option<SystemTime>,
    /// Exactly this user.
    pub user: Option<String>,
    /// This decision.
    pub decision: Option<Decision>,
    /// Endpoint names matching this glob (`container.*`).
    pub endpoint: Option<String>,
    /// Exactly this object id or name (as the client named it).
    pub object: Option<String>,
    /// At most this many records (newest first).
    pub limit: Option<usize>,
}

/// Outcomes listed whose decisions are still to come, at most (see [`Query::run`]).
const MAX_PENDING_DECISIONS: usize = 1 << 16;

/// The record at `seq` as one request: an outcome completed with its decision record.
pub fn request(store: &Store, seq: u64) -> Result<Option<Record>, AuditError> {
    store.get(seq)?.map(|r| joined(store, r)).transpose()
}

/// `r`, completed with its decision record when it is an outcome (as it is when that
/// record was removed by retention).
fn joined(store: &Store, r: Record) -> Result<Record, AuditError> {
    match r.decided {
        Some(d) => Ok(match store.get(d)? {
            Some(decision) => r.joined(decision),
            None => r,
        }),
        None => Ok(r),
    }
}

type Seqs<'a> = Box<dyn Iterator<Item = Result<u64, AuditError>> + 'a>;

impl Query {
    /// Runs the query: matching records, newest first.
    pub fn run<'a>(
        &self,
        store: &'a Store,
    ) -> Result<Box<dyn Iterator<Item = Result<Record, AuditError>> + 'a>, AuditError> {
        let endpoint: Option<GlobMatcher> = match &self.endpoint {
            Some(g) => Some(
                Glob::new(g)
                    .map_err(|e| AuditError::Query(format!("bad endpoint glob {g:?}: {e}")))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let Some((lo, hi)) = store.seq_range(self.since.map(millis), self.until.map(millis))?
        else {
            return Ok(Box::new(std::iter::empty()));
        };
        let seqs: Seqs<'a> = if let Some(u) = &self.user {
            Box::new(store.index_seqs(Index::User, u, lo, hi))
        } else if let Some(o) = &self.object {
            Box::new(store.index_seqs(Index::Object, o, lo, hi))
        } else if let (Some(glob), Some(m)) = (&self.endpoint, &endpoint) {
            // The glob's literal prefix narrows the endpoints to look at; their index
            // streams (each newest first) are merged by sequence.
            let literal: String = glob
                .chars()
                .take_while(|c| !"*?[{\\".contains(*c))
                .collect();
            let streams: Vec<Seqs<'a>> = store
                .index_terms(Index::Endpoint, &literal)?
                .into_iter()
                .filter(|t| m.is_match(t))
                .map(|t| {
                    // Owned term: the iterator borrows only the store.
                    let it: Seqs<'a> = Box::new(store.index_seqs(Index::Endpoint, &t, lo, hi));
                    it
                })
                .collect();
            Box::new(Merge::new(streams))
        } else if let Some(d) = self.decision {
            Box::new(store.index_seqs(Index::Decision, d.as_str(), lo, hi))
        } else {
            Box::new(store.all_seqs(lo, hi))
        };
        let q = self.clone();
        let records = seqs
            .filter_map(move |seq| match seq {
                Err(e) => Some(Err(e)),
                // An index entry without its record cannot happen with transactional
                // writes; skip it rather than fail a listing.
                Ok(seq) => store.get(seq).transpose(),
            })
            .filter(move |r| match r {
                Err(_) => true,
                Ok(r) => q.matches(r, endpoint.as_ref()),
            });
        // A request recorded in two (decision, then outcome) is listed once: the outcome,
        // newer, comes first and is completed with its decision, which is then skipped.
        let mut shown = std::collections::HashSet::new();
        let records = records.filter_map(move |r| {
            let r = match r {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if r.stage == Some(Stage::Decision) && shown.remove(&r.seq) {
                return None;
            }
            if shown.len() >= MAX_PENDING_DECISIONS {
                // Only when a filter keeps outcomes but not their decisions: at worst a
                // request is listed twice.
                shown.clear();
            }
            if let Some(d) = r.decided {
                shown.insert(d);
            }
            Some(joined(store, r))
        });
        Ok(match self.limit {
            Some(n) => Box::new(records.take(n)),
            None => Box::new(records),
        })
    }

    fn matches(&self, r: &Record, endpoint: Option<&GlobMatcher>) -> bool {
        let time = || humantime::parse_rfc3339(&r.time).ok();
        self.user.as_ref().is_none_or(|u| r.user() == u)
            && self
                .object
                .as_ref()
                .is_none_or(|o| r.object.as_ref() == Some(o))
            && self.decision.is_none_or(|d| r.decision == d)
            && endpoint.is_none_or(|m| m.is_match(&r.endpoint))
            && self
                .since
                .is_none_or(|s| time().is_some_and(|t| millis(t) >= millis(s)))
            && self
                .until
                .is_none_or(|u| time().is_some_and(|t| millis(t) <= millis(u)))
    }
}

/// Merges sequence streams that are each newest first into one newest-first stream.
struct Merge<'a> {
    streams: Vec<std::iter::Peekable<Seqs<'a>>>,
}

impl<'a> Merge<'a> {
    fn new(streams: Vec<Seqs<'a>>) -> Self {
        Self {
            streams: streams.into_iter().map(Iterator::peekable).collect(),
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<u64, AuditError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut best: Option<(usize, u64)> = None;
        for (i, s) in self.streams.iter_mut().enumerate() {
            match s.peek() {
                Some(Err(_)) => return s.next(),
                Some(Ok(seq)) if best.is_none_or(|(_, b)| *seq > b) => best = Some((i, *seq)),
                _ => {}
            }
        }
        let (i, _) = best?;
        self.streams[i].next()
    }
}
