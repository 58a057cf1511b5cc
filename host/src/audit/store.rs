//! The audit store: an embedded sled database, opened by one process at a time.
//!
//! Trees:
//! - `records`: sequence (u64, big-endian) → `[1][hash: 32][prev: 32][record JSON]`, where
//!   `hash = sha256(seq ‖ prev ‖ JSON)` and `prev` is the previous record's hash. Editing a
//!   record breaks its hash; deleting or reordering records breaks the links.
//! - `meta`: the format tag, the `head` (last sequence and hash, written with each group)
//!   and the retention `anchor` (the last removed record's sequence and hash, so the first
//!   remaining record still links to something known), and the records' stored byte count.
//! - indexes, each key ending with the sequence, so a prefix scanned backwards lists
//!   newest first without reading records: `by_time` (ms ‖ seq), `by_user`, `by_decision`,
//!   `by_endpoint`, `by_object` (term ‖ 0 ‖ seq).
//!
//! Every group of records (and every retention step) is one multi-tree transaction: a
//! crash leaves whole groups or nothing, never a record without its index entries.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Batch, Tree};

use super::record::Record;
use super::AuditError;

/// Tag stored in `meta` so that a foreign sled database is never taken for a store.
const FORMAT: &[u8] = b"portcullis-audit/1";
const VERSION: u8 = 1;
const HEADER: usize = 1 + 32 + 32;
/// Seeded into the chain before the first record.
const GENESIS: [u8; 32] = [0; 32];

const RECORDS: usize = 0;
const META: usize = 1;
const BY_TIME: usize = 2;
const BY_USER: usize = 3;
const BY_DECISION: usize = 4;
const BY_ENDPOINT: usize = 5;
const BY_OBJECT: usize = 6;
const TREE_NAMES: [&str; 7] = [
    "records",
    "meta",
    "by_time",
    "by_user",
    "by_decision",
    "by_endpoint",
    "by_object",
];

/// A position in the chain: a sequence and the hash of the record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// The sequence (0: before the first record).
    pub seq: u64,
    /// That record's hash.
    pub hash: [u8; 32],
}

impl Link {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.seq.to_be_bytes().to_vec();
        v.extend_from_slice(&self.hash);
        v
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != 40 {
            return None;
        }
        Some(Link {
            seq: u64::from_be_bytes(b[..8].try_into().ok()?),
            hash: b[8..].try_into().ok()?,
        })
    }
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the directory and an empty store when missing (the gateway); the CLI only
    /// opens existing stores.
    pub create: bool,
    /// Page cache size in bytes.
    pub cache_bytes: u64,
    /// Background flush interval; `None`: only explicit flushes.
    pub flush_every: Option<Duration>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: false,
            cache_bytes: 64 << 20,
            flush_every: Some(Duration::from_millis(500)),
        }
    }
}

/// An open audit store.
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    trees: Vec<Tree>,
}

/// The result of a successful `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub records: u64,
    /// First and last sequence present.
    pub first: Option<u64>,
    /// Last sequence present.
    pub last: Option<u64>,
    /// Hash of the last record (hex): write it down elsewhere to detect a rewrite of the
    /// whole chain later.
    pub head_hash: String,
    /// Sequence of the last record removed by retention (0: none).
    pub anchor: u64,
}

/// Counts by user, decision and endpoint.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Records present.
    pub records: u64,
    /// First sequence present.
    pub first: Option<u64>,
    /// Last sequence present.
    pub last: Option<u64>,
    /// Time of the oldest record.
    pub oldest: Option<String>,
    /// Time of the newest record.
    pub newest: Option<String>,
    /// Stored record bytes (what `max_size` bounds).
    pub record_bytes: u64,
    /// The store's size on disk, indexes and overhead included.
    pub disk_bytes: u64,
    /// Records per user.
    pub by_user: std::collections::BTreeMap<String, u64>,
    /// Records per decision.
    pub by_decision: std::collections::BTreeMap<String, u64>,
    /// Records per endpoint.
    pub by_endpoint: std::collections::BTreeMap<String, u64>,
}

fn sled_err(path: &Path) -> impl Fn(sled::Error) -> AuditError + '_ {
    move |e| AuditError::from_sled(path, e)
}

