rockspec_format = "3.0"
package = "skysocket"
version = "dev-1"
source = {
   url = "git+file:///dev/null",
}
description = {
   summary = "Skynet's socket engine (epoll/kqueue/poll, Rust) as a Lua module",
   detailed = [[
skysocket brings Skynet's socket_server to any Lua 5.1-5.4 or LuaJIT program:
TCP, UDP and Unix sockets with a callback dispatcher and a Skynet-style coroutine layer,
TLS (rustls), HTTP/1.1 and WebSocket, a Redis client, and a Skynet compatibility shim.
Building needs a Rust toolchain (cargo).
]],
   license = "MIT",
}
dependencies = {
   "lua >= 5.1",
}
build = {
   type = "command",
   -- luarocks blanks unknown $(VARS), so the Lua flavour is asked from the interpreter.
   build_command = [[
feat=`"$(LUA)" -e 'io.write(jit and "luajit" or ("lua" .. _VERSION:sub(5):gsub("%.", "")))'` &&
echo "skysocket: building for $feat" &&
cargo build --offline --release --no-default-features --features "$feat,module,tls" ||
cargo build --release --no-default-features --features "$feat,module,tls"
]],
   install_command = [[
mkdir -p "$(LIBDIR)" "$(LUADIR)/skysocket" &&
cp target/release/libskysocket.so "$(LIBDIR)/skysocket.$(LIB_EXTENSION)" &&
for f in lua/skysocket/*.lua; do [ -e "$f" ] && cp "$f" "$(LUADIR)/skysocket/"; done; true
]],
}
