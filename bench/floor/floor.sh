#!/usr/bin/env bash
# floor.sh: Lua's own instructions per message for the callback echo's handler
# (see floor.c), under callgrind, on each interpreter given (default lua5.4).
#   bench/floor/floor.sh [--small N] [--large N] [--size BYTES] [interpreter...]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SMALL=20000 LARGE=60000 SIZE=64
while [ $# -gt 0 ]; do
    case "$1" in
        --small) SMALL=$2; shift 2 ;;
        --large) LARGE=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        *) break ;;
    esac
done
INTERPRETERS=("${@:-lua5.4}")
mkdir -p "$HERE/../build"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
echo "| interpreter | Ir per message ($SIZE B) |"
echo "|---|---:|"
for lua in "${INTERPRETERS[@]}"; do
    inc=$(pkg-config --cflags "$lua" 2>/dev/null || echo "-I/usr/include/$lua")
    gcc -O2 -shared -fPIC $inc -o "$HERE/../build/floor.so" "$HERE/floor.c"
    ir() {
        valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$1" "$lua" "$HERE/floor.lua" "$1" "$SIZE" \
            2> "$OUT/log.$1"
        grep -E "^(summary|totals):" "$OUT/cg.$1" | head -1 | awk '{print $2}'
    }
    a=$(ir "$SMALL"); b=$(ir "$LARGE")
    echo "| $lua | $(( (b - a) / (LARGE - SMALL) )) |"
done
