//! The audit store: an embedded sled database, opened by one process at a time.
//!
//! Records are written in *groups* (what the writer took from its queue at once) and
//! stored in *blocks* of consecutive records, so that a group of hundreds of records costs
//! a handful of sled inserts instead of several per record (sled's per-insert cost, not
//! the bytes, bounded the append rate at a few thousand records per second).
//!
//! Trees:
//! - `records`: first sequence of a block (u64, big-endian) → block:
//!   `[2][ms: u64][count: u16]` then per record `[len: u32][hash: 32][prev: 32][JSON]`,
//!   where `hash = sha256(seq ‖ prev ‖ ms ‖ JSON)` and `prev` is the previous record's
//!   hash. `ms` is the write time of the whole group (times never decrease along the
//!   sequence); the JSON holds neither the sequence nor the time (key and header do).
//!   Editing a record breaks its hash; deleting or reordering records breaks the links.
//! - `meta`: the format tag, the `head` (last sequence and hash, written with each group)
//!   and the retention `anchor` (the last removed record's sequence and hash, so the first
//!   remaining record still links to something known), and the records' stored byte count.
//! - `index`: one composite tree, entries per group: `kind ‖ term ‖ 0 ‖ group` → the
//!   offsets (u16) of the group's records with that term, for kinds `u` (user), `d`
//!   (decision), `e` (endpoint), `o` (object); and `t ‖ ms ‖ group` → the group's last
//!   sequence. Scanned backwards, a term's entries list newest first without reading
//!   records.
//!
//! Every group (and every retention step) is one multi-tree transaction: a crash leaves
//! whole groups or nothing, never a record without its index entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Batch, IVec, Tree};

use super::record::{Decision, Record, Stage};
use super::AuditError;

/// Tag stored in `meta` so that a foreign sled database is never taken for a store.
const FORMAT: &[u8] = b"portcullis-audit/2";
const VERSION: u8 = 2;
/// `[version][ms][count]`.
const BLOCK_HEADER: usize = 1 + 8 + 2;
/// `[len][hash][prev]` before each record's JSON.
const ENTRY_HEADER: usize = 4 + 32 + 32;
/// A block closes at this many records or bytes. sled keeps up to 17 values in a leaf
/// and writes a leaf whole when it consolidates it; a leaf above a quarter of a segment
/// (128 KiB) goes to a separate blob file, one per write. 17 blocks of 6 KiB stay below.
const MAX_BLOCK_RECORDS: usize = 256;
const MAX_BLOCK_BYTES: usize = 6 << 10;
/// Most records in one group (index offsets are u16).
pub const MAX_GROUP_RECORDS: usize = 4096;
/// Seeded into the chain before the first record.
const GENESIS: [u8; 32] = [0; 32];

const RECORDS: usize = 0;
const META: usize = 1;
const INDEX: usize = 2;
const TREE_NAMES: [&str; 3] = ["records", "meta", "index"];

const TIME: u8 = b't';

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

/// A record encoded for the store with its index terms. Built where the record is made
/// (the request's task), so the single writer only hashes and copies bytes.
#[derive(Debug, Clone)]
pub struct Encoded {
    json: Vec<u8>,
    user: String,
    decision: Decision,
    endpoint: String,
    object: Option<String>,
}

impl Encoded {
    /// Encodes `r` without its sequence and time (the store's key and block header hold
    /// them).
    pub fn new(r: &Record) -> Result<Self, AuditError> {
        let json = if r.seq == 0 && r.time.is_empty() {
            serde_json::to_vec(r)
        } else {
            let mut bare = r.clone();
            bare.seq = 0;
            bare.time.clear();
            serde_json::to_vec(&bare)
        }
        .map_err(|e| AuditError::Encode(e.to_string()))?;
        Ok(Self {
            json,
            user: r.user().to_owned(),
            decision: r.decision,
            endpoint: r.endpoint.clone(),
            object: r.object.clone(),
        })
    }

