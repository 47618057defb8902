use std::fmt;
use std::io;

/// Why an engine operation failed. Runtime failures only: nothing here is a bug.
#[derive(Debug)]
pub enum Error {
    /// The id was never issued, or its socket is closed (its slot may hold another).
    UnknownId,
    /// The socket exists but the operation does not apply in its state.
    State(&'static str),
    /// All `max_sockets` slots are in use.
    TooManySockets,
    /// A send would take the write queue past the socket's limit.
    LimitExceeded {
        queued: usize,
        limit: usize,
    },
    /// A send would take the bytes queued in all sockets past the engine's
    /// `write_budget`.
    BudgetExceeded {
        total: usize,
        budget: usize,
    },
    /// A bad address or argument (already in words).
    Invalid(String),
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownId => f.write_str("unknown or closed socket id"),
            Error::State(s) => f.write_str(s),
            Error::TooManySockets => f.write_str("too many sockets"),
            Error::LimitExceeded { queued, limit } => write!(
                f,
                "write queue limit exceeded ({queued} bytes queued, limit {limit})"
            ),
            Error::BudgetExceeded { total, budget } => write!(
                f,
                "write budget exceeded ({total} bytes queued in all sockets, budget {budget})"
            ),
            Error::Invalid(s) => f.write_str(s),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
