//! The sandbox one plugin call runs in: a store with a memory cap, a WASI context that grants
//! nothing unless the configuration says so (no files, no network, no environment, a frozen
//! clock), a bounded stderr capture for panic messages, the `host.log` import, and the
//! deadline of the current call.

use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use crate::config::Grants;
use crate::model::Level;

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
    clock: RunClock,
}

impl State {
    /// Fresh state for one call of `plugin`.
    pub fn new(
        plugin: &str,
        request_id: u64,
        memory_limit: usize,
        grants: &Grants,
        timeout: Duration,
    ) -> Self {
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
            clock: RunClock::new(timeout),
        }
    }

    /// Starts the next call on a reused instance: a new deadline, a new log budget.
    pub fn start_call(&mut self, request_id: u64, timeout: Duration) {
        self.request_id = request_id;
        self.log_lines = 0;
        self.clock = RunClock::new(timeout);
    }

    /// Called at each epoch tick while the plugin runs (`Store::epoch_deadline_callback`).
    pub fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.clock.tick()
    }

    /// The memory limiter for `Store::limiter`.
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }

    /// Whether the plugin tried to grow memory past its cap.
    pub fn memory_exceeded(&self) -> bool {
        self.limits.exceeded
    }

    /// Whether the plugin wrote anything to stderr.
    pub fn wrote_stderr(&self) -> bool {
        !self.stderr.contents().is_empty()
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

impl State {
    /// A line from the plugin's `host.log` import, tagged with the plugin's name and the
    /// request id; bounded in count and length.
    pub fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
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
            Level::Trace => tracing::trace!(plugin, id, "{message}"),
            Level::Debug => tracing::debug!(plugin, id, "{message}"),
            Level::Info => tracing::info!(plugin, id, "{message}"),
            Level::Warn => tracing::warn!(plugin, id, "{message}"),
            Level::Error => tracing::error!(plugin, id, "{message}"),
        }
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

/// Epoch granularity: deadlines are checked this often.
pub const TICK: Duration = Duration::from_millis(1);

/// The deadline of one call, counted in time the plugin *runs*: under load a call is
/// descheduled between epoch ticks, and waiting for a CPU must not make a well-behaved plugin
/// time out. A wall-clock backstop of [`WALL_FACTOR`] × the timeout bounds it all the same.
pub(super) struct RunClock {
    timeout: Duration,
    started: Instant,
    last: Instant,
    ran: Duration,
    since_yield: Duration,
}

/// Run time after which a call yields to the gateway's other tasks.
const SLICE: Duration = Duration::from_millis(2);
/// Wall-clock backstop, as a multiple of the timeout.
const WALL_FACTOR: u32 = 10;

/// The error a call is stopped with when its time is up.
#[derive(Debug)]
pub(super) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plugin deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl RunClock {
    pub(super) fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            timeout,
            started: now,
            last: now,
            ran: Duration::ZERO,
            since_yield: Duration::ZERO,
        }
    }

    /// Called at each epoch tick the plugin runs across.
    pub(super) fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        // A gap of a few ticks means the call was running; a longer one means it was
        // parked (yielded and not yet polled again) and only the last tick counts.
        let ran = if gap <= TICK * 3 { gap } else { TICK };
        self.ran += ran;
        self.since_yield += ran;
        if self.ran >= self.timeout || now - self.started >= self.timeout * WALL_FACTOR {
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        if self.since_yield >= SLICE {
            self.since_yield = Duration::ZERO;
            // Yield so a slow plugin never holds a gateway worker thread for long.
            return Ok(UpdateDeadline::Yield(1));
        }
        Ok(UpdateDeadline::Continue(1))
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
