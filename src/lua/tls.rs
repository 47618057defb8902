//! The TLS functions of `require "skysocket"`: contexts as userdata, upgrade by id
//! (STARTTLS), connect/listen with TLS, and session information. Only plaintext
//! crosses into Lua.

use std::sync::Arc;

use mlua::{Lua, Table, UserData, UserDataMethods, Value};

use super::address::{split_host_port, unix_path};
use super::api::{addr_results, host_port_args, listen_options, type_of, ApiFn};
use super::args::{false_msg, nil_msg, ret, Args, Fail, Ret};
use super::state::State;
use crate::engine::{address, TlsContext, TlsOptions, TlsVersion};
use crate::sys::net::Addr;

pub const FUNCTIONS: &[(&str, ApiFn)] = &[
    ("tls_context", tls_context),
    ("tls_upgrade", tls_upgrade),
    ("tls_connect", tls_connect),
    ("tls_listen", tls_listen),
    ("tls_info", tls_info),
];

/// A TLS context as Lua sees it.
pub struct Ctx(pub Arc<TlsContext>);

impl UserData for Ctx {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!(
                "skysocket.tls_context ({})",
                if this.0.is_server() {
                    "server"
                } else {
                    "client"
                }
            ))
        });
    }
}

fn ctx_arg(a: &Args, pos: usize) -> Result<Arc<TlsContext>, Fail> {
    if let Value::UserData(ud) = a.get(pos) {
        if let Ok(c) = ud.borrow::<Ctx>() {
            return Ok(c.0.clone());
        }
    }
    Err(a.error(
        pos,
        format!("tls context expected, got {}", type_of(a, pos)),
    ))
}

/// Option `key` of the table as bytes (a string), if present.
fn opt_bytes(a: &Args, t: &Table, key: &str) -> Result<Option<Vec<u8>>, Fail> {
    match t.raw_get::<Value>(key)? {
        Value::Nil => Ok(None),
        Value::String(s) => Ok(Some(s.as_bytes().to_vec())),
        v => Err(a.error(
            1,
            format!("option '{key}' must be a string, got {}", v.type_name()),
        )),
    }
}

const KNOWN: &[&str] = &[
    "mode",
    "cert",
    "key",
    "ca",
    "verify",
    "alpn",
    "server_name",
    "min_version",
    "sni",
];

/// `tls_context{ mode = "server"|"client", cert =, key =, ca =, verify =, alpn =,
/// server_name =, min_version =, sni = { [host] = { cert =, key = } } }` → context, or `nil, message` (unreadable file,
/// bad PEM, no system CA store). Unknown options are argument errors (typos in
/// security settings must not pass silently).
fn tls_context(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let Value::Table(t) = a.get(1) else {
        return Err(a.error(1, format!("table expected, got {}", type_of(a, 1))));
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            _ => return Err(a.error(1, "option names must be strings")),
        };
        if !KNOWN.contains(&name.as_str()) {
            return Err(a.error(1, format!("unknown option '{name}'")));
        }
    }
    let server = match t.raw_get::<Value>("mode")? {
        Value::Nil => false,
        Value::String(s) if s.as_bytes().as_ref() == b"server" => true,
        Value::String(s) if s.as_bytes().as_ref() == b"client" => false,
        _ => return Err(a.error(1, "option 'mode' must be \"server\" or \"client\"")),
    };
    let mut o = TlsOptions::client();
    o.server = server;
    o.cert = opt_bytes(a, t, "cert")?;
    o.key = opt_bytes(a, t, "key")?;
    o.ca = opt_bytes(a, t, "ca")?;
    o.verify = match t.raw_get::<Value>("verify")? {
        Value::Nil => true,
        Value::Boolean(b) => b,
        _ => return Err(a.error(1, "option 'verify' must be a boolean")),
    };
    o.alpn = match t.raw_get::<Value>("alpn")? {
        Value::Nil => Vec::new(),
        Value::String(s) => vec![s.as_bytes().to_vec()],
        Value::Table(list) => {
            let mut v = Vec::new();
            for item in list.sequence_values::<Value>() {
                match item? {
                    Value::String(s) => v.push(s.as_bytes().to_vec()),
                    _ => return Err(a.error(1, "option 'alpn' must list strings")),
                }
            }
            v
        }
        _ => return Err(a.error(1, "option 'alpn' must be a string or a list")),
    };
    o.server_name = match opt_bytes(a, t, "server_name")? {
        None => None,
        Some(b) => Some(
            String::from_utf8(b).map_err(|_| a.error(1, "option 'server_name' is not UTF-8"))?,
        ),
    };
    o.min_version = match opt_bytes(a, t, "min_version")?.as_deref() {
        None | Some(b"1.2") => None,
        Some(b"1.3") => Some(TlsVersion::Tls13),
        Some(_) => return Err(a.error(1, "option 'min_version' must be \"1.2\" or \"1.3\"")),
    };
    o.sni = match t.raw_get::<Value>("sni")? {
        Value::Nil => Vec::new(),
        Value::Table(map) => {
            let mut v = Vec::new();
            for pair in map.pairs::<Value, Value>() {
                let (name, entry) = pair?;
                let (Value::String(name), Value::Table(entry)) = (name, entry) else {
                    return Err(a.error(
                        1,
                        "option 'sni' maps host names to { cert = ..., key = ... }",
                    ));
                };
                let name = name.to_string_lossy();
                let (Some(cert), Some(key)) =
                    (opt_bytes(a, &entry, "cert")?, opt_bytes(a, &entry, "key")?)
                else {
                    return Err(a.error(1, format!("sni['{name}'] needs cert and key")));
                };
                v.push(crate::engine::SniCert { name, cert, key });
            }
            v
        }
        v => {
            return Err(a.error(
                1,
                format!("option 'sni' must be a table, got {}", v.type_name()),
            ))
        }
    };
    match TlsContext::new(&o) {
        Ok(ctx) => ret(lua, lua.create_userdata(Ctx(ctx))?),
        Err(e) => nil_msg(lua, e),
    }
}