    fn terms(&self) -> [Option<(u8, &str)>; 4] {
        [
            Some((b'u', self.user.as_str())),
            Some((b'd', self.decision.as_str())),
            Some((b'e', self.endpoint.as_str())),
            self.object.as_deref().map(|o| (b'o', o)),
        ]
    }
}

/// The parts of a stored record retention needs to find its index entries.
#[derive(serde::Deserialize)]
struct Terms {
    caller: serde_json::Value,
    decision: Decision,
    endpoint: String,
    #[serde(default)]
    object: Option<String>,
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

/// An open audit store. Clones share the same open database (sled handles), so the
/// gateway's admin listener reads the store its writer appends to.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    trees: Vec<Tree>,
}

/// The result of a successful `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Records the trail itself says were not written (the sum of its `audit.dropped`
    /// records).
    #[serde(default)]
    pub lost: u64,
    /// Requests forwarded whose outcome is not recorded (a decision record without its
    /// outcome: in flight, or the gateway stopped before it could write it).
    #[serde(default)]
    pub unfinished: u64,
}

/// Decision records without an outcome held at most while verifying; beyond, they are
/// only counted (an outcome of one of them is then not matched).
const MAX_OPEN_DECISIONS: usize = 1 << 20;

/// The gaps the trail knows of, gathered along the chain.
#[derive(Default)]
struct Gaps {
    lost: u64,
    decided: std::collections::HashSet<u64>,
    uncounted: u64,
}

impl Gaps {
    fn note(&mut self, seq: u64, r: &Record) {
        if r.endpoint == "audit.dropped" {
            let n = r.details.as_ref().and_then(|d| d.get("lost"));
            self.lost += n.and_then(serde_json::Value::as_u64).unwrap_or(1);
        }
        match r.stage {
            Some(Stage::Decision) if self.decided.len() < MAX_OPEN_DECISIONS => {
                self.decided.insert(seq);
            }
            Some(Stage::Decision) => self.uncounted += 1,
            Some(Stage::Outcome) => {
                if let Some(d) = r.decided {
                    self.decided.remove(&d);
                }
            }
            None => {}
        }
    }
}

/// Counts by user, decision and endpoint.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
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
    pub by_user: BTreeMap<String, u64>,
    /// Records per decision.
    pub by_decision: BTreeMap<String, u64>,
    /// Records per endpoint.
    pub by_endpoint: BTreeMap<String, u64>,
}

fn sled_err(path: &Path) -> impl Fn(sled::Error) -> AuditError + '_ {
    move |e| AuditError::from_sled(path, e)
}

fn index_key(kind: u8, term: &str, group: u64) -> Vec<u8> {
    // The terminator keeps "bob" from matching "bobby"; a NUL inside a term (never in real
    // user names or endpoints) is replaced so the key stays unambiguous. Queries filter on
    // the record itself as well.
    let mut k = Vec::with_capacity(term.len() + 10);
    k.push(kind);
    k.extend(term.bytes().map(|b| if b == 0 { b'?' } else { b }));
    k.push(0);
    k.extend_from_slice(&group.to_be_bytes());
    k
}

fn time_key(ms: u64, group: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = TIME;
    k[1..9].copy_from_slice(&ms.to_be_bytes());
    k[9..].copy_from_slice(&group.to_be_bytes());
    k
}

fn key_seq(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8)?;
    Some(u64::from_be_bytes(key[tail..].try_into().ok()?))
}

fn be_u64(b: &[u8]) -> Option<u64> {
    b.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

/// `sha256(seq ‖ prev ‖ ms ‖ json)`.
pub fn record_hash(seq: u64, prev: &[u8; 32], ms: u64, json: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(seq.to_be_bytes());
    h.update(prev);
    h.update(ms.to_be_bytes());
    h.update(json);
    h.finalize().into()
}

/// One record inside a block.
pub struct Entry<'a> {
    /// Its hash.
    pub hash: [u8; 32],
    /// The previous record's hash, as stored.
    pub prev: [u8; 32],
    /// The record without sequence and time.
    pub json: &'a [u8],
}

