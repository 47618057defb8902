//! [`Handle`]: the engine's operations from any thread.

use std::sync::Arc;

use super::core::Core;
use super::ops::Ops;
use super::poll::Engine;

/// A thread-safe, cloneable way into an engine: `handle.ops()` gives the same
/// operations as `Engine::ops` (see `ops.rs` for what runs where).
#[derive(Clone)]
pub struct Handle {
    core: Arc<Core>,
}

impl Handle {
    pub(crate) fn new(core: Arc<Core>) -> Handle {
        Handle { core }
    }

    /// The socket operations, from this thread. Messages they produce, and work only
    /// the poll thread can do, reach the poll thread as commands (it is woken).
    pub fn ops(&self) -> Ops<'_> {
        Ops::remote(&self.core)
    }

    /// A remote view of the engine: an [`Engine`] value whose operations work as this
    /// handle's and which cannot poll (for code written against `Engine`).
    pub fn engine(&self) -> Engine {
        Engine::remote(self.core.clone())
    }

    /// Interrupt the poll thread's wait without a message: its `poll` returns (with
    /// whatever else it found). Used by the service runtime to wake the root service
    /// when its mailbox gets a message while it blocks in the poll.
    pub fn wake(&self) {
        self.core.waker.wake();
    }

    /// Make the poll thread report `Exit`.
    pub fn exit(&self) {
        self.ops().exit();
    }

    pub fn socket_count(&self) -> usize {
        self.core.slots.live()
    }
}

// A handle goes to other threads and may be shared between them.
const _: fn() = || {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<Handle>();
};
