//! skysocket: Skynet's socket server as a Rust engine with a Lua binding.
//!
//! Layers, lowest first: [`sys`] (pollers and socket syscalls), [`engine`] (the socket
//! server: ids, state machine, write queues), `lua` (the mlua module). A lower layer
//! never uses a higher one.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod engine;
pub mod lua;
pub mod sys;

pub use engine::{Engine, Handle};
