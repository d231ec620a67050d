//! A hook for tests that play a hostile relay: it sees every chunk a relay copies between
//! two streams and may pass it, change it, drop it, repeat it or cut the stream there.
//! Nothing sets it in a running node; tests set it through
//! [`crate::node::NodeView::set_relay_tap`] to show that sealed flows fail rather than
//! deliver what a relay altered, and that a relay sees no plaintext.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

/// Which way a relayed chunk travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDirection {
    /// From the origin's side towards the exit.
    Forward,
    /// From the exit's side back towards the origin.
    Backward,
}

/// What the relay does with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapAction {
    /// Send these chunks instead (none: drop it; the same twice: replay it).
    Send(Vec<Bytes>),
    /// Finish the stream here cleanly, as if the sender had ended it (truncation).
    Finish,
}

/// The hook: called with each chunk's direction and bytes.
pub type RelayTap = Arc<dyn Fn(TapDirection, Bytes) -> TapAction + Send + Sync>;

/// The node's tap, if one is set; a flag keeps the relay's hot path to one atomic load.
#[derive(Default)]
pub(crate) struct TapSlot {
    set: AtomicBool,
    tap: RwLock<Option<RelayTap>>,
}

impl TapSlot {
    /// Sets or clears the tap.
    pub(crate) fn set(&self, tap: Option<RelayTap>) {
        self.set.store(tap.is_some(), Ordering::Release);
        *self.tap.write().unwrap_or_else(|p| p.into_inner()) = tap;
    }

    /// The tap, if set.
    pub(crate) fn get(&self) -> Option<RelayTap> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.tap.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