fn index_key(term: &str, seq: u64) -> Vec<u8> {
    // The terminator keeps "bob" from matching "bobby"; a NUL inside a term (never in real
    // user names or endpoints) is replaced so the key stays unambiguous. Queries filter on
    // the record itself as well.
    let mut k: Vec<u8> = term
        .bytes()
        .map(|b| if b == 0 { b'?' } else { b })
        .collect();
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn time_key(ms: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ms.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_seq(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

/// `sha256(seq ‖ prev ‖ json)`.
pub fn record_hash(seq: u64, prev: &[u8; 32], json: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(json);
    h.finalize().into()
}

/// Splits a stored value into (hash, prev, json).
fn split_value(v: &[u8]) -> Option<([u8; 32], [u8; 32], &[u8])> {
    if v.len() < HEADER || v[0] != VERSION {
        return None;
    }
    Some((
        v[1..33].try_into().ok()?,
        v[33..65].try_into().ok()?,
        &v[HEADER..],
    ))
}

/// Milliseconds since the epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Store {
    /// Opens the store at `path`. A directory that holds something else, a sled database
    /// that is not an audit store, or a damaged store is an error; nothing is recreated.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, AuditError> {
        Self::check_directory(path, opts.create)?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(opts.flush_every.map(|d| d.as_millis().max(1) as u64));
        // sled can panic on some damaged files instead of returning an error: a damaged
        // store must be an error message, not a crash.
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|_| AuditError::Corrupt {
                path: path.to_owned(),
                reason: "the database could not be read".into(),
            })?
            .map_err(sled_err(path))?;
        let trees = TREE_NAMES
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_err(path))?;
        let store = Store {
            db,
            path: path.to_owned(),
            trees,
        };
        store.check_format(opts.create)?;
        Ok(store)
    }

    fn check_directory(path: &Path, create: bool) -> Result<(), AuditError> {
        let foreign = |reason: &str| AuditError::Foreign {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        match std::fs::metadata(path) {
            Ok(m) if !m.is_dir() => return Err(foreign("it is not a directory")),
            Ok(_) => {
                let mut entries = std::fs::read_dir(path).map_err(|source| AuditError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                let empty = entries.next().is_none();
                let sled_files = path.join("conf").is_file() && path.join("db").is_file();
                if !(empty || sled_files) {
                    return Err(foreign(
                        "the directory holds other files (no sled database)",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Err(AuditError::NotFound {
                        path: path.to_owned(),
                    });
                }
            }
            Err(source) => {
                return Err(AuditError::Io {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        Ok(())
    }

    fn check_format(&self, create: bool) -> Result<(), AuditError> {
        let meta = &self.trees[META];
        match meta.get("format").map_err(sled_err(&self.path))? {
            Some(f) if f.as_ref() == FORMAT => Ok(()),
            Some(f) => Err(AuditError::Foreign {
                path: self.path.clone(),
                reason: format!("unsupported format {:?}", String::from_utf8_lossy(&f)),
            }),
            None => {
                // Only a database with nothing in it may become a store.
                let empty = self.db.tree_names().iter().all(|name| {
                    self.db
                        .open_tree(name)
                        .map(|t| t.is_empty())
                        .unwrap_or(false)
                });
                if !empty {
                    return Err(AuditError::Foreign {
                        path: self.path.clone(),
                        reason: "a sled database that is not a portcullis audit store".into(),
                    });
                }
                if !create {
                    return Err(AuditError::Foreign {
                        path: self.path.clone(),
                        reason: "an empty database, not an audit store (serve creates it)".into(),
                    });
                }
                meta.insert("format", FORMAT)
                    .map_err(sled_err(&self.path))?;
                self.flush()?;
                Ok(())
            }
        }
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), AuditError> {
        self.db.flush().map(|_| ()).map_err(sled_err(&self.path))
    }

    fn meta_link(&self, key: &str) -> Result<Option<Link>, AuditError> {
        Ok(self.trees[META]
            .get(key)
            .map_err(sled_err(&self.path))?
            .and_then(|v| Link::decode(&v)))
    }

    fn meta_u64(&self, key: &str) -> Result<u64, AuditError> {
        Ok(self.trees[META]
            .get(key)
            .map_err(sled_err(&self.path))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// Where the next record links: the last record, else the retention anchor, else the
    /// start; and the time of the last record (records never go back in time).
    pub fn tail(&self) -> Result<(Link, u64), AuditError> {
        let last = self.trees[RECORDS].last().map_err(sled_err(&self.path))?;
        let link = match last {
            Some((k, v)) => {
                let seq = key_seq(&k).filter(|_| k.len() == 8);
                let hash = split_value(&v).map(|(h, _, _)| h);
                match (seq, hash) {
                    (Some(seq), Some(hash)) => Link { seq, hash },
                    _ => {
                        return Err(AuditError::Corrupt {
                            path: self.path.clone(),
                            reason: "the last record is malformed (run `portcullis audit verify`)"
                                .into(),
                        })
                    }
                }
            }
            None => match (self.meta_link("head")?, self.meta_link("anchor")?) {
                (Some(h), _) => h,
                (None, Some(a)) => a,
                (None, None) => Link {
                    seq: 0,
                    hash: GENESIS,
                },
            },
        };
        let time = self.trees[BY_TIME]
            .last()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| {
                k.get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
            })
            .unwrap_or(0);
        Ok((link, time))
    }

    /// Appends `records` after `tail` as one transaction: assigns sequences and times
    /// (never earlier than `last_ms`), links the chain, and writes the index entries.
    /// Returns the new tail. Nothing is written when it fails.
    pub fn append(
        &self,
        tail: Link,
        last_ms: u64,
        records: &mut [Record],
        now: SystemTime,
    ) -> Result<(Link, u64), AuditError> {
        let mut batches: Vec<Batch> = (0..TREE_NAMES.len()).map(|_| Batch::default()).collect();
        let mut link = tail;
        let ms = millis(now).max(last_ms);
        let time = format_ms(ms);
        let mut bytes = 0u64;
        for r in records.iter_mut() {
            let seq = link.seq + 1;
            r.seq = 0; // the key holds it
            r.time = time.clone();
            let json = serde_json::to_vec(&r).map_err(|e| AuditError::Encode(e.to_string()))?;
            r.seq = seq;
            let hash = record_hash(seq, &link.hash, &json);
            let mut value = Vec::with_capacity(HEADER + json.len());
            value.push(VERSION);
            value.extend_from_slice(&hash);
            value.extend_from_slice(&link.hash);
            value.extend_from_slice(&json);
            bytes += value.len() as u64;
            batches[RECORDS].insert(&seq.to_be_bytes(), value);
            batches[BY_TIME].insert(&time_key(ms, seq), &[]);
            batches[BY_USER].insert(index_key(r.user(), seq), &[]);
            batches[BY_DECISION].insert(index_key(r.decision.as_str(), seq), &[]);
            batches[BY_ENDPOINT].insert(index_key(&r.endpoint, seq), &[]);
            if let Some(o) = &r.object {
                batches[BY_OBJECT].insert(index_key(o, seq), &[]);
            }
            link = Link { seq, hash };
        }
        let total = self.meta_u64("bytes")? + bytes;
        batches[META].insert("head", link.encode());
        batches[META].insert("bytes", &total.to_be_bytes());
        self.apply(&batches)?;
        Ok((link, ms))
    }

    fn apply(&self, batches: &[Batch]) -> Result<(), AuditError> {
        self.trees[..]
            .transaction(|t| {
                for (tree, batch) in t.iter().zip(batches) {
                    tree.apply_batch(batch)?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => AuditError::from_sled(&self.path, e),
                TransactionError::Abort(()) => AuditError::Encode("transaction aborted".into()),
            })
    }

    /// Removes up to `limit` of the oldest records that are older than `max_age` or while
    /// the stored bytes exceed `max_size`, keeping the chain verifiable (the last removed
    /// record becomes the anchor). Returns how many were removed.
    pub fn retain(
        &self,
        max_age: Option<Duration>,
        max_size: Option<u64>,
        now: SystemTime,
        limit: usize,
    ) -> Result<usize, AuditError> {
        let cutoff = max_age
            .map(|a| millis(now).saturating_sub(u64::try_from(a.as_millis()).unwrap_or(u64::MAX)));
        let mut bytes = self.meta_u64("bytes")?;
        let mut batches: Vec<Batch> = (0..TREE_NAMES.len()).map(|_| Batch::default()).collect();
        let mut anchor = None;
        let mut removed = 0;
        for item in self.trees[BY_TIME].iter() {
            if removed >= limit {
                break;
            }
            let (k, _) = item.map_err(sled_err(&self.path))?;
            let ms = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            let too_old = cutoff.is_some_and(|c| ms < c);
            let too_big = max_size.is_some_and(|m| bytes > m);
            if !too_old && !too_big {
                break;
            }
            let Some(seq) = key_seq(&k) else { continue };
            batches[BY_TIME].remove(k.as_ref());
            if let Some(v) = self.trees[RECORDS]
                .get(seq.to_be_bytes())
                .map_err(sled_err(&self.path))?
            {
                if let Some((hash, _, json)) = split_value(&v) {
                    if let Ok(r) = serde_json::from_slice::<Record>(json) {
                        batches[BY_USER].remove(index_key(r.user(), seq));
                        batches[BY_DECISION].remove(index_key(r.decision.as_str(), seq));
                        batches[BY_ENDPOINT].remove(index_key(&r.endpoint, seq));
                        if let Some(o) = &r.object {
                            batches[BY_OBJECT].remove(index_key(o, seq));
                        }
                    }
                    anchor = Some(Link { seq, hash });
                }
                bytes = bytes.saturating_sub(v.len() as u64);
                batches[RECORDS].remove(&seq.to_be_bytes());
            }
            removed += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        if let Some(a) = anchor {
            batches[META].insert("anchor", a.encode());
        }
        batches[META].insert("bytes", &bytes.to_be_bytes());
        self.apply(&batches)?;
        Ok(removed)
    }

    /// The record at `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, AuditError> {
        let Some(v) = self.trees[RECORDS]
            .get(seq.to_be_bytes())
            .map_err(sled_err(&self.path))?
        else {
            return Ok(None);
        };
        self.decode(seq, &v).map(Some)
    }

    fn decode(&self, seq: u64, v: &[u8]) -> Result<Record, AuditError> {
        let bad = |reason: String| AuditError::Corrupt {
            path: self.path.clone(),
            reason: format!("record {seq}: {reason}"),
        };
        let (_, _, json) = split_value(v).ok_or_else(|| bad("malformed header".into()))?;
        let mut r: Record = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        r.seq = seq;
        Ok(r)
    }

    /// Checks the whole chain, oldest first, in constant memory. The error names the first
    /// sequence where the chain is broken and how.
    pub fn verify(&self) -> Result<Verified, AuditError> {
        let anchor = self.meta_link("anchor")?.unwrap_or(Link {
            seq: 0,
            hash: GENESIS,
        });
        let broken = |seq: u64, what: String| AuditError::Tampered { seq, what };
        let mut expect = Link {
            seq: anchor.seq + 1,
            hash: anchor.hash,
        };
        let (mut first, mut last, mut n) = (None, None, 0u64);
        let mut last_hash = anchor.hash;
        for item in self.trees[RECORDS].iter() {
            let (k, v) = item.map_err(sled_err(&self.path))?;
            let seq = match key_seq(&k) {
                Some(s) if k.len() == 8 => s,
                _ => {
                    return Err(broken(
                        expect.seq,
                        format!("malformed key {:02x?}", k.as_ref()),
                    ))
                }
            };
            if seq < expect.seq {
                return Err(broken(
                    seq,
                    format!(
                        "comes before the retention anchor (sequence {})",
                        anchor.seq
                    ),
                ));
            }
            if seq > expect.seq {
                let what = if seq == expect.seq + 1 {
                    "is missing (deleted)".to_string()
                } else {
                    format!("to {} are missing (deleted)", seq - 1)
                };
                return Err(broken(expect.seq, format!("record {} {what}", expect.seq)));
            }
            let Some((hash, prev, json)) = split_value(&v) else {
                return Err(broken(seq, "malformed record header".into()));
            };
            if record_hash(seq, &prev, json) != hash {
                return Err(broken(
                    seq,
                    "content does not match its hash: edited, or moved from another sequence"
                        .into(),
                ));
            }
            if prev != expect.hash {
                return Err(broken(seq, format!("does not link to record {}: records before it were edited, removed or reordered", seq - 1)));
            }
            if serde_json::from_slice::<Record>(json).is_err() {
                return Err(broken(seq, "is not a valid audit record".into()));
            }
            first.get_or_insert(seq);
            last = Some(seq);
            n += 1;
            last_hash = hash;
            expect = Link { seq: seq + 1, hash };
        }
        if let Some(head) = self.meta_link("head")? {
            if head.seq >= expect.seq {
                return Err(broken(
                    expect.seq,
                    format!(
                        "records {} to {} are missing (the store's head is {})",
                        expect.seq, head.seq, head.seq
                    ),
                ));
            }
            if head.seq + 1 == expect.seq && head.hash != last_hash {
                return Err(broken(
                    head.seq,
                    "differs from the store's head hash".into(),
                ));
            }
        }
        Ok(Verified {
            records: n,
            first,
            last,
            head_hash: hex::encode(last_hash),
            anchor: anchor.seq,
        })
    }

    /// Every record, oldest first, with its chain hashes (hex): `(record, prev, hash)`.
    pub fn iter_chain(
        &self,
    ) -> impl Iterator<Item = Result<(Record, String, String), AuditError>> + '_ {
        self.trees[RECORDS].iter().map(move |item| {
            let (k, v) = item.map_err(sled_err(&self.path))?;
            let seq = key_seq(&k).unwrap_or(0);
            let r = self.decode(seq, &v)?;
            let (hash, prev, _) = split_value(&v).unwrap_or(([0; 32], [0; 32], &[]));
            Ok((r, hex::encode(prev), hex::encode(hash)))
        })
    }

    /// Counts by user, decision and endpoint, from the indexes (records are not read).
    pub fn stats(&self) -> Result<Stats, AuditError> {
        let mut s = Stats::default();
        let count = |tree: &Tree,
                     into: &mut std::collections::BTreeMap<String, u64>|
         -> Result<(), AuditError> {
            for item in tree.iter().keys() {
                let k = item.map_err(sled_err(&self.path))?;
                let term = &k[..k.len().saturating_sub(9)];
                *into
                    .entry(String::from_utf8_lossy(term).into_owned())
                    .or_default() += 1;
            }
            Ok(())
        };
        count(&self.trees[BY_USER], &mut s.by_user)?;
        count(&self.trees[BY_DECISION], &mut s.by_decision)?;
        count(&self.trees[BY_ENDPOINT], &mut s.by_endpoint)?;
        s.records = self.trees[RECORDS].len() as u64;
        let ends = |t: &Tree| -> Result<(Option<sled::IVec>, Option<sled::IVec>), AuditError> {
            let f = t.first().map_err(sled_err(&self.path))?.map(|(k, _)| k);
            let l = t.last().map_err(sled_err(&self.path))?.map(|(k, _)| k);
            Ok((f, l))
        };
        let (f, l) = ends(&self.trees[RECORDS])?;
        s.first = f.and_then(|k| key_seq(&k));
        s.last = l.and_then(|k| key_seq(&k));
        let (f, l) = ends(&self.trees[BY_TIME])?;
        let ms = |k: sled::IVec| {
            k.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .map(format_ms)
        };
        s.oldest = f.and_then(ms);
        s.newest = l.and_then(ms);
        s.record_bytes = self.meta_u64("bytes")?;
        s.disk_bytes = self.db.size_on_disk().map_err(sled_err(&self.path))?;
        Ok(s)
    }

    /// Sequence bounds `[lo, hi]` of records written within `[since, until]` (ms): times
    /// never decrease along the sequence, so a time range is a sequence range.
    pub(crate) fn seq_range(
        &self,
        since: Option<u64>,
        until: Option<u64>,
    ) -> Result<Option<(u64, u64)>, AuditError> {
        let t = &self.trees[BY_TIME];
        let lo = t
            .range(time_key(since.unwrap_or(0), 0)..)
            .next()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| key_seq(&k));
        let hi = t
            .range(..=time_key(until.unwrap_or(u64::MAX), u64::MAX))
            .next_back()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| key_seq(&k));
        Ok(match (lo, hi) {
            (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
            _ => None,
        })
    }

    /// Sequences of the records indexed under `term` in index `which`, newest first,
    /// within `[lo, hi]`.
    pub(crate) fn index_seqs(
        &self,
        which: Index,
        term: &str,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = Result<u64, AuditError>> + '_ {
        let tree = &self.trees[which.tree()];
        tree.range(index_key(term, lo)..=index_key(term, hi))
            .keys()
            .rev()
            .map(move |k| {
                k.map_err(sled_err(&self.path))
                    .map(|k| key_seq(&k).unwrap_or(0))
            })
    }

    /// The distinct terms of index `which` that start with `prefix`.
    pub(crate) fn index_terms(
        &self,
        which: Index,
        prefix: &str,
    ) -> Result<Vec<String>, AuditError> {
        let tree = &self.trees[which.tree()];
        let mut out = Vec::new();
        let mut cursor = prefix.as_bytes().to_vec();
        loop {
            let Some(item) = tree.range(cursor.clone()..).keys().next() else {
                break;
            };
            let k = item.map_err(sled_err(&self.path))?;
            if !k.starts_with(prefix.as_bytes()) || k.len() < 9 {
                break;
            }
            let term = k[..k.len() - 9].to_vec();
            out.push(String::from_utf8_lossy(&term).into_owned());
            // Skip every entry of this term: its keys are term ‖ 0 ‖ seq.
            cursor = term;
            cursor.push(1);
            if out.len() > 10_000 {
                break;
            }
        }
        Ok(out)
    }

    /// Sequences of all records, newest first, within `[lo, hi]`.
    pub(crate) fn all_seqs(
        &self,
        lo: u64,
        hi: u64,
    ) -> impl Iterator<Item = Result<u64, AuditError>> + '_ {
        self.trees[RECORDS]
            .range(lo.to_be_bytes()..=hi.to_be_bytes())
            .keys()
            .rev()
            .map(move |k| {
                k.map_err(sled_err(&self.path))
                    .map(|k| key_seq(&k).unwrap_or(0))
            })
    }

    /// Direct access to the underlying trees, for tools and tests that must reach below
    /// the chain (never used by the gateway).
    pub fn raw_tree(&self, name: &str) -> Option<&Tree> {
        TREE_NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| &self.trees[i])
    }
}

/// The secondary indexes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Index {
    User,
    Decision,
    Endpoint,
    Object,
}

impl Index {
    fn tree(self) -> usize {
        match self {
            Index::User => BY_USER,
            Index::Decision => BY_DECISION,
            Index::Endpoint => BY_ENDPOINT,
            Index::Object => BY_OBJECT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Decision;
    use crate::audit::Query;

    fn record(user: &str, endpoint: &str, decision: Decision) -> Record {
        serde_json::from_value(serde_json::json!({
            "request_id": 1, "caller": {"user": user}, "method": "GET", "path": "/x",
            "endpoint": endpoint, "object": "obj", "decision": decision, "status": 200,
            "duration_us": 1
        }))
        .unwrap()
    }

    fn create(dir: &Path) -> Store {
        Store::open(
            dir,
            &OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )
        .unwrap()
    }

    fn fill(store: &Store, n: usize) {
        let (mut tail, mut ms) = store.tail().unwrap();
        for i in 0..n {
            let user = if i % 3 == 0 { "alice" } else { "bob" };
            let endpoint = ["container.create", "container.list", "image.list"][i % 3];
            let mut rs = vec![record(
                user,
                endpoint,
                if i % 2 == 0 {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
            )];
            (tail, ms) = store.append(tail, ms, &mut rs, SystemTime::now()).unwrap();
        }
    }

    fn broken_at(store: &Store) -> u64 {
        match store.verify() {
            Err(AuditError::Tampered { seq, .. }) => seq,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    #[test]
    fn verify_names_the_edited_deleted_or_reordered_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        fill(&store, 6);
        assert_eq!(store.verify().unwrap().records, 6);
        let records = store.raw_tree("records").unwrap();

        // Edited: a byte of record 3's JSON changes.
        let v3 = records.get(3u64.to_be_bytes()).unwrap().unwrap();
        let mut edited = v3.to_vec();
        let at = edited.len() - 5;
        edited[at] ^= 1;
        records.insert(3u64.to_be_bytes(), edited).unwrap();
        assert_eq!(broken_at(&store), 3);
        records.insert(3u64.to_be_bytes(), v3.clone()).unwrap();
        store.verify().unwrap();

        // Reordered: records 4 and 5 swap places.
        let v4 = records.get(4u64.to_be_bytes()).unwrap().unwrap();
        let v5 = records.get(5u64.to_be_bytes()).unwrap().unwrap();
        records.insert(4u64.to_be_bytes(), v5.clone()).unwrap();
        records.insert(5u64.to_be_bytes(), v4.clone()).unwrap();
        assert_eq!(broken_at(&store), 4);
        records.insert(4u64.to_be_bytes(), v4).unwrap();
        records.insert(5u64.to_be_bytes(), v5).unwrap();

        // Deleted: in the middle, and at the end (the head still knows).
        records.remove(2u64.to_be_bytes()).unwrap();
        assert_eq!(broken_at(&store), 2);
    }

    #[test]
    fn deleting_the_newest_record_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        fill(&store, 3);
        store
            .raw_tree("records")
            .unwrap()
            .remove(3u64.to_be_bytes())
            .unwrap();
        assert_eq!(broken_at(&store), 3);
    }

    #[test]
    fn retention_keeps_the_rest_of_the_chain_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        fill(&store, 10);
        let later = SystemTime::now() + Duration::from_secs(3600);
        // By size: keep the newest four records' bytes, in steps of at most three records.
        let records = store.raw_tree("records").unwrap();
        let keep: u64 = (7u64..=10)
            .map(|s| records.get(s.to_be_bytes()).unwrap().unwrap().len() as u64)
            .sum();
        assert_eq!(store.retain(None, Some(keep), later, 3).unwrap(), 3);
        assert_eq!(store.retain(None, Some(keep), later, 100).unwrap(), 3);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.first, v.anchor), (4, Some(7), 6));
        // New records chain on, and age removes everything older than the cutoff.
        fill(&store, 2);
        assert_eq!(store.verify().unwrap().records, 6);
        assert_eq!(
            store
                .retain(Some(Duration::from_secs(60)), None, later, 100)
                .unwrap(),
            6
        );
        fill(&store, 1);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.first, v.anchor), (1, Some(13), 12));
    }

    #[test]
    fn a_store_is_opened_once_and_foreign_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        let err = Store::open(dir.path(), &OpenOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::Locked { .. }), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(store);
        Store::open(dir.path(), &OpenOptions::default()).unwrap();

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("notes.txt"), "hello").unwrap();
        let err = Store::open(
            other.path(),
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert!(matches!(err, AuditError::Foreign { .. }), "{err}");
        assert!(other.path().join("notes.txt").exists());

        let foreign = tempfile::tempdir().unwrap();
        sled::open(foreign.path())
            .unwrap()
            .insert("k", "v")
            .unwrap();
        let err = Store::open(
            foreign.path(),
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("not a portcullis audit store"),
            "{err}"
        );

        let missing = dir.path().join("nope");
        let err = Store::open(&missing, &OpenOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, AuditError::NotFound { .. }), "{err}");
        assert!(!missing.exists());
    }

    #[test]
    fn queries_use_the_indexes_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        fill(&store, 30);
        let seqs =
            |q: Query| -> Vec<u64> { q.run(&store).unwrap().map(|r| r.unwrap().seq).collect() };
        let alice = seqs(Query {
            user: Some("alice".into()),
            limit: Some(3),
            ..Default::default()
        });
        assert_eq!(alice, vec![28, 25, 22]);
        let containers = seqs(Query {
            endpoint: Some("container.*".into()),
            limit: Some(4),
            ..Default::default()
        });
        assert_eq!(containers, vec![29, 28, 26, 25]);
        let denied_bob = seqs(Query {
            user: Some("bob".into()),
            decision: Some(Decision::Deny),
            limit: Some(2),
            ..Default::default()
        });
        assert_eq!(denied_bob, vec![30, 26]);
        let none = seqs(Query {
            since: Some(SystemTime::now() + Duration::from_secs(60)),
            ..Default::default()
        });
        assert!(none.is_empty());
        let stats = store.stats().unwrap();
        assert_eq!(stats.by_user["alice"], 10);
        assert_eq!(stats.by_decision["deny"], 15);
        assert_eq!(stats.by_endpoint["image.list"], 10);
    }
}
