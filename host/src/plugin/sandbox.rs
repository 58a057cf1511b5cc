//! The sandbox one plugin call runs in: a store with a memory cap, a WASI context that grants
//! nothing unless the configuration says so (no files, no network, no environment, a frozen
//! clock), a bounded stderr capture for panic messages, and the `host.log` import.

use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::portcullis::plugin::host;
use crate::config::Grants;

/// Lines a plugin may log per call; more are dropped, so a chatty plugin cannot flood logs.
const MAX_LOG_LINES: u32 = 64;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 1024;
/// Bytes of a plugin's stderr kept (it holds the panic message of a Rust guest).
const STDERR_CAPTURE: usize = 4096;

/// Per-call store data.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    stderr: MemoryOutputPipe,
    plugin: String,
    request_id: u64,
    log_lines: u32,
}

impl State {
    /// Fresh state for one call of `plugin`.
    pub fn new(plugin: &str, request_id: u64, memory_limit: usize, grants: &Grants) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut b = WasiCtx::builder();
        b.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if !grants.clock {
            // A policy's decision should depend on the request, not on when it runs.
            b.wall_clock(FrozenClock).monotonic_clock(FrozenClock);
        }
        for name in &grants.env {
            if let Ok(value) = std::env::var(name) {
                b.env(name, value);
            }
        }
        Self {
            wasi: b.build(),
            table: ResourceTable::new(),
            limits: MemoryCap {
                limit: memory_limit,
                exceeded: false,
            },
            stderr,
            plugin: plugin.to_owned(),
            request_id,
            log_lines: 0,
        }
    }

    /// The memory limiter for `Store::limiter`.
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Whether the plugin tried to grow memory past its cap.
    pub fn memory_exceeded(&self) -> bool {
        self.limits.exceeded
    }

    /// What the plugin wrote to stderr (e.g. a panic message), trimmed.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host::Host for State {
    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return Ok(());
        }
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let (plugin, id) = (self.plugin.as_str(), self.request_id);
        match level {
            host::Level::Trace => tracing::trace!(plugin, id, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, id, "{message}"),
            host::Level::Info => tracing::info!(plugin, id, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, id, "{message}"),
            host::Level::Error => tracing::error!(plugin, id, "{message}"),
        }
        Ok(())
    }
}

/// Caps linear memory; remembers that the cap was hit so the failure can be named.
struct MemoryCap {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A clock stuck at the epoch, for plugins not granted a clock.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}
