//! Two Lua states in one process, each with its own instance of the module: every
//! function must act on its own instance's sockets (the raw closures find their
//! instance without an upvalue only while a single instance exists).

use mlua::{Lua, Table};

fn state_with_module() -> Lua {
    let lua = Lua::new();
    let module = skysocket::lua::open(&lua).unwrap();
    lua.globals().set("socket", module).unwrap();
    lua
}

/// In `lua`: a connected pair echoing through its own engine; returns the client id
/// after one verified echo.
fn echo_pair(lua: &Lua) -> i64 {
    lua.load(
        r#"
        local got
        socket.dispatch { accept = function(_, id) socket.start(id) end,
                          data = function(id, s) socket.send(id, s) end }
        local lid, _, port = assert(socket.listen("127.0.0.1", 0))
        socket.start(lid)
        local cid = assert(socket.connect("127.0.0.1", port))
        socket.start(cid, { open = function(id) assert(socket.send(id, "ping")) end,
                            data = function(_, s) got = s end })
        local deadline = os.time() + 10
        while got ~= "ping" and os.time() < deadline do socket.poll(50) end
        assert(got == "ping", "echo through this state's engine")
        return cid
        "#,
    )
    .eval::<i64>()
    .unwrap()
}

#[test]
fn each_state_uses_its_own_instance() {
    let a = state_with_module();
    let b = state_with_module();
    let a_client = echo_pair(&a);
    // b has no socket with a's id: its send must fail instead of writing on a's socket.
    let (ok, msg): (bool, String) = b
        .load(format!("return socket.send({a_client}, 'x')"))
        .eval()
        .unwrap();
    assert!(!ok, "send on another state's socket id succeeded");
    assert!(msg.contains("unknown"), "message: {msg}");
    let b_client = echo_pair(&b);
    let info: Table = a.load("return socket.info()").eval().unwrap();
    assert_eq!(info.raw_len(), 3, "a still has its listener and both ends");
    assert!(a_client > 0 && b_client > 0);
    // Dropping one state leaves the other working.
    drop(a);
    let (ok, _): (bool, mlua::Value) = b
        .load(format!("return socket.send({b_client}, 'y')"))
        .eval()
        .unwrap();
    assert!(ok, "b still sends after a is gone");
}
