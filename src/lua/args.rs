//! Argument checking in the style of `luaL_checkinteger` & co.
//!
//! Functions receive their arguments as a `MultiValue` and read them by position. A
//! bad argument becomes [`Fail::Arg`] with the exact text `luaL_argerror` would give;
//! the Lua shim raises it as a plain string error pointing at the caller's line.

use mlua::{Lua, MultiValue, Value};

use crate::engine::SocketId;

/// Why a module function did not return normally.
pub enum Fail {
    /// A bad argument: raised in Lua as a string error.
    Arg(String),
    /// An mlua failure (e.g. out of memory): raised as is.
    Lua(mlua::Error),
}

impl From<mlua::Error> for Fail {
    fn from(e: mlua::Error) -> Fail {
        Fail::Lua(e)
    }
}

pub type Ret = Result<MultiValue, Fail>;

pub struct Args {
    name: &'static str,
    vals: Vec<Value>,
}

/// Lua's name for a value's type, as `luaL_typename` gives it.
fn typename(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) | Value::UserData(_) => "userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

impl Args {
    pub fn new(name: &'static str, vals: MultiValue) -> Args {
        Args {
            name,
            vals: vals.into_vec(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    pub fn get(&self, pos: usize) -> &Value {
        self.vals.get(pos - 1).unwrap_or(&Value::Nil)
    }

    pub fn is_none(&self, pos: usize) -> bool {
        matches!(self.get(pos), Value::Nil)
    }

    pub fn error(&self, pos: usize, msg: impl std::fmt::Display) -> Fail {
        Fail::Arg(format!("bad argument #{pos} to '{}' ({msg})", self.name))
    }

    fn type_error(&self, pos: usize, expected: &str) -> Fail {
        let got = if pos > self.vals.len() {
            "no value"
        } else {
            typename(self.get(pos))
        };
        self.error(pos, format!("{expected} expected, got {got}"))
    }

    pub fn integer(&self, pos: usize) -> Result<i64, Fail> {
        match self.get(pos) {
            Value::Integer(i) => Ok(*i),
            Value::Number(n) => {
                // Exact integers only: no silent truncation of 1.5 or NaN.
                if n.fract() == 0.0
                    && *n >= -9.007_199_254_740_992e15
                    && *n <= 9.007_199_254_740_992e15
                {
                    Ok(*n as i64)
                } else {
                    Err(self.error(pos, "number has no integer representation"))
                }
            }
            Value::String(s) => {
                let t = s.to_string_lossy();
                match t.trim().parse::<i64>() {
                    Ok(i) => Ok(i),
                    Err(_) => Err(self.type_error(pos, "number")),
                }
            }
            _ => Err(self.type_error(pos, "number")),
        }
    }

    pub fn opt_integer(&self, pos: usize, default: i64) -> Result<i64, Fail> {
        if self.is_none(pos) {
            Ok(default)
        } else {
            self.integer(pos)
        }
    }

    /// A number (float allowed), e.g. a timeout in milliseconds.
    pub fn number(&self, pos: usize) -> Result<f64, Fail> {
        match self.get(pos) {
            Value::Integer(i) => Ok(*i as f64),
            Value::Number(n) => Ok(*n),
            Value::String(s) => s
                .to_string_lossy()
                .trim()
                .parse::<f64>()
                .map_err(|_| self.type_error(pos, "number")),
            _ => Err(self.type_error(pos, "number")),
        }
    }

    /// A socket id: a positive integer. Any such number is accepted; whether it names
    /// a live socket is a runtime question answered by the engine.
    pub fn id(&self, pos: usize) -> Result<SocketId, Fail> {
        let v = self.integer(pos)?;
        if v <= 0 {
            return Err(self.error(pos, "socket id must be a positive integer"));
        }
        Ok(v as SocketId)
    }

    pub fn port(&self, pos: usize) -> Result<u16, Fail> {
        let v = self.integer(pos)?;
        u16::try_from(v).map_err(|_| self.error(pos, format!("port {v} out of range 0..65535")))
    }

    pub fn opt_port(&self, pos: usize) -> Result<Option<u16>, Fail> {
        if self.is_none(pos) {
            Ok(None)
        } else {
            self.port(pos).map(Some)
        }
    }

    /// A string (numbers are converted, as `luaL_checklstring` does).
    pub fn bytes(&self, pos: usize) -> Result<Vec<u8>, Fail> {
        match self.get(pos) {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            Value::Integer(i) => Ok(i.to_string().into_bytes()),
            Value::Number(n) => Ok(n.to_string().into_bytes()),
            _ => Err(self.type_error(pos, "string")),
        }
    }

    pub fn string(&self, pos: usize) -> Result<String, Fail> {
        let b = self.bytes(pos)?;
        String::from_utf8(b).map_err(|_| self.error(pos, "invalid UTF-8 in text argument"))
    }

    pub fn opt_string(&self, pos: usize) -> Result<Option<String>, Fail> {
        if self.is_none(pos) {
            Ok(None)
        } else {
            self.string(pos).map(Some)
        }
    }

    /// Lua truthiness with a default for nil/none.
    pub fn opt_bool(&self, pos: usize, default: bool) -> bool {
        match self.get(pos) {
            Value::Nil => default,
            Value::Boolean(b) => *b,
            _ => true,
        }
    }

    pub fn function(&self, pos: usize) -> Result<mlua::Function, Fail> {
        match self.get(pos) {
            Value::Function(f) => Ok(f.clone()),
            _ => Err(self.type_error(pos, "function")),
        }
    }

    /// A handler: a table (or any value with fields, e.g. a userdata with __index).
    pub fn opt_handler(&self, pos: usize) -> Result<Option<Value>, Fail> {
        match self.get(pos) {
            Value::Nil => Ok(None),
            v @ (Value::Table(_) | Value::UserData(_)) => Ok(Some(v.clone())),
            _ => Err(self.type_error(pos, "handler table")),
        }
    }
}

/// Helpers to build return values.
pub fn ret(lua: &Lua, vals: impl mlua::IntoLuaMulti) -> Ret {
    Ok(vals.into_lua_multi(lua)?)
}

/// `nil, message` for a runtime failure.
pub fn nil_msg(lua: &Lua, msg: impl std::fmt::Display) -> Ret {
    ret(lua, (Value::Nil, msg.to_string()))
}

/// `false, message` for a failed operation on an existing id.
pub fn false_msg(lua: &Lua, msg: impl std::fmt::Display) -> Ret {
    ret(lua, (false, msg.to_string()))
}
