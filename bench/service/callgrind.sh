#!/usr/bin/env bash
# User-space instructions per service-to-service message, all threads together
# (valgrind serializes them): bench.lua under callgrind with a small and a large count,
# (Ir(large) - Ir(small)) / (large - small). One-way messages, then call round trips.
#   bench/service/callgrind.sh [lua5.4] [small] [large]
set -euo pipefail
cd "$(dirname "$0")/../.."
LUA=${1:-lua5.4}
SMALL=${2:-20000}
LARGE=${3:-60000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
ir() { # ir MSGS CALLS -> total Ir
  valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" "$LUA" bench/service/bench.lua "$1" "$2" >/dev/null 2>"$OUT/log"
  grep -h "^summary:" "$OUT"/cg.* | awk '{ s += $2 } END { print s }'
  rm -f "$OUT"/cg.*
}
a=$(ir "$SMALL" 0); b=$(ir "$LARGE" 0)
echo "oneway: Ir($SMALL)=$a Ir($LARGE)=$b -> $(( (b - a) / (LARGE - SMALL) )) instructions/message"
a=$(ir 0 "$SMALL"); b=$(ir 0 "$LARGE")
echo "call: Ir($SMALL)=$a Ir($LARGE)=$b -> $(( (b - a) / (LARGE - SMALL) )) instructions/round trip"
