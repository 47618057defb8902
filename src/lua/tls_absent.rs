//! The TLS functions of a module built without the `tls` feature.
//!
//! They exist so the API is the same in every build (and documented functions are
//! always present); each returns `nil, message` saying how to get TLS.

use mlua::Lua;

use super::api::ApiFn;
use super::args::{nil_msg, Args, Ret};
use super::state::State;

pub const FUNCTIONS: &[(&str, ApiFn)] = &[
    ("tls_context", absent),
    ("tls_upgrade", absent),
    ("tls_connect", absent),
    ("tls_listen", absent),
    ("tls_info", absent),
];

fn absent(lua: &Lua, _st: &State, a: &Args) -> Ret {
    nil_msg(
        lua,
        format!(
            "{}: skysocket was built without TLS (enable the Cargo feature `tls`)",
            a.name()
        ),
    )
}
