//! Where a component plugin's instance for a call comes from, and where it goes afterwards.
//!
//! Every instance holds a slot of the runtime's instance pool (the pooling allocator has room
//! for `runtime.max_instances`), so instances are bounded like every other resource: a call
//! that finds no slot waits for one. One [`Pool`] per plugin applies one of these policies:
//!
//! - **fresh** (the default): a new instance per call, dropped after it;
//! - **prepared** (once [`Pool::prepare`] ran): instances made and initialized ahead of calls
//!   by the plugin's preparing task, each serving exactly one call and going back to that task
//!   to be torn down ([`Spares`]), so that instantiation and teardown leave the request's path;
//! - **reused** (`[plugins.reuse]`): initialized instances kept idle between calls, at most
//!   `instances` of them, each for at most `calls` calls.
//!
//! An instance that ran a request's request hook may also be kept for the same request's
//! response hook (`plugin::Kept`), within a runtime-wide share of the pool ([`Budget::kept`]).
//! [`Budget`] is the one place where these shares are computed.

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::PluginFailure;

/// How the runtime's instance slots are shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budget {
    /// `runtime.max_instances`: instances alive at once, across all plugins.
    pub max_instances: u32,
}

/// Slots a prepared instance may hold: once ready, and once used while it waits for teardown
/// ([`Spares::retire`] wakes the preparing task once `want` used ones wait).
const SLOTS_PER_PREPARED: usize = 2;

impl Budget {
    /// Instances kept from request hooks for response hooks at once: a quarter of the pool,
    /// so that requests the engine is slow to answer cannot hold it.
    pub fn kept(&self) -> usize {
        self.max_instances as usize / 4
    }

    /// Instances each of `plugins` preparing plugins prepares when `wanted` are configured
    /// (`runtime.prepared_instances`): all of them together hold at most half of the pool,
    /// so that calls always find slots.
    pub fn prepared_each(&self, wanted: u32, plugins: usize) -> usize {
        if plugins == 0 {
            return 0;
        }
        let share = (self.max_instances as usize / 2) / (SLOTS_PER_PREPARED * plugins);
        (wanted as usize).min(share)
    }
}

/// The runtime's instance slots, shared by all its plugins.
pub(super) struct Slots {
    budget: Budget,
    instances: Arc<Semaphore>,
    kept: Arc<Semaphore>,
}

impl Slots {
    pub fn new(budget: Budget) -> Arc<Self> {
        Arc::new(Self {
            budget,
            instances: Arc::new(Semaphore::new(budget.max_instances as usize)),
            kept: Arc::new(Semaphore::new(budget.kept())),
        })
    }

    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// A slot for a new instance, waiting while the pool is full.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, PluginFailure> {
        self.instances
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PluginFailure::Trap("plugin runtime closed".into()))
    }

    /// A slot if one is free now.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.instances.clone().try_acquire_owned().ok()
    }

    /// A place among the instances kept for a response hook, if one is free now.
    fn try_keep(&self) -> Option<OwnedSemaphorePermit> {
        self.kept.clone().try_acquire_owned().ok()
    }
}

/// An instance with the pool slot it holds and the calls it served.
pub(super) struct Pooled<I> {
    instance: I,
    calls: u32,
    _slot: OwnedSemaphorePermit,
}

impl<I> Pooled<I> {
    pub fn new(instance: I, slot: OwnedSemaphorePermit) -> Self {
        Self {
            instance,
            calls: 0,
            _slot: slot,
        }
    }
}

impl<I> std::ops::Deref for Pooled<I> {
    type Target = I;
    fn deref(&self) -> &I {
        &self.instance
    }
}

impl<I> std::ops::DerefMut for Pooled<I> {
    fn deref_mut(&mut self) -> &mut I {
        &mut self.instance
    }
}

/// `[plugins.reuse]`.
#[derive(Debug, Clone, Copy)]
struct Reuse {
    /// Idle instances kept at most.
    keep: usize,
    /// Calls after which an instance is dropped.
    calls: u32,
}

/// One plugin's instances.
pub(super) struct Pool<I> {
    slots: Arc<Slots>,
    reuse: Option<Reuse>,
    /// Initialized instances waiting for their next call (reused policy).
    idle: Mutex<Vec<Pooled<I>>>,
    /// Set once by [`Pool::prepare`] (prepared policy).
    spares: OnceLock<Arc<Spares<I>>>,
}

impl<I> Pool<I> {
    pub fn new(slots: Arc<Slots>, reuse: Option<&crate::config::Reuse>) -> Self {
        Self {
            slots,
            reuse: reuse.map(|r| Reuse {
                keep: r.instances as usize,
                calls: r.calls,
            }),
            idle: Mutex::new(Vec::new()),
            spares: OnceLock::new(),
        }
    }

    /// Whether instances are kept between calls (`[plugins.reuse]`).
    pub fn reuses(&self) -> bool {
        self.reuse.is_some()
    }

