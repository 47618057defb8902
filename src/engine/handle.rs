//! [`Handle`]: the engine's operations from any thread.

use std::sync::Arc;

use super::core::Core;
use super::ops::Ops;

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
