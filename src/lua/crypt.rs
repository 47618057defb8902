//! Skynet's `crypt` functions that its pure-Lua HTTP and WebSocket libraries use (and
//! the `skynet.crypt` shim of `lua/skysocket/skynet.lua` exports): SHA-1, HMAC-SHA1,
//! base64 and hex, and random keys. The hashing and encoding come from the `sha1`,
//! `hmac` and `base64` crates. All take and return binary-safe Lua strings.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use mlua::Lua;
use sha1::{Digest, Sha1};

use super::args::{nil_msg, ret, Args, Ret};
use super::state::State;

/// `sha1(s)` → the 20-byte binary digest.
pub fn sha1(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let data = a.bytes(1)?;
    ret(lua, lua.create_string(Sha1::digest(&data).as_slice())?)
}

/// `hmac_sha1(key, text)` → the 20-byte binary HMAC.
pub fn hmac_sha1(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let key = a.bytes(1)?;
    let text = a.bytes(2)?;
    // HMAC takes a key of any length (long keys are hashed first): this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&key) else {
        return nil_msg(lua, "hmac_sha1: unusable key");
    };
    mac.update(&text);
    ret(
        lua,
        lua.create_string(mac.finalize().into_bytes().as_slice())?,
    )
}

/// `base64encode(s)` → standard base64 with padding.
pub fn base64encode(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let data = a.bytes(1)?;
    ret(lua, base64::engine::general_purpose::STANDARD.encode(&data))
}

/// `base64decode(s)` → the bytes, or `nil, message` for invalid input.
pub fn base64decode(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let text = a.bytes(1)?;
    match base64::engine::general_purpose::STANDARD.decode(&text) {
        Ok(bytes) => ret(lua, lua.create_string(&bytes)?),
        Err(e) => nil_msg(lua, format!("invalid base64: {e}")),
    }
}

/// `hexencode(s)` → lowercase hex.
pub fn hexencode(lua: &Lua, _st: &State, a: &Args) -> Ret {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let data = a.bytes(1)?;
    let mut out = Vec::with_capacity(data.len() * 2);
    for b in data {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
    ret(lua, lua.create_string(&out)?)
}

/// `hexdecode(s)` → the bytes, or `nil, message` for odd length or a non-hex digit.
pub fn hexdecode(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let text = a.bytes(1)?;
    if text.len() % 2 != 0 {
        return nil_msg(lua, "invalid hex: odd length");
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len() / 2);
    for pair in text.chunks_exact(2) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => out.push(h << 4 | l),
            _ => return nil_msg(lua, "invalid hex: not a hex digit"),
        }
    }
    ret(lua, lua.create_string(&out)?)
}

/// `randomkey()` → 8 random bytes from the OS (Skynet's size), e.g. for a WebSocket key.
pub fn randomkey(lua: &Lua, _st: &State, _a: &Args) -> Ret {
    let mut key = [0u8; 8];
    match crate::sys::random::fill(&mut key) {
        Ok(()) => ret(lua, lua.create_string(key)?),
        Err(e) => nil_msg(lua, format!("randomkey: {e}")),
    }
}

/// `xor_str(data, key)` → `data` with each byte XORed with the key repeated (the
/// WebSocket masking of Skynet's websocket.lua). The key must not be empty.
pub fn xor_str(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let mut data = a.bytes(1)?;
    let key = a.bytes(2)?;
    if key.is_empty() {
        return Err(a.error(2, "key must not be empty"));
    }
    for (b, k) in data.iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
    ret(lua, lua.create_string(&data)?)
}