    /// An initialized instance ready for a hook: an idle one (reused) or a prepared one.
    /// None means the call makes its own in a [`Pool::slot`].
    pub fn ready(&self) -> Option<Pooled<I>> {
        if self.reuse.is_some() {
            return self.idle.lock().ok()?.pop();
        }
        self.spares.get()?.take()
    }

    /// A slot for a new instance, waiting while the pool is full.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, PluginFailure> {
        self.slots.slot().await
    }

    /// A place for an instance kept for a response hook, when one is free and the policy
    /// allows it (reused instances are not kept: they go back to the idle list).
    pub fn try_keep(&self) -> Option<OwnedSemaphorePermit> {
        if self.reuse.is_some() {
            return None;
        }
        self.slots.try_keep()
    }

    /// Takes an instance back after a call. `reusable` says the call succeeded and left
    /// nothing suspicious behind (no stderr output); only then may a reused instance serve
    /// again, until it served its `calls`. A prepared plugin's instance goes to the preparing
    /// task for teardown; otherwise the instance is dropped here.
    pub fn release(&self, mut instance: Pooled<I>, reusable: bool) {
        if let Some(reuse) = self.reuse {
            instance.calls += 1;
            if reusable && instance.calls < reuse.calls {
                if let Ok(mut idle) = self.idle.lock() {
                    if idle.len() < reuse.keep {
                        idle.push(instance);
                    }
                }
            }
            return;
        }
        if let Some(spares) = self.spares.get() {
            spares.retire(instance);
        }
    }

    /// Switches to the prepared policy with `count` ready instances wanted, returning the
    /// spares for the preparing task to fill; None when the plugin reuses instances, when
    /// `count` is 0, or when it was done before.
    pub fn prepare(&self, count: usize) -> Option<Arc<Spares<I>>> {
        if count == 0 || self.reuse.is_some() {
            return None;
        }
        let spares = Arc::new(Spares::new(count));
        self.spares.set(spares.clone()).ok()?;
        Some(spares)
    }

    /// Whether a prepared instance is ready now; None when the pool prepares none.
    pub fn has_ready(&self) -> Option<bool> {
        let spares = self.spares.get()?;
        Some(spares.ready.lock().map(|v| !v.is_empty()).unwrap_or(false))
    }

    /// Wakes the preparing task (so that it sees its plugin gone and ends).
    pub fn wake_preparer(&self) {
        if let Some(spares) = self.spares.get() {
            spares.wake.notify_one();
        }
    }
}

/// Fresh initialized instances waiting for the one call each will serve, and used ones
/// waiting to be torn down, both handled by the plugin's preparing task.
pub(super) struct Spares<I> {
    ready: Mutex<Vec<Pooled<I>>>,
    spent: Mutex<Vec<Pooled<I>>>,
    want: usize,
    wake: Notify,
}

impl<I> Spares<I> {
    fn new(want: usize) -> Self {
        Self {
            ready: Mutex::new(Vec::with_capacity(want)),
            spent: Mutex::new(Vec::new()),
            want,
            wake: Notify::new(),
        }
    }

    /// Whether fewer than `want` instances are ready.
    pub fn wants_more(&self) -> bool {
        self.ready
            .lock()
            .map(|v| v.len() < self.want)
            .unwrap_or(false)
    }

    /// Adds a newly prepared instance.
    pub fn add(&self, instance: Pooled<I>) {
        if let Ok(mut ready) = self.ready.lock() {
            ready.push(instance);
        }
    }

    /// A ready instance. The preparing task is woken when the last one is taken, not for
    /// each: it runs on a thread of its own, and waking a parked thread costs the request a
    /// futex and an inter-processor interrupt. A call that finds none ready makes its own.
    fn take(&self) -> Option<Pooled<I>> {
        let mut ready = self.ready.lock().ok()?;
        let instance = ready.pop()?;
        let empty = ready.is_empty();
        drop(ready);
        if empty {
            self.wake.notify_one();
        }
        Some(instance)
    }

    /// Hands a used instance back for teardown, done when the preparing task next wakes.
    /// Used instances keep their pool slots until torn down, so once `want` of them wait the
    /// task is woken for them: what [`Budget::prepared_each`] budgets for.
    fn retire(&self, instance: Pooled<I>) {
        let waiting = match self.spent.lock() {
            Ok(mut spent) => {
                spent.push(instance);
                spent.len()
            }
            Err(_) => return,
        };
        if waiting >= self.want {
            self.wake.notify_one();
        }
    }

