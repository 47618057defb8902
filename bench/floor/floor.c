/* floor.c: what any Lua binding pays to hand one received message to a Lua callback
 * and take one reply back, with no event loop, no sockets and no engine at all.
 *
 * floor.run(n, handler, size) calls handler(i, s) n times, where s is a fresh
 * `size`-byte Lua string each time (as a socket binding must create for each read),
 * under one protected call; floor.send(id, s) reads its two arguments the way a send
 * function must (integer id, string bytes) and returns true. Driven by floor.sh under
 * callgrind, (Ir(large n) - Ir(small n)) / (difference) is the instructions per message
 * that belong to Lua itself: string creation, garbage collection, the VM running the
 * handler and the two calls. A socket module cannot go below this figure on the same
 * interpreter without changing what the callback receives. */
#include <lua.h>
#include <lauxlib.h>
#include <string.h>

static int floor_send(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  (void)id; (void)p;
  lua_pushboolean(L, 1);
  return 1;
}

static int floor_run(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  size_t size = (size_t)luaL_optinteger(L, 3, 64);
  char buf[65536];
  if (size > sizeof buf) size = sizeof buf;
  memset(buf, 'x', size);
  for (lua_Integer i = 1; i <= n; i++) {
    /* Vary the bytes so each string is new, as received data would be. */
    memcpy(buf, &i, sizeof i < size ? sizeof i : size);
    lua_pushvalue(L, 2);
    lua_pushinteger(L, i);
    lua_pushlstring(L, buf, size);
    lua_call(L, 2, 0);
  }
  return 0;
}

int luaopen_floor(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, floor_run);
  lua_setfield(L, -2, "run");
  lua_pushcfunction(L, floor_send);
  lua_setfield(L, -2, "send");
  return 1;
}
