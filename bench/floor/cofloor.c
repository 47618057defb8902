/* cofloor.c: the coroutine echo's floor -- what Lua itself costs to hand one received
 * message to a coroutine blocked in a read and take one reply back, with no event
 * loop, no sockets and no engine (the coroutine twin of floor.c).
 *
 * cofloor.run(n, body, size) creates one coroutine running body(id) and resumes it n
 * times from C, each time with a fresh `size`-byte Lua string (as a socket binding
 * must create for each read): inside, `read(id)` is `coroutine.yield`, so the read
 * returns that string, and `send(id, s)` reads its two arguments the way a send
 * function must and returns true. One lua_resume + one yield per message is the least
 * any coroutine socket layer can do.
 *
 * cofloor.str(size) returns a fresh string (a counter in its first bytes), for the
 * variant where a scheduler written in Lua resumes the coroutine (cofloor.lua "lua"). */
#include <lua.h>
#include <lauxlib.h>
#include <string.h>

static char buf[65536];
static lua_Integer counter;

static int cofloor_send(lua_State *L) {
  lua_Integer id = luaL_checkinteger(L, 1);
  size_t len;
  const char *p = luaL_checklstring(L, 2, &len);
  (void)id; (void)p;
  lua_pushboolean(L, 1);
  return 1;
}

static void fresh(lua_State *L, size_t size) {
  counter++;
  memcpy(buf, &counter, sizeof counter < size ? sizeof counter : size);
  lua_pushlstring(L, buf, size);
}

static int cofloor_str(lua_State *L) {
  size_t size = (size_t)luaL_optinteger(L, 1, 64);
  if (size > sizeof buf) size = sizeof buf;
  fresh(L, size);
  return 1;
}

static int resume(lua_State *co, lua_State *from, int nargs) {
#if LUA_VERSION_NUM >= 504
  int nres;
  int r = lua_resume(co, from, nargs, &nres);
  lua_pop(co, nres);
  return r;
#elif LUA_VERSION_NUM == 503
  int r = lua_resume(co, from, nargs);
  lua_settop(co, 0);
  return r;
#else
  (void)from;
  int r = lua_resume(co, nargs);
  lua_settop(co, 0);
  return r;
#endif
}

static int cofloor_run(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  size_t size = (size_t)luaL_optinteger(L, 3, 64);
  if (size > sizeof buf) size = sizeof buf;
  memset(buf, 'x', size);
  lua_State *co = lua_newthread(L); /* kept on L's stack: not collected */
  lua_pushvalue(L, 2);
  lua_xmove(L, co, 1);
  lua_pushinteger(co, 7); /* body(id) */
  if (resume(co, L, 1) != LUA_YIELD) return luaL_error(L, "body did not wait");
  for (lua_Integer i = 1; i <= n; i++) {
    fresh(co, size);
    if (resume(co, L, 1) != LUA_YIELD) return luaL_error(L, "body ended");
  }
  return 0;
}

int luaopen_cofloor(lua_State *L) {
  lua_newtable(L);
  lua_pushcfunction(L, cofloor_run);
  lua_setfield(L, -2, "run");
  lua_pushcfunction(L, cofloor_send);
  lua_setfield(L, -2, "send");
  lua_pushcfunction(L, cofloor_str);
  lua_setfield(L, -2, "str");
  return 1;
}
