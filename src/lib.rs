//! skysocket: Skynet's socket server as a Rust engine with a Lua binding.
//!
//! Layers, lowest first: [`sys`] (pollers and socket syscalls), [`engine`] (the socket
//! server: ids, state machine, write queues), [`service`] (worker pool and mailboxes of
//! services, independent of the engine), `lua` (the mlua module). A lower layer
//! never uses a higher one.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod engine;
pub mod lua;
pub mod service;
pub mod sys;

pub use engine::{Engine, Handle};