    /// The used instances, for the preparing task to drop (this is where an instance's
    /// memory is reset and its slot freed).
    pub fn take_spent(&self) -> Vec<Pooled<I>> {
        self.spent
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// Waits until a call wakes the preparing task.
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

/// A thread of its own for preparing instances (instantiate and `init` the next one, tear
/// down the used one). On the request threads that work would run between a request being
/// handed to the engine's connection and that connection being polled, and delay the
/// request; here the OS runs it beside the request threads instead.
pub(super) struct Preparer {
    pub handle: tokio::runtime::Handle,
    /// Dropped with the runtime: the thread ends, and its tasks with it.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Preparer {
    /// The preparing thread, or, when no thread is to be had, the caller's tokio runtime (the
    /// preparing tasks then run among the rest).
    pub fn start() -> Self {
        Self::thread().unwrap_or_else(|| Preparer {
            handle: tokio::runtime::Handle::current(),
            _stop: tokio::sync::oneshot::channel().0,
        })
    }

    fn thread() -> Option<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().build().ok()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("portcullis-prepare".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .ok()?;
        Some(Self {
            handle,
            _stop: stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn slots(max_instances: u32) -> Arc<Slots> {
        Slots::new(Budget { max_instances })
    }

    fn free(slots: &Slots) -> usize {
        slots.instances.available_permits()
    }

    fn instance(pool: &Pool<u32>, n: u32) -> Pooled<u32> {
        Pooled::new(n, pool.slots.try_slot().expect("a free slot"))
    }

    fn reuse(instances: u32, calls: u32) -> crate::config::Reuse {
        crate::config::Reuse { instances, calls }
    }

    #[test]
    fn budget_shares_the_pool() {
        let b = Budget { max_instances: 64 };
        assert_eq!(b.kept(), 16);
        // Half the pool, two slots per prepared instance, shared by the preparing plugins.
        assert_eq!(b.prepared_each(4, 2), 4);
        assert_eq!(b.prepared_each(100, 2), 8);
        assert_eq!(b.prepared_each(100, 3), 5);
        assert_eq!(b.prepared_each(4, 0), 0);
        let small = Budget { max_instances: 4 };
        assert_eq!(small.kept(), 1);
        assert_eq!(small.prepared_each(4, 1), 1);
        assert_eq!(small.prepared_each(4, 2), 0);
        assert_eq!(Budget { max_instances: 3 }.kept(), 0);
    }

    #[test]
    fn a_fresh_pool_keeps_nothing() {
        let pool = Pool::new(slots(4), None);
        assert!(pool.ready().is_none());
        let i = instance(&pool, 1);
        assert_eq!(free(&pool.slots), 3);
        pool.release(i, true);
        assert_eq!(free(&pool.slots), 4, "the slot comes back at once");
        assert!(pool.ready().is_none());
    }

    #[test]
    fn reused_instances_serve_at_most_their_calls() {
        let pool = Pool::new(slots(8), Some(&reuse(2, 3)));
        assert!(pool.reuses());
        pool.release(instance(&pool, 7), true);
        for _ in 0..2 {
            let i = pool.ready().expect("the idle instance");
            assert_eq!(*i, 7);
            pool.release(i, true);
        }
        assert!(pool.ready().is_none(), "dropped after its third call");
        assert_eq!(free(&pool.slots), 8);
    }

    #[test]
    fn reused_instances_are_bounded_and_dropped_when_unusable() {
        let pool = Pool::new(slots(8), Some(&reuse(2, 100)));
        for n in 0..4 {
            pool.release(instance(&pool, n), true);
        }
        assert_eq!(free(&pool.slots), 6, "two idle instances at most");
        let i = pool.ready().unwrap();
        pool.release(i, false);
        assert_eq!(free(&pool.slots), 7, "a failed call's instance is not kept");
        assert!(pool.try_keep().is_none(), "reused instances are never kept");
        assert!(pool.prepare(2).is_none(), "nor prepared");
    }

    #[test]
    fn prepared_instances_serve_once_and_are_retired() {
        let pool = Pool::new(slots(8), None);
        let spares = pool.prepare(2).expect("prepared");
        assert!(pool.prepare(2).is_none(), "once");
        assert!(spares.wants_more());
        spares.add(instance(&pool, 1));
        spares.add(instance(&pool, 2));
        assert!(!spares.wants_more());
        assert!(spares.woken().now_or_never().is_none());
        let a = pool.ready().unwrap();
        assert!(
            spares.woken().now_or_never().is_none(),
            "one left: not woken"
        );
        let b = pool.ready().unwrap();
        assert!(
            spares.woken().now_or_never().is_some(),
            "woken for the last"
        );
        assert!(pool.ready().is_none());
        pool.release(a, true);
        assert!(
            spares.woken().now_or_never().is_none(),
            "one spent: not yet"
        );
        pool.release(b, true);
        assert!(
            spares.woken().now_or_never().is_some(),
            "woken at `want` spent"
        );
        assert_eq!(free(&pool.slots), 6, "spent instances hold their slots");
        assert_eq!(spares.take_spent().len(), 2);
        assert_eq!(free(&pool.slots), 8, "torn down");
    }

    #[test]
    fn kept_instances_have_a_share_of_their_own() {
        let pool: Pool<u32> = Pool::new(slots(8), None);
        let a = pool.try_keep().expect("first");
        let b = pool.try_keep().expect("second");
        assert!(pool.try_keep().is_none(), "a quarter of 8");
        drop(a);
        assert!(pool.try_keep().is_some());
        drop(b);
        assert_eq!(free(&pool.slots), 8, "kept places are not instance slots");
    }
}
