#!/usr/bin/env bash
# Runs each example server on a free port and talks to it. Usage: tests/examples.sh lua5.4
# LUA_CPATH/LUA_PATH must point at the built module.
set -u
cd "$(dirname "$0")/.."
LUA=${1:-lua5.4}
fail=0
pass=0
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done' EXIT

# Start `lua example 0` and wait for its line "... listening on HOST:PORT"; sets $port.
# (Not run in a subshell, so the EXIT trap can kill every server started.)
start_server() {
  local out=$1; shift
  "$LUA" "$@" 0 >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    grep -q "listening on" "$out" && break
    sleep 0.05
  done
  port=$(grep -o 'listening on [^ ]*:[0-9]*' "$out" | head -1 | sed 's/.*://')
}

check() {
  local name=$1; shift
  if "$@"; then echo "ok     $name"; pass=$((pass + 1)); else echo "FAIL   $name"; fail=$((fail + 1)); fi
}

tmp=$(mktemp -d)
start_server "$tmp/echo.out" examples/echo.lua
check "echo.lua serves client.lua" timeout 20 "$LUA" examples/client.lua "$port" one two "three four"
out=$(timeout 20 "$LUA" examples/client.lua "$port" "zero$(printf '\t')tab")
check "client prints the echo" test "$out" = "echo: zero$(printf '\t')tab"

# TLS: a CA and a localhost certificate minted here; the client verifies the server.
if command -v openssl >/dev/null && "$LUA" -e 'os.exit(require("skysocket").tls and 0 or 1)'; then
  ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  (cd "$tmp" &&
    openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj '/CN=examples CA' &&
    openssl req $ec -keyout server.key -out server.csr -subj '/CN=localhost' &&
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >leaf.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile leaf.ext -out server.pem) >"$tmp/mint.log" 2>&1
  start_server "$tmp/tls_echo.out" examples/tls_echo.lua "$tmp/server.pem" "$tmp/server.key"
  out=$(timeout 20 "$LUA" examples/tls_client.lua "$tmp/ca.pem" "$port" alpha beta)
  check "tls_echo.lua serves tls_client.lua" test "$(echo "$out" | grep '^echo:' | tr '\n' ' ')" = "echo: alpha echo: beta "
  check "tls_client reports the session" grep -q '^tls: TLSv1.3 TLS13_.* alpn=echo peer=CN=localhost' <<<"$out"
  # A client trusting another CA must fail (verification is on by default).
  check "tls_client rejects an unknown CA" bash -c "! timeout 20 '$LUA' examples/tls_client.lua '$tmp/server.pem' '$port' x 2>/dev/null"
fi

for ex in echo_co; do
  [ -f "examples/$ex.lua" ] || continue
  start_server "$tmp/$ex.out" "examples/$ex.lua"
  check "$ex.lua serves client.lua" timeout 20 "$LUA" examples/client.lua "$port" alpha beta
done

# Long churn (issue #11): 100,000 sequential connections to both echo servers. Slot tags
# start at 2^15 - 10,000, so socket ids cross 2^31 (where LuaJIT once aborted: an id
# used as a C-int table index) after about 10,000 reuses of a slot.
# Both churns run at once (each client is latency-bound: two use both cores).
CHURN=${SKYSOCKET_CHURN:-100000}
churn_pids=()
for ex in echo echo_co; do
  start_server "$tmp/churn-$ex.out" -e 'require("skysocket").configure { first_tag = 2^15 - 10000 }' "examples/$ex.lua"
  timeout 240 python3 tests/tools/churn.py "$port" "$CHURN" 200 >"$tmp/churn-$ex.client" 2>&1 &
  churn_pids+=($!)
done
i=0
for ex in echo echo_co; do
  check "$ex.lua survives $CHURN sequential connections" wait "${churn_pids[$i]}"
  cat "$tmp/churn-$ex.client"
  grep -q "panicked\|fatal" "$tmp/churn-$ex.out" && { echo "FAIL   $ex.lua log shows a panic"; cat "$tmp/churn-$ex.out"; fail=$((fail + 1)); }
  i=$((i + 1))
done

for t in tests/examples/*.sh; do
  [ -f "$t" ] || continue
  check "$(basename "$t")" timeout 60 bash "$t" "$LUA"
done

# Services: a key/value service called by client services on the worker pool.
out=$(timeout 60 "$LUA" examples/kv_service.lua 3 300 2>&1)
check "kv_service.lua: clients store and read back through the kv service" \
  test "$(echo "$out" | tail -1)" = "ok"
echo "$out" | grep -q "900 keys stored, total=900" || { echo "FAIL   kv_service.lua output"; echo "$out"; fail=$((fail + 1)); }

rm -rf "$tmp"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
