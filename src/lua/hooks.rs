//! Test hooks, present only when the process starts with `SKYSOCKET_TEST_HOOKS=1`:
//! `_test_panic(where)` makes Rust panic in a chosen place, so the Lua suite can prove
//! on every interpreter that a panic becomes a Lua error and never aborts the host.
//!   "function": inside a function wrapped by mlua;
//!   "route":    while the next message for a buffered socket is routed into its read
//!               buffer (inside the fast delivery loop).
//! and `_test_panic_raw()` panics inside a raw C closure of the hot path (the
//! `catch_unwind` + `lua_error` pattern of `fast/`). `_test_routed()` is how many
//! arrivals went into a read buffer so far (the hand-off to a waiting read skips it).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

static ROUTE_PANIC: AtomicBool = AtomicBool::new(false);
static ROUTED: AtomicU64 = AtomicU64::new(0);

/// Whether the hooks are on (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("SKYSOCKET_TEST_HOOKS").is_ok_and(|v| v == "1"))
}

/// Make the next routed message panic.
pub fn arm_route_panic() {
    ROUTE_PANIC.store(true, Ordering::Relaxed);
}

/// Panic if armed (one relaxed load when not).
pub fn maybe_panic_in_route() {
    if ROUTE_PANIC.load(Ordering::Relaxed) && ROUTE_PANIC.swap(false, Ordering::Relaxed) {
        panic!("test hook: panic while routing a message");
    }
}

/// Count an arrival appended to a read buffer (while the hooks are on).
pub fn count_routed() {
    if enabled() {
        ROUTED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Arrivals appended to read buffers so far (counted while the hooks are on).
pub fn routed() -> u64 {
    ROUTED.load(Ordering::Relaxed)
}
