//! The socket server: Skynet's `socket_server` state machine over a readiness poller.
//!
//! One thread owns the [`Engine`] and calls [`Engine::poll`]; any thread may use a
//! [`Handle`]. Both give the same socket operations, [`Ops`]. Sockets live in a slot
//! pool addressed by tagged ids; every message carries the socket's owner token.
//! See docs/ARCHITECTURE.md for the map of this module.

pub mod address;
mod config;
mod core;
mod error;
mod exec;
mod fsm;
mod handle;
mod id_hash;
mod info;
mod message;
mod ops;
mod poll;
pub mod resolver;
mod slots;
mod socket;
mod stream;
mod timer;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
pub mod x509;

pub use config::Config;
pub use error::{Error, Result};
pub use fsm::State;
pub use handle::Handle;
pub use id_hash::IdHasher;
pub use info::SocketInfo;
pub use message::{Batch, Msg, MsgKind, Parts};
pub use ops::Ops;
pub use poll::Engine;
pub use slots::SocketId;
pub use socket::Priority;
#[cfg(feature = "tls")]
pub use tls::{SniCert, TlsContext, TlsInfo, TlsOptions, TlsVersion};
