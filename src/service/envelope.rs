//! What travels between services: [`Val`] (a value that crosses), [`Kind`] and
//! [`Envelope`] (a message), and [`Body`] (the code that handles them).

use std::sync::Arc;

use super::{Runtime, Service, ServiceId};

/// A value that crosses between services: nil, booleans, integers and floats (kept
/// distinct), byte strings and tables of these (no cycles: a tree).
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Box<[u8]>),
    Table(Vec<(Val, Val)>),
}

/// What a message is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// First message of a service: run its main chunk with `args`.
    Start,
    /// One-way message.
    Send,
    /// Request expecting one `Reply` with the same session.
    Call(i64),
    /// Answer to `Call(session)`: `ok` false means `args[0]` is an error message.
    Reply { session: i64, ok: bool },
    /// A timer of this service expired.
    Timer(u64),
    /// An event of a socket this service owns, encoded by the binding in `args`.
    Socket,
}

#[derive(Debug)]
pub struct Envelope {
    pub from: ServiceId,
    pub kind: Kind,
    pub args: Vec<Val>,
}

/// The code of a service (a Lua state, in the binding).
pub trait Body: Send {
    /// Handle one message, in arrival order.
    fn handle(&mut self, rt: &Runtime, svc: &Arc<Service>, env: Envelope);
    /// After the messages of a turn (run what they made ready).
    fn end_turn(&mut self, rt: &Runtime, svc: &Arc<Service>);
}