/// A parsed block: its time and records (`None`: malformed).
pub fn parse_block(v: &[u8]) -> Option<(u64, Vec<Entry<'_>>)> {
    if v.len() < BLOCK_HEADER || v[0] != VERSION {
        return None;
    }
    let ms = be_u64(&v[1..])?;
    let count = u16::from_be_bytes([v[9], v[10]]) as usize;
    let mut entries = Vec::with_capacity(count);
    let mut at = BLOCK_HEADER;
    for _ in 0..count {
        let head = v.get(at..at + ENTRY_HEADER)?;
        let len = u32::from_be_bytes(head[..4].try_into().ok()?) as usize;
        let json = v.get(at + ENTRY_HEADER..at + ENTRY_HEADER + len)?;
        entries.push(Entry {
            hash: head[4..36].try_into().ok()?,
            prev: head[36..68].try_into().ok()?,
            json,
        });
        at += ENTRY_HEADER + len;
    }
    (at == v.len()).then_some((ms, entries))
}

/// The number of records a block says it holds.
fn block_count(v: &[u8]) -> Option<u64> {
    (v.len() >= BLOCK_HEADER && v[0] == VERSION).then(|| u16::from_be_bytes([v[9], v[10]]) as u64)
}

/// One record of [`Store::iter_chain`]: the record and its chain hashes (hex), `(record,
/// prev, hash)`, or why it could not be read.
pub type ChainItem = Result<(Record, String, String), AuditError>;

