//! `[audit]`: where the audit store lives, how durable a record is before the client gets
//! its answer, how long records are kept, and what happens when the disk is full.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// When a record is on disk, relative to the response it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The response is released only after its record is flushed to disk (fsync). A crash
    /// never loses the record of a request whose answer the client received.
    Sync,
    /// Records are committed in groups and flushed within `batch_window`; the response does
    /// not wait. A crash can lose the last few milliseconds of records.
    #[default]
    Batch,
    /// Fire and forget: flushed about once a second; when the queue is full the record is
    /// dropped (counted, and a marker record says how many were lost) instead of waiting.
    Async,
}

/// What the gateway does once the store cannot write (full disk, I/O error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFullDisk {
    /// Refuse new requests with 503 and say why, until the store writes again.
    #[default]
    Deny,
    /// Keep serving; records that cannot be written are lost (logged as errors).
    Allow,
}

/// The `[audit]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The store's directory (created if missing); relative to the config file.
    pub path: PathBuf,
    /// `sync`, `batch` (default) or `async`.
    #[serde(default)]
    pub durability: Durability,
    /// Batch mode: the longest a committed record waits for its flush (default 5ms).
    #[serde(default = "default_batch_window", with = "humantime_serde")]
    pub batch_window: Duration,
    /// Records waiting for the writer at most; beyond, `sync`/`batch` requests wait and
    /// `async` records are dropped (default 4096).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Remove records older than this (e.g. `"90d"`); default: kept forever.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Remove the oldest records while the records' stored bytes exceed this (e.g.
    /// `"10GiB"`); indexes and the store's own overhead come on top.
    #[serde(default)]
    pub max_size: Option<bytesize::ByteSize>,
    /// `deny` (default) or `allow`, see [`OnFullDisk`].
    #[serde(default)]
    pub on_full_disk: OnFullDisk,
    /// Memory for the store's page cache (default 64MiB).
    #[serde(default = "default_cache")]
    pub cache: bytesize::ByteSize,
    /// Free space the store's filesystem must keep (default 64MiB): below it, records are
    /// no longer written, so the store never meets a full disk (`on_full_disk` says whether
    /// requests are refused meanwhile), and what was not written is counted into an
    /// `audit.dropped` record, for which the margin leaves room.
    #[serde(default = "default_space_left")]
    pub space_left: bytesize::ByteSize,
}

fn default_batch_window() -> Duration {
    Duration::from_millis(5)
}
fn default_queue() -> usize {
    4096
}
fn default_cache() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}
fn default_space_left() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(64)
}

impl AuditConfig {
    /// A configuration with every default, for a store at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::default(),
            batch_window: default_batch_window(),
            queue: default_queue(),
            max_age: None,
            max_size: None,
            on_full_disk: OnFullDisk::default(),
            cache: default_cache(),
            space_left: default_space_left(),
        }
    }

    /// The store directory, resolved against the config file's directory.
    pub fn store_path(&self, base_dir: &Path) -> PathBuf {
        base_dir.join(&self.path)
    }

    /// Checks what types cannot: returns the offending key and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("audit.path", "must name a directory".into()));
        }
        if self.queue == 0 {
            return Err(("audit.queue", "must be at least 1".into()));
        }
        if self.batch_window.is_zero() || self.batch_window > Duration::from_secs(10) {
            return Err(("audit.batch_window", "must be between 1ms and 10s".into()));
        }
        if self.max_age.is_some_and(|d| d < Duration::from_secs(60)) {
            return Err(("audit.max_age", "must be at least 1m".into()));
        }
        if self.max_size.is_some_and(|s| s.as_u64() < 1 << 20) {
            return Err(("audit.max_size", "must be at least 1MiB".into()));
        }
        // The store writes its log in segments of 512 KiB and flushes several at once.
        if self.space_left.as_u64() < 4 << 20 {
            return Err(("audit.space_left", "must be at least 4MiB".into()));
        }
        Ok(())
    }
}
