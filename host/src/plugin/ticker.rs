//! The epoch ticker: wasmtime checks a store's deadline when the engine's epoch advances, so
//! while plugin calls run something must advance it every [`TICK`].

use std::sync::Arc;
use std::time::Duration;

use wasmtime::Engine;

use super::sandbox::TICK;

/// Advances the engine's epoch every [`TICK`] on a small thread while plugin calls run.
///
/// Between calls it backs off (2, 4, ... up to [`IDLE_SLEEP_MAX`] between ticks) and after
/// [`PARK_AFTER`] without a call it parks until the next call starts, so an idle gateway
/// does not wake a thousand times a second. A call that starts while the ticker backs off
/// does not wake it: that wake-up (a futex and an inter-processor interrupt) is paid by the
/// request, where a deadline first checked up to [`IDLE_SLEEP_MAX`]
/// late costs nothing (timeouts are tens of milliseconds, and the ticker is back at
/// [`TICK`] from its next tick on). Only a parked ticker is woken by a starting call.
pub(super) struct EpochTicker {
    shared: Arc<TickerShared>,
}

/// Ticks at [`TICK`] after the last call before the ticker backs off: a request's calls
/// come in a burst.
const IDLE_TICKS: u32 = 2;
/// The longest sleep between ticks while backing off.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(16);
/// Idle time after which the ticker parks.
const PARK_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct TickerShared {
    /// Calls running now.
    active: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    /// The ticker is parked or about to park: a starting call must wake it.
    parked: std::sync::atomic::AtomicBool,
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

/// Held by a running call: keeps the epoch advancing, so its deadline can fire.
pub(super) struct Ticking(Arc<TickerShared>);

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        use std::sync::atomic::Ordering;
        let shared = Arc::new(TickerShared::default());
        let s = shared.clone();
        std::thread::Builder::new()
            .name("portcullis-epoch".into())
            .spawn(move || {
                let mut idle_ticks = 0;
                let mut idle_for = Duration::ZERO;
                let mut sleep = TICK;
                while !s.stop.load(Ordering::Acquire) {
                    std::thread::sleep(sleep);
                    engine.increment_epoch();
                    if s.active.load(Ordering::Acquire) > 0 {
                        idle_ticks = 0;
                        idle_for = Duration::ZERO;
                        sleep = TICK;
                        continue;
                    }
                    idle_ticks += 1;
                    idle_for += sleep;
                    if idle_ticks >= IDLE_TICKS {
                        sleep = (sleep * 2).min(IDLE_SLEEP_MAX);
                    }
                    if idle_for >= PARK_AFTER {
                        // `parked` is raised before `active` is checked, and a starting call
                        // raises `active` before it reads `parked` (both SeqCst): either the
                        // call sees `parked` and notifies under the lock, or this sees the
                        // call. No lost wake-up, and calls on a ticking ticker skip the lock.
                        let guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                        s.parked.store(true, Ordering::SeqCst);
                        let _guard = s
                            .wake
                            .wait_while(guard, |_| {
                                s.active.load(Ordering::SeqCst) == 0
                                    && !s.stop.load(Ordering::Acquire)
                            })
                            .unwrap_or_else(|e| e.into_inner());
                        s.parked.store(false, Ordering::SeqCst);
                        idle_ticks = 0;
                        idle_for = Duration::ZERO;
                        sleep = TICK;
                    }
                }
            })
            .ok();
        Self { shared }
    }

    /// Marks a call as running until the returned guard is dropped.
    pub fn ticking(&self) -> Ticking {
        use std::sync::atomic::Ordering;
        self.shared.active.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst) {
            let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_one();
        }
        Ticking(self.shared.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::Release);
        let _guard = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_one();
    }
}