/// Milliseconds since the epoch.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Sequences (newest first) from index values, kept within `[lo, hi]`; stops at the first
/// below `lo` (the stream is descending).
fn bounded(
    it: impl Iterator<Item = Result<Vec<u64>, AuditError>>,
    lo: u64,
    hi: u64,
) -> impl Iterator<Item = Result<u64, AuditError>> {
    it.flat_map(|r| match r {
        Ok(v) => v.into_iter().rev().map(Ok).collect::<Vec<_>>(),
        Err(e) => vec![Err(e)],
    })
    .filter(move |r| !matches!(r, Ok(s) if *s > hi))
    .take_while(move |r| !matches!(r, Ok(s) if *s < lo))
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
        let store = Store {
            path: path.to_owned(),
            trees: Vec::new(),
            db,
        };
        // Check the format before creating trees, so a foreign database is left as found.
        store.check_format(opts.create)?;
        let trees = TREE_NAMES
            .iter()
            .map(|n| store.db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_err(path))?;
        Ok(Store { trees, ..store })
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
        let meta = self.db.open_tree("meta").map_err(sled_err(&self.path))?;
        match meta.get("format").map_err(sled_err(&self.path))? {
            Some(f) if f.as_ref() == FORMAT => Ok(()),
            Some(f) => Err(AuditError::Foreign {
                path: self.path.clone(),
                reason: format!(
                    "unsupported format {:?} (this portcullis reads {:?})",
                    String::from_utf8_lossy(&f),
                    String::from_utf8_lossy(FORMAT)
                ),
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
            .and_then(|v| be_u64(&v))
            .unwrap_or(0))
    }

    fn corrupt(&self, reason: String) -> AuditError {
        AuditError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Where the next record links: the last record, else the retention anchor, else the
    /// start; and the time of the last record (records never go back in time).
    pub fn tail(&self) -> Result<(Link, u64), AuditError> {
        let last = self.trees[RECORDS].last().map_err(sled_err(&self.path))?;
        match last {
            Some((k, v)) => {
                let first = key_seq(&k).filter(|_| k.len() == 8);
                let parsed = parse_block(&v);
                match (first, parsed) {
                    (Some(first), Some((ms, entries))) if !entries.is_empty() => {
                        let n = entries.len() as u64;
                        let hash = entries[entries.len() - 1].hash;
                        Ok((
                            Link {
                                seq: first + n - 1,
                                hash,
                            },
                            ms,
                        ))
                    }
                    _ => Err(self.corrupt(
                        "the last block of records is malformed (run `portcullis audit verify`)"
                            .into(),
                    )),
                }
            }
            None => {
                let link = match (self.meta_link("head")?, self.meta_link("anchor")?) {
                    (Some(h), _) => h,
                    (None, Some(a)) => a,
                    (None, None) => Link {
                        seq: 0,
                        hash: GENESIS,
                    },
                };
                Ok((link, 0))
            }
        }
    }

    /// Appends `records` after `tail` as one group in one transaction: assigns sequences
    /// and the time (never earlier than `last_ms`), links the chain, and writes the
    /// index entries. Returns the new tail and the group's time. Nothing is written when
    /// it fails. At most [`MAX_GROUP_RECORDS`] records.
    pub fn append(
        &self,
        tail: Link,
        last_ms: u64,
        records: &[Encoded],
        now: SystemTime,
    ) -> Result<(Link, u64), AuditError> {
        if records.len() > MAX_GROUP_RECORDS {
            return Err(AuditError::Encode(format!(
                "a group of {} records (at most {MAX_GROUP_RECORDS})",
                records.len()
            )));
        }
        let ms = millis(now).max(last_ms);
        if records.is_empty() {
            return Ok((tail, ms));
        }
        let group = tail.seq + 1;
        let mut blocks = Batch::default();
        let mut index = Batch::default();
        let mut meta = Batch::default();
        let mut terms: BTreeMap<(u8, &str), Vec<u8>> = BTreeMap::new();
        let mut link = tail;
        let mut bytes = 0u64;
        let mut rest = records;
        while !rest.is_empty() {
            // Fill one block.
            let mut take = 0;
            let mut size = BLOCK_HEADER;
            while take < rest.len() && take < MAX_BLOCK_RECORDS {
                let add = ENTRY_HEADER + rest[take].json.len();
                if take > 0 && size + add > MAX_BLOCK_BYTES {
                    break;
                }
                size += add;
                take += 1;
            }
            let (now_block, later) = rest.split_at(take);
            rest = later;
            let first = link.seq + 1;
            let mut value = Vec::with_capacity(size);
            value.push(VERSION);
            value.extend_from_slice(&ms.to_be_bytes());
            value.extend_from_slice(&(take as u16).to_be_bytes());
            for r in now_block {
                let seq = link.seq + 1;
                let hash = record_hash(seq, &link.hash, ms, &r.json);
                value.extend_from_slice(&(r.json.len() as u32).to_be_bytes());
                value.extend_from_slice(&hash);
                value.extend_from_slice(&link.hash);
                value.extend_from_slice(&r.json);
                let offset = ((seq - group) as u16).to_be_bytes();
                for (kind, term) in r.terms().into_iter().flatten() {
                    terms
                        .entry((kind, term))
                        .or_default()
                        .extend_from_slice(&offset);
                }
                link = Link { seq, hash };
            }
            bytes += value.len() as u64;
            blocks.insert(&first.to_be_bytes(), value);
        }
        for ((kind, term), offsets) in terms {
            index.insert(index_key(kind, term, group), offsets);
        }
        index.insert(&time_key(ms, group), &link.seq.to_be_bytes());
        let total = self.meta_u64("bytes")? + bytes;
        meta.insert("head", link.encode());
        meta.insert("bytes", &total.to_be_bytes());
        self.apply(&[blocks, meta, index])?;
        Ok((link, ms))
    }

    fn apply(&self, batches: &[Batch; 3]) -> Result<(), AuditError> {
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

    /// Removes the oldest groups while they are older than `max_age` or the stored bytes
    /// exceed `max_size`, until at least `limit` records are gone, keeping the chain
    /// verifiable (the last removed record becomes the anchor). Returns how many records
    /// were removed.
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
        let (mut blocks, mut index, mut meta) =
            (Batch::default(), Batch::default(), Batch::default());
        let mut anchor = None;
        let mut removed = 0;
        for item in self.trees[INDEX].range([TIME]..[TIME + 1]) {
            if removed >= limit {
                break;
            }
            let (k, v) = item.map_err(sled_err(&self.path))?;
            let ms = be_u64(&k[1..]).unwrap_or(0);
            let too_old = cutoff.is_some_and(|c| ms < c);
            let too_big = max_size.is_some_and(|m| bytes > m);
            if !too_old && !too_big {
                break;
            }
            let (Some(group), Some(last)) = (key_seq(&k), be_u64(&v)) else {
                continue;
            };
            index.remove(k.as_ref());
            let mut keys = std::collections::BTreeSet::new();
            for item in self.trees[RECORDS].range(group.to_be_bytes()..=last.to_be_bytes()) {
                let (bk, bv) = item.map_err(sled_err(&self.path))?;
                let Some(first) = key_seq(&bk) else { continue };
                if let Some((_, entries)) = parse_block(&bv) {
                    for (i, e) in entries.iter().enumerate() {
                        if let Ok(t) = serde_json::from_slice::<Terms>(e.json) {
                            let user = t.caller.get("user").and_then(|u| u.as_str());
                            keys.insert(index_key(b'u', user.unwrap_or(""), group));
                            keys.insert(index_key(b'd', t.decision.as_str(), group));
                            keys.insert(index_key(b'e', &t.endpoint, group));
                            if let Some(o) = &t.object {
                                keys.insert(index_key(b'o', o, group));
                            }
                        }
                        anchor = Some(Link {
                            seq: first + i as u64,
                            hash: e.hash,
                        });
                        removed += 1;
                    }
                }
                bytes = bytes.saturating_sub(bv.len() as u64);
                blocks.remove(bk);
            }
            for k in keys {
                index.remove(k);
            }
        }
        if removed == 0 {
            return Ok(0);
        }
        if let Some(a) = anchor {
            meta.insert("anchor", a.encode());
        }
        meta.insert("bytes", &bytes.to_be_bytes());
        self.apply(&[blocks, meta, index])?;
        Ok(removed)
    }

    /// The block holding `seq`: its first sequence and bytes.
    fn block_of(&self, seq: u64) -> Result<Option<(u64, IVec)>, AuditError> {
        let found = self.trees[RECORDS]
            .range(..=seq.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(sled_err(&self.path))?;
        Ok(found.and_then(|(k, v)| key_seq(&k).map(|first| (first, v))))
    }

    /// The record at `seq`, if present.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, AuditError> {
        let Some((first, v)) = self.block_of(seq)? else {
            return Ok(None);
        };
        let Some((ms, entries)) = parse_block(&v) else {
            return Err(self.corrupt(format!("block {first}: malformed")));
        };
        match entries.get((seq - first) as usize) {
            Some(e) => self.decode(seq, ms, e.json).map(Some),
            None => Ok(None),
        }
    }

    fn decode(&self, seq: u64, ms: u64, json: &[u8]) -> Result<Record, AuditError> {
        let mut r: Record =
            serde_json::from_slice(json).map_err(|e| self.corrupt(format!("record {seq}: {e}")))?;
        r.seq = seq;
        r.time = format_ms(ms);
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
        let mut last_ms = 0;
        let mut gaps = Gaps::default();
        for item in self.trees[RECORDS].iter() {
            let (k, v) = item.map_err(sled_err(&self.path))?;
            let block = match key_seq(&k) {
                Some(s) if k.len() == 8 => s,
                _ => {
                    return Err(broken(
                        expect.seq,
                        format!("malformed key {:02x?}", k.as_ref()),
                    ))
                }
            };
            if block < expect.seq {
                let what = if block <= anchor.seq {
                    format!(
                        "comes before the retention anchor (sequence {})",
                        anchor.seq
                    )
                } else {
                    "overlaps the records before it".into()
                };
                return Err(broken(block, what));
            }
            if block > expect.seq {
                let what = if block == expect.seq + 1 {
                    "is missing (deleted)".to_string()
                } else {
                    format!("to {} are missing (deleted)", block - 1)
                };
                return Err(broken(expect.seq, format!("record {} {what}", expect.seq)));
            }
            let Some((ms, entries)) = parse_block(&v) else {
                return Err(broken(block, "malformed block of records".into()));
            };
            if entries.is_empty() {
                return Err(broken(block, "an empty block of records".into()));
            }
            for (i, e) in entries.iter().enumerate() {
                let seq = block + i as u64;
                if record_hash(seq, &e.prev, ms, e.json) != e.hash {
                    return Err(broken(
                        seq,
                        "content does not match its hash: edited, or moved from another sequence"
                            .into(),
                    ));
                }
                if e.prev != expect.hash {
                    return Err(broken(seq, format!("does not link to record {}: records before it were edited, removed or reordered", seq - 1)));
                }
                if ms < last_ms {
                    return Err(broken(seq, "is older than the record before it".into()));
                }
                let Ok(r) = serde_json::from_slice::<Record>(e.json) else {
                    return Err(broken(seq, "is not a valid audit record".into()));
                };
                gaps.note(seq, &r);
                first.get_or_insert(seq);
                last = Some(seq);
                n += 1;
                last_hash = e.hash;
                last_ms = ms;
                expect = Link {
                    seq: seq + 1,
                    hash: e.hash,
                };
            }
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
            lost: gaps.lost,
            unfinished: gaps.decided.len() as u64 + gaps.uncounted,
        })
    }

    /// Every record, oldest first, with its chain hashes (hex): `(record, prev, hash)`.
    /// Holds one block at a time.
    pub fn iter_chain(&self) -> impl Iterator<Item = ChainItem> + '_ {
        self.trees[RECORDS].iter().flat_map(move |item| {
            let block = || -> Result<Vec<ChainItem>, AuditError> {
                let (k, v) = item.map_err(sled_err(&self.path))?;
                let first = key_seq(&k).unwrap_or(0);
                let (ms, entries) = parse_block(&v)
                    .ok_or_else(|| self.corrupt(format!("block {first}: malformed")))?;
                Ok(entries
                    .iter()
                    .enumerate()
                    .map(|(i, e)| {
                        let r = self.decode(first + i as u64, ms, e.json)?;
                        Ok((r, hex::encode(e.prev), hex::encode(e.hash)))
                    })
                    .collect())
            };
            block().unwrap_or_else(|e| vec![Err(e)])
        })
    }

    /// Counts by user, decision and endpoint, from the index (records are not read).
    pub fn stats(&self) -> Result<Stats, AuditError> {
        let mut s = Stats::default();
        for (kind, into) in [
            (b'u', &mut s.by_user),
            (b'd', &mut s.by_decision),
            (b'e', &mut s.by_endpoint),
        ] {
            for item in self.trees[INDEX].range([kind]..[kind + 1]) {
                let (k, v) = item.map_err(sled_err(&self.path))?;
                let term = &k[1..k.len().saturating_sub(9).max(1)];
                *into
                    .entry(String::from_utf8_lossy(term).into_owned())
                    .or_default() += v.len() as u64 / 2;
            }
        }
        s.records = s.by_decision.values().sum();
        let first = self.trees[RECORDS].first().map_err(sled_err(&self.path))?;
        s.first = first.and_then(|(k, _)| key_seq(&k));
        let last = self.trees[RECORDS].last().map_err(sled_err(&self.path))?;
        s.last = last.and_then(|(k, v)| Some(key_seq(&k)? + block_count(&v)?.checked_sub(1)?));
        let times = &self.trees[INDEX];
        let ms = |k: IVec| be_u64(&k[1..]).map(format_ms);
        s.oldest = times
            .range([TIME]..[TIME + 1])
            .next()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| ms(k));
        s.newest = times
            .range([TIME]..[TIME + 1])
            .next_back()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| ms(k));
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
        let t = &self.trees[INDEX];
        let lo = t
            .range(time_key(since.unwrap_or(0), 0).to_vec()..vec![TIME + 1])
            .next()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(k, _)| key_seq(&k));
        let hi = t
            .range(time_key(0, 0)..=time_key(until.unwrap_or(u64::MAX), u64::MAX))
            .next_back()
            .transpose()
            .map_err(sled_err(&self.path))?
            .and_then(|(_, v)| be_u64(&v));
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
        let kind = which.kind();
        let entries = self.trees[INDEX]
            .range(index_key(kind, term, 0)..=index_key(kind, term, hi))
            .rev()
            .map(move |item| {
                let (k, v) = item.map_err(sled_err(&self.path))?;
                let group = key_seq(&k).unwrap_or(0);
                Ok(v.chunks_exact(2)
                    .map(|c| group + u16::from_be_bytes([c[0], c[1]]) as u64)
                    .collect())
            });
        bounded(entries, lo, hi)
    }

    /// The distinct terms of index `which` that start with `prefix`.
    pub(crate) fn index_terms(
        &self,
        which: Index,
        prefix: &str,
    ) -> Result<Vec<String>, AuditError> {
        let tree = &self.trees[INDEX];
        let mut start = vec![which.kind()];
        start.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        let mut cursor = start.clone();
        loop {
            let Some(item) = tree.range(cursor.clone()..).keys().next() else {
                break;
            };
            let k = item.map_err(sled_err(&self.path))?;
            if !k.starts_with(&start) || k.len() < 10 {
                break;
            }
            let term = k[..k.len() - 9].to_vec();
            out.push(String::from_utf8_lossy(&term[1..]).into_owned());
            // Skip every entry of this term: its keys are kind ‖ term ‖ 0 ‖ group.
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
        let blocks = self.trees[RECORDS]
            .range(..=hi.to_be_bytes())
            .rev()
            .map(move |item| {
                let (k, v) = item.map_err(sled_err(&self.path))?;
                let first = key_seq(&k).unwrap_or(0);
                Ok((first..first + block_count(&v).unwrap_or(0)).collect())
            });
        bounded(blocks, lo, hi)
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
    fn kind(self) -> u8 {
        match self {
            Index::User => b'u',
            Index::Decision => b'd',
            Index::Endpoint => b'e',
            Index::Object => b'o',
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
            let r = record(
                user,
                endpoint,
                if i % 2 == 0 {
                    Decision::Allow
                } else {
                    Decision::Deny
                },
            );
            let rs = [Encoded::new(&r).unwrap()];
            (tail, ms) = store.append(tail, ms, &rs, SystemTime::now()).unwrap();
        }
    }

    fn broken_at(store: &Store) -> u64 {
        match store.verify() {
            Err(AuditError::Tampered { seq, .. }) => seq,
            other => panic!("expected a broken chain, got {other:?}"),
        }
    }

    /// A request recorded in two: its decision, a read in between, its outcome; then a
    /// decision whose outcome never came, and a report of lost records.
    fn two_stage(store: &Store) {
        let mut decision = record("alice", "container.create", Decision::Allow);
        decision.method = "POST".into();
        decision.stage = Some(Stage::Decision);
        decision.status = 0;
        decision.details = Some(serde_json::json!({"Image": "busybox"}));
        decision.plugins = vec![serde_json::from_value(serde_json::json!(
            {"plugin": "labels", "hook": "request", "verdict": "patch"}
        ))
        .unwrap()];
        let read = record("bob", "container.list", Decision::Allow);
        let mut outcome = decision.clone();
        outcome.stage = Some(Stage::Outcome);
        outcome.decided = Some(1);
        outcome.status = 201;
        outcome.details = None;
        outcome.plugins = Vec::new();
        let mut lost = record("portcullis", "audit.dropped", Decision::Error);
        lost.details = Some(serde_json::json!({"lost": 7}));
        let (tail, ms) = store.tail().unwrap();
        let rs: Vec<Encoded> = [&decision, &read, &outcome, &decision, &lost]
            .into_iter()
            .map(|r| Encoded::new(r).unwrap())
            .collect();
        store.append(tail, ms, &rs, SystemTime::now()).unwrap();
    }

    #[test]
    fn a_request_recorded_in_two_is_listed_and_shown_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        two_stage(&store);
        let listed: Vec<Record> = Query::default()
            .run(&store)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let seqs: Vec<u64> = listed.iter().map(|r| r.seq).collect();
        // Newest first: the report, the unanswered decision, the joined request, the read.
        assert_eq!(seqs, [5, 4, 3, 2]);
        let joined = &listed[2];
        assert_eq!((joined.status, joined.decided), (201, Some(1)));
        assert_eq!(
            joined.details,
            Some(serde_json::json!({"Image": "busybox"}))
        );
        assert_eq!(joined.plugins.len(), 1);
        assert_eq!(listed[1].stage, Some(Stage::Decision));
        let shown = crate::audit::query::request(&store, 3).unwrap().unwrap();
        assert_eq!(&shown, joined);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.lost, v.unfinished), (5, 7, 1));
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

    /// The sequences `q` finds, in the order it finds them.
    fn found(store: &Store, q: Query) -> Vec<u64> {
        q.run(store).unwrap().map(|r| r.unwrap().seq).collect()
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
        // sled's flusher thread holds the database (and its file lock) for a moment after
        // the last handle is dropped: the lock must be released, not at once.
        let reopened = (0..100).find_map(|_| {
            let r = Store::open(dir.path(), &OpenOptions::default()).ok();
            if r.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r
        });
        assert!(
            reopened.is_some(),
            "the lock was not released after the store was dropped"
        );

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

    /// Appends `n` records as one group (several blocks when large).
    fn group(store: &Store, n: usize, user: &str) {
        let (tail, ms) = store.tail().unwrap();
        let rs: Vec<Encoded> = (0..n)
            .map(|i| {
                let mut r = record(user, "container.list", Decision::Allow);
                r.object = Some(format!("o{}", i % 7));
                Encoded::new(&r).unwrap()
            })
            .collect();
        store.append(tail, ms, &rs, SystemTime::now()).unwrap();
    }

    #[test]
    fn groups_span_blocks_and_stay_verifiable_queryable_and_retainable() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        group(&store, 100, "alice");
        group(&store, 1, "bob");
        group(&store, 300, "carol");
        let records = store.raw_tree("records").unwrap();
        assert!(records.len() > 3, "large groups are split into blocks");
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.first, v.last), (401, Some(1), Some(401)));
        assert_eq!(store.get(101).unwrap().unwrap().user(), "bob");
        assert_eq!(store.get(250).unwrap().unwrap().seq, 250);
        assert!(store.get(402).unwrap().is_none());
        let seqs = |q: Query| found(&store, q);
        let alice = seqs(Query {
            user: Some("alice".into()),
            limit: Some(3),
            ..Default::default()
        });
        assert_eq!(alice, vec![100, 99, 98]);
        let o3 = seqs(Query {
            object: Some("o3".into()),
            ..Default::default()
        });
        assert_eq!(o3.len(), 14 + 43);
        assert!(o3.windows(2).all(|w| w[0] > w[1]), "newest first");
        assert_eq!(seqs(Query::default()).len(), 401);
        let stats = store.stats().unwrap();
        assert_eq!((stats.records, stats.last), (401, Some(401)));
        assert_eq!(stats.by_user["carol"], 300);

        // An edit in the middle of a block names that record.
        let (k, v) = records
            .range(..=200u64.to_be_bytes())
            .next_back()
            .unwrap()
            .unwrap();
        let first = key_seq(&k).unwrap();
        let (_, entries) = parse_block(&v).unwrap();
        let offset = (200 - first) as usize;
        let at = v.len()
            - entries[offset + 1..]
                .iter()
                .map(|e| e.json.len() + ENTRY_HEADER)
                .sum::<usize>()
            - 3;
        let mut edited = v.to_vec();
        edited[at] ^= 1;
        records.insert(&k, edited).unwrap();
        assert_eq!(broken_at(&store), 200);
        records.insert(&k, v).unwrap();

        // Retention removes whole groups, oldest first, and the rest still verifies.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(store.retain(None, Some(1), later, 50).unwrap(), 100);
        let v = store.verify().unwrap();
        assert_eq!((v.records, v.first, v.anchor), (301, Some(101), 100));
        assert!(seqs(Query {
            user: Some("alice".into()),
            ..Default::default()
        })
        .is_empty());
        assert_eq!(store.stats().unwrap().by_user.get("alice"), None);
    }

    #[test]
    fn queries_use_the_indexes_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = create(dir.path());
        fill(&store, 30);
        let seqs = |q: Query| found(&store, q);
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
