/* RSS growth per bare Lua state with the standard libraries (luaL_newstate +
 * luaL_openlibs), the reference for an idle service's memory.
 *   cc -O2 bare_states.c -I/usr/include/lua5.4 -llua5.4 && ./a.out 2000
 *   cc -O2 bare_states.c -I/usr/include/luajit-2.1 -lluajit-5.1 && ./a.out 2000 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long rss_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) v = atol(line + 6);
  if (f) fclose(f);
  return v;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2000;
  lua_State **s = calloc(n, sizeof *s);
  for (int i = 0; i < 50; i++) { lua_State *L = luaL_newstate(); luaL_openlibs(L); lua_close(L); }
  long before = rss_kib();
  long heap = 0;
  for (int i = 0; i < n; i++) {
    s[i] = luaL_newstate();
    luaL_openlibs(s[i]);
    lua_gc(s[i], LUA_GCCOLLECT, 0);
    heap += lua_gc(s[i], LUA_GCCOUNT, 0);
  }
  long after = rss_kib();
  printf("bare luaL_newstate + openlibs: %d states: RSS +%ld KiB = %.0f bytes/state (Lua heap %.0f bytes)\n",
         n, after - before, (after - before) * 1024.0 / n, heap * 1024.0 / n);
  for (int i = 0; i < n; i++) lua_close(s[i]);
  return 0;
}