/// `tls_upgrade(id, ctx [, server_name])` → true, or `false, message`. Starts TLS on
/// a connected socket (STARTTLS); `handshake(id, alpn)` or `error(id, msg)` follows.
fn tls_upgrade(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let ctx = ctx_arg(a, 2)?;
    let name = a.opt_string(3)?;
    let r = st
        .engine
        .borrow_mut()
        .ops()
        .tls_upgrade(id, &ctx, name.as_deref());
    match r {
        Ok(()) => ret(lua, true),
        Err(e) => false_msg(lua, e),
    }
}

/// `tls_connect(host, port, ctx [, server_name])` (or `"host:port", ctx`) → id, or
/// `nil, message`. `open` arrives once the handshake is done, then `handshake`.
fn tls_connect(lua: &Lua, st: &State, a: &Args) -> Ret {
    let host = a.string(1)?;
    let (target, ctx_pos): (Result<(String, u16), Addr>, usize) =
        if let Some(path) = unix_path(&host) {
            (Err(Addr::Unix(path)), 2)
        } else if matches!(
            a.get(2),
            Value::Integer(_) | Value::Number(_) | Value::String(_)
        ) && !matches!(a.get(2), Value::String(_) if split_host_port(&host).is_some())
        {
            (Ok((host.clone(), a.port(2)?)), 3)
        } else if let Some((h, p)) = split_host_port(&host) {
            (Ok((h, p)), 2)
        } else {
            return Err(a.error(2, "port expected"));
        };
    let ctx = ctx_arg(a, ctx_pos)?;
    let name = a.opt_string(ctx_pos + 1)?;
    let mut eng = st.engine.borrow_mut();
    let r = match &target {
        Ok((h, p)) => match address::parse_numeric(h, *p) {
            Some(sa) => eng
                .ops()
                .tls_connect(&Addr::Inet(sa), &ctx, name.as_deref(), st.owner()),
            None => eng
                .ops()
                .tls_connect_host(h, *p, &ctx, name.as_deref(), st.owner()),
        },
        Err(addr) => eng
            .ops()
            .tls_connect(addr, &ctx, name.as_deref(), st.owner()),
    };
    drop(eng);
    match r {
        Ok(id) => {
            st.made(id);
            ret(lua, id as i64)
        }
        Err(e) => {
            let what = match &target {
                Ok((h, p)) => format!("{h}:{p}"),
                Err(addr) => addr.to_string(),
            };
            nil_msg(lua, format!("tls_connect {what}: {e}"))
        }
    }
}

/// `tls_listen(host, port, ctx [, backlog | options])` → `id, ip, port`, or
/// `nil, message`. Sockets it accepts do a server handshake once started.
fn tls_listen(lua: &Lua, st: &State, a: &Args) -> Ret {
    let (addr, next) = host_port_args(st, a, 1, "127.0.0.1")?;
    let ctx = ctx_arg(a, next)?;
    if !ctx.is_server() {
        return Err(a.error(next, "a server context (mode = \"server\") is needed"));
    }
    let opts = listen_options(a, next + 1)?;
    let addr = match addr {
        Ok(addr) => addr,
        Err(msg) => return nil_msg(lua, msg),
    };
    let mut eng = st.engine.borrow_mut();
    let (id, local) = match eng.ops().listen(&addr, opts, st.owner()) {
        Ok(r) => r,
        Err(e) => return nil_msg(lua, format!("tls_listen {addr}: {e}")),
    };
    if let Err(e) = eng.ops().tls_listen(id, &ctx) {
        let _ = eng.ops().close(id, true);
        return nil_msg(lua, format!("tls_listen {addr}: {e}"));
    }
    drop(eng);
    addr_results(lua, id, local)
}

/// `tls_info(id)` → `{ handshaking, mode, version, cipher, alpn, sni, subject, sans }`
/// or `nil, message` (unknown id, or not a TLS socket).
fn tls_info(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let r = st.engine.borrow_mut().ops().tls_info(id);
    let info = match r {
        Ok(i) => i,
        Err(e) => return nil_msg(lua, e),
    };
    let t = lua.create_table_with_capacity(0, 8)?;
    t.raw_set("handshaking", info.handshaking)?;
    t.raw_set("mode", if info.server { "server" } else { "client" })?;
    if let Some(v) = info.version {
        t.raw_set("version", v)?;
    }
    if let Some(c) = info.cipher {
        t.raw_set("cipher", c)?;
    }
    if let Some(p) = info.alpn {
        t.raw_set("alpn", lua.create_string(&p)?)?;
    }
    if let Some(s) = info.sni {
        t.raw_set("sni", s)?;
    }
    if let Some(s) = info.peer_subject {
        t.raw_set("subject", s)?;
    }
    if !info.peer_sans.is_empty() {
        t.raw_set("sans", info.peer_sans)?;
    }
    ret(lua, t)
}
