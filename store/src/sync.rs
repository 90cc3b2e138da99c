//! The single import point for synchronisation primitives in this crate.
//!
//! Normal builds get `std` atomics/`Arc` and `parking_lot` locks; `--cfg rudder_loom` builds get loom's
//! model-checked versions behind the same API (locks return guards directly: no poisoning), so shared
//! state written against this module can be explored by loom tests. Immutable data shared across threads
//! (e.g. `Arc<dyn Trait>` handed in by callers) may keep using `std::sync::Arc`: loom's `Arc` cannot
//! coerce to trait objects and there is nothing to model in it.
//!
//! [`Notify`] is a small single-waiter async wake-up built on these primitives, so the hand-off between
//! synchronous producers and an async consumer is modelled too.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[cfg(not(rudder_loom))]
mod imp {
    pub use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
    pub use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
    pub use std::sync::Arc;
    pub use std::thread;
}

#[cfg(rudder_loom)]
mod imp {
    pub use loom::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
    pub use loom::sync::{Arc, MutexGuard, RwLockReadGuard, RwLockWriteGuard};
    pub use loom::thread;
    use std::sync::PoisonError;

    /// loom's mutex with the `parking_lot` API (no poisoning).
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(PoisonError::into_inner)
        }

        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    /// loom's rwlock with the `parking_lot` API (no poisoning).
    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub fn new(value: T) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().unwrap_or_else(PoisonError::into_inner)
        }

        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().unwrap_or_else(PoisonError::into_inner)
        }
    }
}

pub use imp::*;

/// A wake-up signal for ONE async waiter at a time, with a stored permit so a `notify_one` that happens
/// before the waiter starts waiting is not lost (same contract as `tokio::sync::Notify::notify_one`).
#[derive(Debug, Default)]
pub struct Notify {
    state: Mutex<NotifyState>,
}

#[derive(Debug, Default)]
struct NotifyState {
    permit: bool,
    waker: Option<Waker>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the waiter, or leaves a permit for the next `notified().await`.
    pub fn notify_one(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.permit = true;
            state.waker.take()
        };
        // Wake outside the lock: the woken task may poll (and lock) immediately.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Completes once a permit is available, consuming it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }
}

/// Future returned by [`Notify::notified`].
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.notify.state.lock();
        if state.permit {
            state.permit = false;
            return Poll::Ready(());
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(all(test, not(rudder_loom)))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn permit_survives_until_waited() {
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(5), notify.notified())
            .await
            .expect("stored permit completes the wait");
    }

    #[tokio::test]
    async fn wakes_a_pending_waiter() {
        let notify = Arc::new(Notify::new());
        let waiter = {
            let notify = notify.clone();
            tokio::spawn(async move { notify.notified().await })
        };
        tokio::task::yield_now().await;
        notify.notify_one();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woken")
            .expect("waiter task");
    }
}
